//! The command line: `caravan serve` and its settings, each also read from a
//! `CARAVAN_*` environment variable. Depends on the server and clap; holds no
//! logic of its own beyond turning flags into a `ServerConfig`.

use crate::auth::quota::{self, Quotas};
use crate::cluster;
use crate::grpc::defaults;
use crate::grpc::server::ServerConfig;
use crate::grpc::{IngestLimits, QueryLimits, Reflection, SubscribeLimits, TlsFiles};
use crate::storage::{self, StoreConfig};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "caravan",
    version,
    about = "Trade and economic-cooperation data over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the China–Central Asia demo: a temporary store, the seed data
    /// loaded through gRPC, and the founding questions answered as tables.
    Demo,
    /// Run the gRPC service.
    Serve(ServeArgs),
    /// Measure ingest throughput and latency on a temporary store.
    Bench(crate::tools::bench::BenchArgs),
    /// Load Comtrade CSV or JSON Lines files into a running service.
    Ingest(crate::tools::client::ingest::IngestArgs),
    /// Ask a running service: country, sector, records, agreements,
    /// aggregate, mirror.
    Query {
        #[command(subcommand)]
        what: crate::tools::client::query::QueryCommand,
    },
    /// Print events from a running service as they arrive.
    Subscribe(crate::tools::client::subscribe::SubscribeArgs),
    /// Write a synthetic dataset (JSON Lines or Comtrade CSV).
    Gen(crate::tools::gen::GenArgs),
    /// Check the configuration of `caravan serve`.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Take an online backup of a running service (admin scope).
    Backup(crate::tools::operations::BackupArgs),
    /// Build a new store from a backup, every checksum checked first.
    Restore(crate::tools::operations::RestoreArgs),
    /// Check a store (offline), a backup, or a running service.
    Verify(crate::tools::operations::VerifyArgs),
    /// Credentials for the auth file: a new token, a token's hash, a
    /// certificate's subject.
    Auth {
        #[command(subcommand)]
        what: crate::tools::auth::AuthCommand,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `caravan config`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective settings of `caravan serve` with these flags,
    /// environment and --config file (where each comes from), and exit
    /// non-zero on an unknown key or a bad value.
    Check(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A TOML file of settings: the long flags without `--` as keys. A flag
    /// or its environment variable overrides the file.
    #[arg(long, env = "CARAVAN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CARAVAN_LISTEN", default_value = defaults::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Directory of the store (created if missing).
    #[arg(long, env = "CARAVAN_DATA_DIR", default_value = "./caravan-data")]
    pub data_dir: PathBuf,
    /// Log format on standard error; the level comes from RUST_LOG (default info).
    #[arg(long, env = "CARAVAN_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds open streams get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "CARAVAN_DRAIN_DEADLINE_SECS", default_value_t = defaults::DEFAULT_DRAIN_DEADLINE.as_secs())]
    pub drain_deadline_secs: u64,
    /// sled page cache, in MiB.
    #[arg(long, env = "CARAVAN_CACHE_MIB", default_value_t = storage::DEFAULT_CACHE_BYTES / (1024 * 1024))]
    pub cache_mib: u64,
    /// Append requests that may wait for the writer.
    #[arg(long, env = "CARAVAN_WRITER_QUEUE", default_value_t = storage::DEFAULT_WRITER_QUEUE)]
    pub writer_queue: usize,
    /// Most events committed by one group commit (one fsync).
    #[arg(long, env = "CARAVAN_MAX_GROUP_EVENTS", default_value_t = storage::DEFAULT_MAX_GROUP_EVENTS)]
    pub max_group_events: usize,
    /// Revisions kept in memory before a checkpoint folds them into the
    /// pages and rollups in the store (the publisher waits at twice this).
    #[arg(long, env = "CARAVAN_CHECKPOINT_REVISIONS", default_value_t = crate::views::DEFAULT_CHECKPOINT_REVISIONS)]
    pub checkpoint_revisions: usize,
    /// Delete the views' checkpoint at startup and rebuild the views from the
    /// whole log.
    #[arg(long)]
    pub rebuild_views: bool,
    /// Seconds after which waiting revisions are checkpointed however few.
    #[arg(long, env = "CARAVAN_CHECKPOINT_SECS", default_value_t = crate::views::DEFAULT_CHECKPOINT_INTERVAL.as_secs())]
    pub checkpoint_secs: u64,
    /// Most events in one Append request.
    #[arg(long, env = "CARAVAN_MAX_BATCH_EVENTS", default_value_t = defaults::DEFAULT_MAX_BATCH_EVENTS)]
    pub max_batch_events: usize,
    /// Most unanswered events per AppendStream.
    #[arg(long, env = "CARAVAN_STREAM_WINDOW", default_value_t = defaults::DEFAULT_STREAM_WINDOW)]
    pub stream_window: usize,
    /// Most ids or sequences per LookupEvents.
    #[arg(long, env = "CARAVAN_MAX_LOOKUP", default_value_t = defaults::DEFAULT_MAX_LOOKUP)]
    pub max_lookup: usize,
    /// Largest gRPC message, in bytes.
    #[arg(long, env = "CARAVAN_MAX_MESSAGE_BYTES", default_value_t = defaults::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Bytes of request messages all requests together may hold while they
    /// are read and handled; a request waits for room.
    #[arg(long, env = "CARAVAN_MAX_DECODING_BYTES", default_value_t = defaults::DEFAULT_MAX_DECODING_BYTES)]
    pub max_decoding_bytes: usize,
    /// Seconds a request with one message may take to arrive whole.
    #[arg(long, env = "CARAVAN_REQUEST_READ_TIMEOUT_SECS", default_value_t = defaults::DEFAULT_REQUEST_READ_TIMEOUT.as_secs())]
    pub request_read_timeout_secs: u64,
    /// Connections open at once; one beyond is closed when accepted.
    #[arg(long, env = "CARAVAN_MAX_CONNECTIONS", default_value_t = defaults::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a new connection may take to begin HTTP/2 before it is closed.
    #[arg(long, env = "CARAVAN_HANDSHAKE_TIMEOUT_SECS", default_value_t = defaults::DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    pub handshake_timeout_secs: u64,
    /// Concurrent calls per connection.
    #[arg(long, env = "CARAVAN_MAX_CONCURRENT_STREAMS", default_value_t = defaults::DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Query streams running at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CARAVAN_MAX_QUERY_STREAMS", default_value_t = defaults::DEFAULT_MAX_QUERY_STREAMS)]
    pub max_query_streams: usize,
    /// Most groups one Aggregate call may build.
    #[arg(long, env = "CARAVAN_MAX_GROUPS", default_value_t = defaults::DEFAULT_MAX_GROUPS)]
    pub max_groups: usize,
    /// Messages buffered per query stream before its producer waits for the client.
    #[arg(long, env = "CARAVAN_QUERY_STREAM_BUFFER", default_value_t = defaults::DEFAULT_STREAM_BUFFER)]
    pub query_stream_buffer: usize,
    /// Encoded bytes the buffered messages of one query stream may hold together.
    #[arg(long, env = "CARAVAN_QUERY_STREAM_BUFFER_BYTES", default_value_t = defaults::DEFAULT_STREAM_BUFFER_BYTES)]
    pub query_stream_buffer_bytes: usize,
    /// Seconds a query stream or subscription may go without its client
    /// accepting a message before it is ended and its slot released.
    #[arg(long, env = "CARAVAN_STALL_TIMEOUT_SECS", default_value_t = defaults::DEFAULT_STALL_TIMEOUT.as_secs())]
    pub stall_timeout_secs: u64,
    /// Subscriptions running at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CARAVAN_MAX_SUBSCRIPTIONS", default_value_t = defaults::DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
    /// Messages buffered per subscription before it waits for its client.
    #[arg(long, env = "CARAVAN_SUBSCRIPTION_BUFFER", default_value_t = defaults::DEFAULT_SUBSCRIPTION_BUFFER)]
    pub subscription_buffer: usize,
    /// Recent events kept in memory for live subscribers.
    #[arg(long, env = "CARAVAN_RECENT_EVENTS", default_value_t = defaults::DEFAULT_RECENT_EVENTS)]
    pub recent_events: usize,
    /// Seconds between HTTP/2 keepalive pings; a peer silent for this long
    /// again is disconnected.
    #[arg(long, env = "CARAVAN_KEEPALIVE_SECS", default_value_t = 20)]
    pub keepalive_secs: u64,
    /// PEM certificate chain of the server (TLS); with --tls-key. Re-read on
    /// SIGHUP.
    #[arg(long, env = "CARAVAN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Re-read on SIGHUP.
    #[arg(long, env = "CARAVAN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate authorities whose client certificates are required
    /// (mutual TLS). Re-read on SIGHUP.
    #[arg(long, env = "CARAVAN_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The identities (TOML): tokens, certificate subjects, scopes, feeds,
    /// quotas. Without it every caller may do everything. Re-read on SIGHUP.
    #[arg(long, env = "CARAVAN_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Who may use server reflection: open (anyone), admin (the admin
    /// scope) or off. Default: open on a loopback address, admin elsewhere.
    #[arg(long, env = "CARAVAN_REFLECTION", value_enum)]
    pub reflection: Option<ReflectionArg>,
    /// Query streams one identity may run at once (the auth file may set
    /// its own).
    #[arg(long, env = "CARAVAN_QUOTA_QUERY_STREAMS", default_value_t = quota::DEFAULT_QUERY_STREAMS)]
    pub quota_query_streams: usize,
    /// Subscriptions one identity may hold at once.
    #[arg(long, env = "CARAVAN_QUOTA_SUBSCRIPTIONS", default_value_t = quota::DEFAULT_SUBSCRIPTIONS)]
    pub quota_subscriptions: usize,
    /// Events one identity may append per second (a second's worth at once).
    #[arg(long, env = "CARAVAN_QUOTA_APPEND_EVENTS_PER_SEC", default_value_t = quota::DEFAULT_APPEND_EVENTS_PER_SEC)]
    pub quota_append_events_per_sec: u64,
    /// Bytes of append requests one identity may send per second.
    #[arg(long, env = "CARAVAN_QUOTA_APPEND_BYTES_PER_SEC", default_value_t = quota::DEFAULT_APPEND_BYTES_PER_SEC)]
    pub quota_append_bytes_per_sec: u64,
    /// Address of the Prometheus `/metrics` endpoint (HTTP; off when unset).
    /// Beyond loopback it needs TLS and an auth file (the `metrics` scope),
    /// like the gRPC port, unless --insecure.
    #[arg(long, env = "CARAVAN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Appends are refused while the store's file system has less free
    /// space than this, in MiB (0: no check); they resume once space is freed.
    #[arg(long, env = "CARAVAN_MIN_FREE_DISK_MIB", default_value_t = storage::DEFAULT_MIN_FREE_DISK_BYTES / (1024 * 1024))]
    pub min_free_disk_mib: u64,
    /// Where the Verify RPC builds its scratch store (default: the system's
    /// temporary directory).
    #[arg(long, env = "CARAVAN_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Serve an address beyond loopback without TLS or without an auth
    /// file (refused without this); with --jetstream, also reach NATS
    /// servers beyond loopback without TLS.
    #[arg(long, env = "CARAVAN_INSECURE")]
    pub insecure: bool,
    /// Cluster mode: NATS servers (comma-separated `nats://host:port`) whose
    /// JetStream stream is the replicated log; this node is one replica.
    /// Without it, the embedded single-node store.
    #[arg(long, env = "CARAVAN_JETSTREAM", value_delimiter = ',')]
    pub jetstream: Vec<String>,
    /// The stream (created if missing; subject `caravan.<stream>`).
    #[arg(long, env = "CARAVAN_JETSTREAM_STREAM", default_value = "caravan")]
    pub jetstream_stream: String,
    /// Replicas of a stream this node creates.
    #[arg(long, env = "CARAVAN_JETSTREAM_REPLICAS", default_value_t = cluster::DEFAULT_REPLICAS)]
    pub jetstream_replicas: usize,
    /// JetStream's own de-duplication window of a stream this node creates,
    /// in seconds (caravan's idempotency does not depend on it).
    #[arg(
        long,
        env = "CARAVAN_JETSTREAM_DUPLICATE_WINDOW_SECS",
        default_value_t = 120
    )]
    pub jetstream_duplicate_window_secs: u64,
    /// The largest stream message this node publishes, in bytes (events are
    /// packed into messages up to it); default and upper bound: the NATS
    /// servers' `max_payload`.
    #[arg(long, env = "CARAVAN_JETSTREAM_MAX_MESSAGE_BYTES")]
    pub jetstream_max_message_bytes: Option<usize>,
    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, env = "CARAVAN_JETSTREAM_CREDS")]
    pub jetstream_creds: Option<PathBuf>,
    /// CA certificate(s) of the NATS servers (TLS is then required).
    #[arg(long, env = "CARAVAN_JETSTREAM_CA_CERT")]
    pub jetstream_ca_cert: Option<PathBuf>,
    /// This node's client certificate for NATS (with --jetstream-client-key).
    #[arg(
        long,
        env = "CARAVAN_JETSTREAM_CLIENT_CERT",
        requires = "jetstream_client_key"
    )]
    pub jetstream_client_cert: Option<PathBuf>,
    /// This node's client key for NATS.
    #[arg(
        long,
        env = "CARAVAN_JETSTREAM_CLIENT_KEY",
        requires = "jetstream_client_cert"
    )]
    pub jetstream_client_key: Option<PathBuf>,
}

/// `--reflection`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReflectionArg {
    Open,
    Admin,
    Off,
}

impl ServeArgs {
    pub fn config(&self) -> ServerConfig {
        let mut c = ServerConfig::new(self.listen, self.data_dir.clone());
        c.store = StoreConfig {
            cache_capacity_bytes: self.cache_mib * 1024 * 1024,
            writer_queue: self.writer_queue,
            max_group_events: self.max_group_events,
            rebuild_views: self.rebuild_views,
            min_free_disk_bytes: self.min_free_disk_mib.saturating_mul(1024 * 1024),
            observer: None,
        };
        c.metrics_listen = self.metrics_listen;
        c.cluster = (!self.jetstream.is_empty()).then(|| cluster::ClusterConfig {
            servers: self.jetstream.clone(),
            stream: self.jetstream_stream.clone(),
            replicas: self.jetstream_replicas.max(1),
            duplicate_window: Duration::from_secs(self.jetstream_duplicate_window_secs.max(1)),
            max_message_bytes: self.jetstream_max_message_bytes,
            credentials: self.jetstream_creds.clone(),
            ca_cert: self.jetstream_ca_cert.clone(),
            client_cert: self
                .jetstream_client_cert
                .clone()
                .zip(self.jetstream_client_key.clone()),
            node: self.listen.to_string(),
            insecure: self.insecure,
        });
        c.scratch_dir = self.scratch_dir.clone();
        c.ingest = IngestLimits {
            max_batch_events: self.max_batch_events,
            stream_window: self.stream_window,
            max_lookup: self.max_lookup,
        };
        c.drain_deadline = Duration::from_secs(self.drain_deadline_secs);
        c.checkpoints = crate::views::CheckpointSettings {
            every_revisions: self.checkpoint_revisions.max(1),
            interval: Duration::from_secs(self.checkpoint_secs.max(1)),
        };
        c.query = QueryLimits {
            max_streams: self.max_query_streams,
            max_groups: self.max_groups,
            stream_buffer: self.query_stream_buffer,
            stream_buffer_bytes: self.query_stream_buffer_bytes,
            stall_timeout: Duration::from_secs(self.stall_timeout_secs.max(1)),
        };
        c.subscribe = SubscribeLimits {
            max_subscriptions: self.max_subscriptions,
            buffer: self.subscription_buffer,
            recent_events: self.recent_events,
            stall_timeout: Duration::from_secs(self.stall_timeout_secs.max(1)),
            ..SubscribeLimits::default()
        };
        c.max_message_bytes = self.max_message_bytes;
        c.max_decoding_bytes = self.max_decoding_bytes;
        c.max_connections = self.max_connections;
        c.handshake_timeout = Duration::from_secs(self.handshake_timeout_secs.max(1));
        c.insecure = self.insecure;
        c.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        c.auth_file = self.auth_file.clone();
        c.reflection = self.reflection.map(|r| match r {
            ReflectionArg::Open => Reflection::Open,
            ReflectionArg::Admin => Reflection::Admin,
            ReflectionArg::Off => Reflection::Off,
        });
        c.quotas = Quotas {
            query_streams: self.quota_query_streams,
            subscriptions: self.quota_subscriptions,
            append_events_per_sec: self.quota_append_events_per_sec,
            append_bytes_per_sec: self.quota_append_bytes_per_sec,
        };
        c.request_read_timeout = Duration::from_secs(self.request_read_timeout_secs.max(1));
        c.max_concurrent_streams = self.max_concurrent_streams;
        c.keepalive_interval = Duration::from_secs(self.keepalive_secs.max(1));
        c.keepalive_timeout = Duration::from_secs(self.keepalive_secs.max(1));
        c
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default_level`.
fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGINT or SIGTERM, whichever comes first. The handlers are installed
/// when this is called, not when the future is first polled: a signal that
/// arrives while the server starts (its address already printed) is not
/// lost to the default action, which would end the process uncleanly.
fn stop_signals() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Parses the process's command line, with the settings of a `--config`
/// file layered under the flags and the environment. Exits (as clap does)
/// on a bad command line; a bad config file is an `Err` to print.
pub fn parse() -> Result<(Cli, Vec<String>), String> {
    use clap::{CommandFactory, FromArgMatches};
    let root = Cli::command();
    let (argv, from_file) = crate::ops::config::layered(&root, std::env::args_os().collect())?;
    let matches = match root.clone().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) if !from_file.is_empty() && e.use_stderr() => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_owned();
            return Err(format!(
                "{first} (a setting of the --config file is checked as its flag)"
            ));
        }
        Err(e) => e.exit(),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let described = match matches.subcommand() {
        Some(("config", sub)) => match sub.subcommand() {
            Some(("check", check)) => {
                let command = root
                    .find_subcommand("config")
                    .and_then(|c| c.find_subcommand("check"))
                    .ok_or("no config check command")?;
                vec![crate::ops::config::describe(command, check, &from_file)]
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    Ok((cli, described))
}

/// Runs the parsed command and returns the process exit code. `described`:
/// the effective settings, for `caravan config check`.
pub async fn run(
    cli: Cli,
    described: Vec<String>,
) -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Config {
            what: ConfigCommand::Check(args),
        } => {
            // What `serve` would refuse at its start, short of binding and
            // opening the store: the auth file, the certificates, exposure.
            let config = args.config();
            crate::grpc::server::check_config(&config)?;
            print!("{}", described.concat());
            println!("# the configuration is valid");
            Ok(0)
        }
        Command::Serve(args) => {
            init_tracing(args.log_format, "info");
            // Taken over before the server starts: SIGHUP's default is to
            // end the process.
            #[cfg(unix)]
            let hangups = hangups();
            let stop = stop_signals();
            let running = crate::grpc::server::start(args.config()).await?;
            // The bound addresses on stdout, for scripts and tests using
            // port 0; a closed stdout is no reason to stop serving.
            {
                use std::io::Write;
                let mut out = std::io::stdout();
                let _ = writeln!(out, "caravan listening on {}", running.addr());
                if let Some(at) = running.metrics_addr() {
                    let _ = writeln!(out, "caravan metrics on http://{at}/metrics");
                }
                let _ = out.flush();
            }
            #[cfg(unix)]
            if let Some(mut hangups) = hangups {
                let reloader = running.reloader();
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!("SIGHUP: re-reading the certificate and auth files");
                        // Each outcome is logged by the reload itself.
                        let _ = reloader.reload();
                    }
                });
            }
            stop.await;
            running.trigger().trigger();
            running.wait().await?;
            tracing::info!("stopped");
            Ok(0)
        }
        Command::Demo => {
            // The demo's output is its tables: only warnings are logged.
            init_tracing(LogFormat::Text, "warn");
            crate::tools::demo::run().await.map_err(|e| e.to_string())?;
            Ok(0)
        }
        Command::Bench(args) => {
            init_tracing(LogFormat::Text, "warn");
            crate::tools::bench::run(args)
                .await
                .map_err(|e| e.to_string())?;
            Ok(0)
        }
        Command::Ingest(args) => crate::tools::client::ingest::run(args).await,
        Command::Query { what } => crate::tools::client::query::run(what).await,
        Command::Subscribe(args) => crate::tools::client::subscribe::run(args).await,
        Command::Gen(args) => crate::tools::gen::run(args),
        Command::Auth { what } => crate::tools::auth::run(what),
        Command::Backup(args) => crate::tools::operations::backup(args).await,
        Command::Restore(args) => crate::tools::operations::restore(args).await,
        Command::Verify(args) => {
            init_tracing(LogFormat::Text, "warn");
            crate::tools::operations::verify(args).await
        }
    }
}

/// SIGHUP, as a stream (Unix only).
#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be handled; certificates and identities are read once");
            None
        }
    }
}
