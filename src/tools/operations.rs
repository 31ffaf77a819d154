//! `caravan backup`, `caravan restore` and `caravan verify`: the operator's
//! commands around the OperationsService and the backup directory
//! (`ops::backup`). Each prints what it did on stdout and exits non-zero,
//! with one line on stderr, when it could not.
//!
//! Depends on the generated client, `ops` and the store facade.

use super::client::{CliError, ConnectArgs};
use crate::ops::backup::{self, Base};
use crate::ops::projection::ViewsOnly;
use crate::proto::v1 as pb;
use crate::proto::v1::operations_service_client::OperationsServiceClient;
use crate::storage::{self, Store, StoreConfig};
use crate::views::Views;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `caravan backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// A new directory for the backup (missing or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// An earlier backup: take only the events after its last one (an
    /// incremental backup that names it as its base).
    #[arg(long)]
    pub since: Option<PathBuf>,
}

/// `caravan restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup (the last of a chain of incremental backups).
    #[arg(long)]
    pub from: PathBuf,
    /// A new directory for the store (missing or empty).
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// `caravan verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A store no server has open, or a backup directory (one with a
    /// manifest.json).
    #[arg(long, conflicts_with = "server")]
    pub data_dir: Option<PathBuf>,
    /// Check a running server instead (the Verify RPC, admin scope).
    #[arg(long)]
    pub server: Option<String>,
    /// Where the offline check copies the store and rebuilds its views
    /// (default: the system's temporary directory); needs about twice the
    /// store's size.
    #[arg(long, env = "CARAVAN_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Seconds to wait for the server (--server).
    #[arg(long, env = "CARAVAN_TIMEOUT_SECS", default_value_t = 600)]
    pub timeout_secs: u64,
    /// Bearer token of an admin identity (--server); prefer CARAVAN_TOKEN.
    #[arg(long, env = "CARAVAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate(s) of the authority of the server's certificate.
    #[arg(long, env = "CARAVAN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, env = "CARAVAN_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "CARAVAN_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

pub async fn backup(args: BackupArgs) -> Result<u8, CliError> {
    let (after, since) = match &args.since {
        Some(dir) => {
            let (m, sum) = backup::read_manifest(dir)?;
            let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            (m.last_sequence, Some((dir, m.last_sequence, sum)))
        }
        None => (0, None),
    };
    // Only a directory this command creates (or found empty) is removed
    // again when the backup fails: nothing half-written is left to mistake
    // for a backup, and the command can simply be run again.
    let fresh =
        !args.out.exists() || std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_none());
    let result = take_backup(&args, after, since).await;
    if result.is_err() && fresh {
        let _ = std::fs::remove_dir_all(&args.out);
    }
    result
}

async fn take_backup(
    args: &BackupArgs,
    after: u64,
    since: Option<(PathBuf, u64, String)>,
) -> Result<u8, CliError> {
    let began = std::time::Instant::now();
    let mut writer = backup::Writer::create(&args.out, after)?;
    let out = std::fs::canonicalize(&args.out)?;
    let base = since.map(|(dir, last_sequence, manifest_sha256)| Base {
        dir: backup::relative(&out, &dir),
        last_sequence,
        manifest_sha256,
    });
    let connection = args.connect.connect().await?;
    let mut client =
        OperationsServiceClient::new(connection).max_decoding_message_size(16 * 1024 * 1024);
    let mut stream = client
        .backup(pb::BackupRequest {
            after_sequence: after,
        })
        .await
        .map_err(|s| format!("backup refused: {}", s.message()))?
        .into_inner();
    let mut header = None;
    while let Some(message) = stream
        .message()
        .await
        .map_err(|s| format!("backup interrupted: {}", s.message()))?
    {
        match message.part {
            Some(pb::backup_response::Part::Header(h)) => header = Some(h),
            Some(pb::backup_response::Part::Events(e)) => {
                writer.push(e.first_sequence, &e.stored_events)?
            }
            None => {}
        }
    }
    let header = header.ok_or("the server sent no backup header")?;
    let manifest = writer.finish(
        header.snapshot_sequence,
        header.store_format,
        &args.connect.server,
        base,
    )?;
    println!(
        "backup of {}: events {}..{} ({} events, {} files) in {} ({:.1} s){}",
        args.connect.server,
        manifest.first_sequence,
        manifest.last_sequence,
        manifest.events,
        manifest.files.len(),
        args.out.display(),
        began.elapsed().as_secs_f64(),
        match &manifest.base {
            Some(b) => format!(", on top of {}", b.dir.display()),
            None => String::new(),
        }
    );
    Ok(0)
}

pub async fn restore(args: RestoreArgs) -> Result<u8, CliError> {
    let began = std::time::Instant::now();
    let from = args.from.clone();
    let checked = tokio::task::spawn_blocking(move || backup::verify(&from)).await??;
    let chain = backup::chain(&args.from)?;
    let dir = args.data_dir.clone();
    let last = tokio::task::spawn_blocking(move || -> Result<u64, CliError> {
        // Records flow from a reader thread to the import through a small
        // bounded channel: memory stays a few records whatever the size.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>, crate::error::Error>>(1024);
        std::thread::scope(|s| {
            s.spawn(move || {
                for (at, manifest) in &chain {
                    for seg in &manifest.files {
                        let sent = backup::read_segment(at, seg, &mut |bytes| {
                            tx.send(Ok(bytes.to_vec())).map_err(|_| {
                                crate::error::Error::Internal("the import stopped".into())
                            })
                        });
                        if let Err(e) = sent {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            });
            let mut events = rx.into_iter();
            Ok(storage::import(
                &dir,
                &mut events,
                storage::DEFAULT_CACHE_BYTES,
            )?)
        })
    })
    .await??;
    if last != checked.last_sequence {
        return Err(format!(
            "restored {last} events, the backup holds {}",
            checked.last_sequence
        )
        .into());
    }
    println!(
        "restored events 1..{last} from {} ({} files checked) into {} ({:.1} s); \
         the views are built when a server first opens it",
        args.from.display(),
        checked.files,
        args.data_dir.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(0)
}

fn print_findings(findings: &[String], checked: &[String], at: u64) -> u8 {
    for line in checked {
        println!("checked {line}");
    }
    if findings.is_empty() {
        println!("verify: no problems found at sequence {at}");
        0
    } else {
        for f in findings {
            println!("PROBLEM {f}");
        }
        println!(
            "verify: {} problem(s) found at sequence {at}",
            findings.len()
        );
        1
    }
}

pub async fn verify(args: VerifyArgs) -> Result<u8, CliError> {
    if let Some(server) = &args.server {
        let connect = ConnectArgs {
            server: server.clone(),
            timeout_secs: args.timeout_secs,
            token: args.token.clone(),
            ca_cert: args.ca_cert.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
        };
        let mut client = OperationsServiceClient::new(connect.connect().await?);
        let answer = client
            .verify(pb::VerifyRequest {})
            .await
            .map_err(|s| format!("verify refused: {}", s.message()))?
            .into_inner();
        let findings: Vec<String> = answer
            .findings
            .iter()
            .map(|f| {
                storage::Finding::describe(
                    &f.area,
                    f.first_sequence,
                    f.last_sequence,
                    &f.description,
                )
            })
            .collect();
        return Ok(print_findings(&findings, &answer.checked, answer.sequence));
    }
    let dir = args
        .data_dir
        .clone()
        .ok_or("verify needs --data-dir (a store or a backup) or --server")?;
    if dir.join(backup::MANIFEST).exists() {
        let d = dir.clone();
        return match tokio::task::spawn_blocking(move || backup::verify(&d)).await? {
            Ok(c) => {
                println!(
                    "verify: the backup {} is whole: events 1..{} in {} files, every checksum matches",
                    dir.display(),
                    c.last_sequence,
                    c.files
                );
                Ok(0)
            }
            Err(e) => {
                println!("PROBLEM backup: {e}");
                println!("verify: the backup {} is damaged", dir.display());
                Ok(1)
            }
        };
    }
    let d = dir.clone();
    let report = tokio::task::spawn_blocking(move || storage::check_offline(&d)).await??;
    let mut findings: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    let mut checked = report.checked.clone();
    let mut at = report.last_sequence;
    if report.findings.iter().any(|f| f.area == "log") {
        checked.push("views: not compared, the log is damaged".into());
    } else {
        let scratch_root = args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
        let scratch = tempfile::Builder::new()
            .prefix("caravan-verify-")
            .tempdir_in(&scratch_root)
            .map_err(|e| format!("a scratch directory in {}: {e}", scratch_root.display()))?;
        match views_of_a_copy(&dir, scratch.path()).await {
            Ok((more, line, snapshot)) => {
                findings.extend(more.iter().map(ToString::to_string));
                checked.push(line);
                at = snapshot;
            }
            Err(e) => findings.push(format!(
                "views: the store does not open as a server would open it: {e}"
            )),
        }
    }
    Ok(print_findings(&findings, &checked, at))
}

/// Copies the store in `dir` into `scratch`, opens the copy as a server
/// would (views restored from its checkpoint and the log after it), and
/// compares its views with views rebuilt from its log.
async fn views_of_a_copy(
    dir: &Path,
    scratch: &Path,
) -> Result<(Vec<storage::Finding>, String, u64), CliError> {
    let copy = scratch.join("copy");
    copy_dir(dir, &copy)?;
    let views = Views::new();
    let projection = Arc::new(ViewsOnly::new(Arc::clone(&views)));
    let c = copy.clone();
    let store = tokio::task::spawn_blocking(move || {
        let config = StoreConfig {
            min_free_disk_bytes: 0,
            ..StoreConfig::default()
        };
        Store::open(&c, config, projection)
    })
    .await??;
    let handle = store.handle();
    let snapshot = handle.last_sequence();
    let result = crate::ops::verify::views_against_log(&handle, &views, snapshot, scratch).await;
    drop(handle);
    store.close().await?;
    let (findings, line) = result?;
    Ok((findings, line, snapshot))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
