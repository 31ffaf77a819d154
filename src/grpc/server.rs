//! Builds and runs the gRPC server: the caravan services, the standard
//! health service and server reflection (v1 and v1alpha), with explicit
//! limits, HTTP/2 keepalive, one tracing span per RPC and graceful shutdown.
//!
//! Shutdown order: health turns NOT_SERVING for every service and new
//! requests are refused; open streams end (AppendStreams answer what they
//! have read, for at most the drain deadline, then UNAVAILABLE); tonic stops
//! accepting connections and waits for in-flight calls, for at most the drain
//! deadline; the server then waits for every task the handlers spawned; then
//! the store commits and fsyncs what is queued and closes. Depends on the
//! services, the store facade and tonic; never on sled.

use crate::auth::quota::Quotas;
use crate::auth::Access;
use crate::cluster::{self, ClusterConfig, ClusterState, JetStreamSequencer, Link};
use crate::domain::{StoredEvent, TradeFigureKey};
use crate::error::Error;
use crate::grpc::access::{AccessLayer, Reflection};
use crate::grpc::admission::{self, AdmissionLayer};
use crate::grpc::connections;
use crate::grpc::exporter::Exporter;
use crate::grpc::exposure::checked;
pub use crate::grpc::exposure::{check_config, check_exposure};
use crate::grpc::freshness::FreshnessLayer;
use crate::grpc::ingest::{IngestApi, IngestLimits};
use crate::grpc::operations::OperationsApi;
use crate::grpc::query::{QueryApi, QueryLimits};
use crate::grpc::shutdown::{self, ShutdownTrigger};
use crate::grpc::store_state::{follow_write_state, gauges};
use crate::grpc::subscribe::{Recent, SubscribeApi, SubscribeLimits};
use crate::grpc::tls::{Tls, TlsFiles};
use crate::grpc::trace::TraceLayer;
use crate::grpc::wire;
use crate::ops::cursors::Cursors;
use crate::ops::metrics::Metrics;
use crate::ops::projection::restore_views;
use crate::proto;
use crate::proto::v1::ingest_service_server::IngestServiceServer;
use crate::proto::v1::operations_service_server::OperationsServiceServer;
use crate::proto::v1::query_service_server::QueryServiceServer;
use crate::proto::v1::subscription_service_server::SubscriptionServiceServer;
use crate::storage::{Derived, Observer, Projection, Store, StoreConfig, StoreHandle};
use crate::views::{CheckpointSettings, Views};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Everything `caravan serve` can set.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub ingest: IngestLimits,
    pub query: QueryLimits,
    pub subscribe: SubscribeLimits,
    /// When the views are checkpointed into the store.
    pub checkpoints: CheckpointSettings,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval; a peer that does not answer within
    /// `keepalive_timeout` is dropped and everything it held is released.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How long, after shutdown begins, calls in flight may take to finish
    /// (an AppendStream answering what it has read) before the server stops
    /// waiting for them.
    pub drain_deadline: Duration,
    /// Bytes of request messages all requests together may hold while they
    /// are read, decoded and handled; a request waits for room.
    pub max_decoding_bytes: usize,
    /// How long a request with one message may take to arrive whole.
    pub request_read_timeout: Duration,
    /// Connections open at once; one beyond is closed when accepted.
    pub max_connections: usize,
    /// How long a new connection may take to begin HTTP/2.
    pub handshake_timeout: Duration,
    /// TLS (and mutual TLS) certificate files; plain HTTP/2 when `None`.
    pub tls: Option<TlsFiles>,
    /// The identities (`--auth-file`); without one every caller is the
    /// anonymous identity, which may do everything.
    pub auth_file: Option<PathBuf>,
    /// Every identity's quotas, unless the auth file overrides them.
    pub quotas: Quotas,
    /// Who may use reflection; `None`: anyone on loopback, admins elsewhere.
    pub reflection: Option<Reflection>,
    /// Serve an address beyond loopback without TLS or without credentials
    /// ([`check_exposure`]); off by default.
    pub insecure: bool,
    /// Where `/metrics` is served (Prometheus text); none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the Verify RPC builds its scratch store; the system's
    /// temporary directory by default.
    pub scratch_dir: Option<PathBuf>,
    /// Cluster mode: NATS JetStream as the replicated log (`--jetstream`);
    /// `None`: the embedded single-node store.
    pub cluster: Option<ClusterConfig>,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default largest message: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default concurrent calls per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default drain deadline: 5 seconds.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Default decoding budget: 64 MiB, sixteen messages of the largest size.
pub const DEFAULT_MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;
/// Default time for a request message to arrive: 30 seconds.
pub const DEFAULT_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most connections at once: 1,024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time for a connection to begin HTTP/2: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerConfig {
    /// Defaults for everything but where to listen and store.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            data_dir,
            store: StoreConfig::default(),
            ingest: IngestLimits::default(),
            query: QueryLimits::default(),
            subscribe: SubscribeLimits::default(),
            checkpoints: CheckpointSettings::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            max_decoding_bytes: DEFAULT_MAX_DECODING_BYTES,
            request_read_timeout: DEFAULT_REQUEST_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            cluster: None,
            tls: None,
            auth_file: None,
            quotas: Quotas::default(),
            reflection: None,
            insecure: false,
            metrics_listen: None,
            scratch_dir: None,
        }
    }
}

/// The caravan services, by their gRPC names: each reports SERVING through
/// health while the server serves and NOT_SERVING once it shuts down.
const CARAVAN_SERVICES: [&str; 4] = [
    IngestServiceServer::<IngestApi>::NAME,
    QueryServiceServer::<QueryApi>::NAME,
    SubscriptionServiceServer::<SubscribeApi>::NAME,
    OperationsServiceServer::<OperationsApi>::NAME,
];

/// What follows the store's durable events: the ring of recent events for
/// subscribers, then the query views.
struct Followers {
    recent: Arc<Recent>,
    views: Arc<Views>,
    checkpoints: CheckpointSettings,
}

impl Projection for Followers {
    fn apply(&self, events: Vec<StoredEvent>) {
        self.recent.push(&events);
        self.views.apply(events);
    }

    fn restore(
        &self,
        derived: Derived,
        covers: u64,
        agreements: Vec<StoredEvent>,
    ) -> Result<(), Error> {
        restore_views(&self.views, derived, covers, agreements, self.checkpoints)
    }

    fn figure_is_current(&self, key: &TradeFigureKey) -> Result<bool, Error> {
        self.views
            .figure_is_current(key)
            .map_err(crate::grpc::query::unreadable)
    }

    fn figure_first_record(&self, key: &TradeFigureKey) -> Result<Option<u64>, Error> {
        self.views
            .figure_first_record(key)
            .map_err(crate::grpc::query::unreadable)
    }
}

/// What is re-read on SIGHUP: the TLS files and the auth file.
#[derive(Clone)]
pub struct Reloader {
    tls: Option<Arc<Tls>>,
    access: Arc<Access>,
}

impl Reloader {
    /// Reads the certificate files and the auth file again. What reads
    /// well is in force for every later connection (certificates) or call
    /// (identities); what does not keeps its old version, and the error
    /// says why.
    pub fn reload(&self) -> Result<(), Error> {
        let mut failed = Vec::new();
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificates re-read"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificates not re-read; the previous ones stay in force");
                    failed.push(e.to_string());
                }
            }
        }
        if self.access.requires_credentials() {
            match self.access.reload() {
                Ok(r) => tracing::info!(identities = r.identities, "auth file re-read"),
                Err(e) => {
                    tracing::error!(error = %e, "auth file not re-read; the previous identities stay in force");
                    failed.push(e.to_string());
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Unavailable(failed.join("; ")))
        }
    }
}

/// A server that is accepting calls.
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    trigger: ShutdownTrigger,
    reloader: Reloader,
    task: JoinHandle<Result<(), Error>>,
}

impl RunningServer {
    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of `/metrics`, if it is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Begins a graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.trigger.trigger();
        self.wait().await
    }

    /// Waits until the server has stopped and its store is closed.
    pub async fn wait(self) -> Result<(), Error> {
        self.task
            .await
            .map_err(|e| Error::Internal(format!("server task: {e}")))?
    }

    /// A handle that can trigger shutdown later (e.g. from a signal).
    pub fn trigger(&self) -> &ShutdownTrigger {
        &self.trigger
    }

    /// A handle that re-reads the certificate and auth files (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Re-reads the certificate and auth files now ([`Reloader::reload`]).
    pub fn reload(&self) -> Result<(), Error> {
        self.reloader.reload()
    }
}

/// Opens the store, binds the listener and starts serving in the background.
/// An address beyond loopback is refused first, unless `config.insecure`.
pub async fn start(config: ServerConfig) -> Result<RunningServer, Error> {
    let (tls, access) = checked(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("local address: {e}")))?;
    let metrics = Metrics::new();
    let exporter = match config.metrics_listen {
        Some(at) => Some(
            Exporter::bind(
                at,
                Arc::clone(&metrics),
                tls.clone(),
                Arc::clone(&access),
                config.insecure,
            )
            .await?,
        ),
        None => None,
    };
    let metrics_addr = exporter.as_ref().map(Exporter::local_addr).transpose()?;
    let dir = config.data_dir.clone();
    let mut store_config = config.store.clone();
    store_config.observer = Some(Observer(metrics.clone()));
    let views = Views::new();
    let recent = Recent::new(config.subscribe.recent_events);
    let projection: Arc<dyn Projection> = Arc::new(Followers {
        recent: Arc::clone(&recent),
        views: Arc::clone(&views),
        checkpoints: config.checkpoints,
    });
    let (store, replication) = open_store(&config, dir, store_config, projection).await?;
    let (trigger, shutdown) = shutdown::channel();
    let cursors = Arc::new(Cursors::default());
    metrics.read_gauges_from(gauges(
        store.handle(),
        Arc::clone(&views),
        Arc::clone(&cursors),
        replication.as_ref().map(|r| Arc::clone(&r.state)),
    ));
    if let Some(exporter) = exporter {
        tokio::spawn(exporter.serve(shutdown.clone()));
    }
    let reloader = Reloader { tls, access };
    let edge = Edge {
        listener,
        secured: reloader.clone(),
        metrics,
        cursors,
        replication,
    };
    let task = tokio::spawn(serve(config, edge, store, views, recent, shutdown));
    tracing::info!(%addr, tls = reloader.tls.is_some(), identities = reloader.access.requires_credentials(), "caravan listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        trigger,
        reloader,
        task,
    })
}

/// Where and by whom the services are reached: the bound listener, and the
/// TLS (if any) and identities in force.
struct Edge {
    listener: TcpListener,
    secured: Reloader,
    metrics: Arc<Metrics>,
    cursors: Arc<Cursors>,
    replication: Option<Replication>,
}

/// A cluster node's link to the stream, until its tasks take it.
struct Replication {
    link: Link,
    state: Arc<ClusterState>,
    /// To the writer's replica queue (bounded by `storage::REPLICA_QUEUE`).
    replicas: tokio::sync::mpsc::Sender<Vec<StoredEvent>>,
}

/// Opens the embedded store, or in cluster mode the store as a replica of
/// the stream, checked to be a prefix of it.
async fn open_store(
    config: &ServerConfig,
    dir: PathBuf,
    store_config: StoreConfig,
    projection: Arc<dyn Projection>,
) -> Result<(Store, Option<Replication>), Error> {
    let Some(cluster) = &config.cluster else {
        let store =
            tokio::task::spawn_blocking(move || Store::open(&dir, store_config, projection))
                .await
                .map_err(|e| Error::Internal(format!("open task: {e}")))??;
        return Ok((store, None));
    };
    let link = Link::connect(cluster).await?;
    let state = Arc::new(ClusterState::default());
    let sequencer = Box::new(JetStreamSequencer::new(
        link.clone(),
        Arc::clone(&state),
        tokio::runtime::Handle::current(),
    ));
    let (store, replicas) = tokio::task::spawn_blocking(move || {
        Store::open_replica(&dir, store_config, projection, sequencer)
    })
    .await
    .map_err(|e| Error::Internal(format!("open task: {e}")))??;
    if let Err(e) = link.check_prefix(&store.handle(), &state).await {
        let _ = store.close().await;
        return Err(e);
    }
    Ok((
        store,
        Some(Replication {
            link,
            state,
            replicas,
        }),
    ))
}

async fn serve(
    config: ServerConfig,
    edge: Edge,
    store: Store,
    views: Arc<Views>,
    recent: Arc<Recent>,
    shutdown: shutdown::Shutdown,
) -> Result<(), Error> {
    // Every task a handler spawns; the store closes only after all of them.
    let tasks = TaskTracker::new();
    let metrics = Arc::clone(&edge.metrics);
    let result = serve_until_shutdown(
        &config,
        edge,
        store.handle(),
        Arc::clone(&views),
        recent,
        shutdown,
        tasks.clone(),
    )
    .await;
    tasks.close();
    tasks.wait().await;
    // The scrapes' handle on the store goes too.
    metrics.detach_gauges();
    // Every task (and its store handle) is gone; commit what is queued.
    let closed = store.close().await;
    // Then one last checkpoint, so that the next start replays nothing.
    let _ = tokio::task::spawn_blocking(move || views.close()).await;
    tracing::info!("store closed");
    result.and(closed)
}

async fn set_all(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in CARAVAN_SERVICES {
        health.set_service_status(name, status).await;
    }
}

async fn serve_until_shutdown(
    config: &ServerConfig,
    edge: Edge,
    store: StoreHandle,
    views: Arc<Views>,
    recent: Arc<Recent>,
    shutdown: shutdown::Shutdown,
    tasks: TaskTracker,
) -> Result<(), Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_all(&health, ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;

    let cluster_state = edge.replication.as_ref().map(|r| Arc::clone(&r.state));
    if let Some(r) = edge.replication {
        // Tracked: both end at shutdown, before the store closes.
        let mut stop = shutdown.clone();
        tasks.spawn(cluster::probe(
            r.link.clone(),
            Arc::clone(&r.state),
            async move { stop.wait().await },
        ));
        let mut stop = shutdown.clone();
        tasks.spawn(cluster::follow(
            r.link,
            store.clone(),
            r.replicas,
            r.state,
            async move { stop.wait().await },
        ));
    }
    // Tracked: it holds the store, which closes only after it has ended.
    tasks.spawn(follow_write_state(
        health.clone(),
        store.clone(),
        cluster_state.clone(),
        shutdown.clone(),
    ));
    let freshness = FreshnessLayer {
        applied: store.watch_durable(),
        cluster: cluster_state,
    };
    let operations = OperationsServiceServer::new(OperationsApi::new(
        store.clone(),
        Arc::clone(&views),
        config
            .scratch_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
        shutdown.clone(),
        tasks.clone(),
        config.max_message_bytes,
    ))
    .max_encoding_message_size(config.max_message_bytes);
    let subscriptions = SubscriptionServiceServer::new(SubscribeApi::new(
        store.clone(),
        Arc::clone(&views),
        recent,
        shutdown.clone(),
        tasks.clone(),
        config.subscribe.clone(),
        Arc::clone(&edge.cursors),
    ))
    .max_encoding_message_size(config.max_message_bytes);
    let query = QueryServiceServer::new(QueryApi::new(
        views,
        store.clone(),
        shutdown.clone(),
        tasks.clone(),
        config.query.clone(),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    let ingest = IngestServiceServer::new(IngestApi::new(
        store,
        Arc::clone(&edge.metrics),
        shutdown.clone(),
        tasks,
        config.ingest.clone(),
        config.drain_deadline,
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);

    let reflection = config
        .reflection
        .unwrap_or(if config.listen.ip().is_loopback() {
            Reflection::Open
        } else {
            Reflection::Admin
        });
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .layer(TraceLayer(Arc::clone(&edge.metrics)))
        .layer(AccessLayer::new(
            Arc::clone(&edge.secured.access),
            reflection,
        ))
        .layer(AdmissionLayer::new(admission::Limits {
            max_message_bytes: config.max_message_bytes,
            wire: wire::Limits {
                batch_events: config.ingest.max_batch_events,
                lookup: config.ingest.max_lookup,
            },
            max_decoding_bytes: config.max_decoding_bytes,
            read_timeout: config.request_read_timeout,
        }))
        .layer(freshness)
        .add_service(health_service)
        .add_optional_service((reflection != Reflection::Off).then_some(reflection_v1))
        .add_optional_service((reflection != Reflection::Off).then_some(reflection_v1alpha))
        .add_service(ingest)
        .add_service(query)
        .add_service(subscriptions)
        .add_service(operations);

    let mut on_signal = shutdown.clone();
    let reporter = health.clone();
    let signal = async move {
        on_signal.wait().await;
        tracing::info!("shutting down: refusing new work, draining calls");
        set_all(&reporter, ServingStatus::NotServing).await;
    };
    // With our own listener, connection options must be set here: no Nagle
    // delay (it adds ~40 ms to small responses), TCP keepalive for dead peers.
    let incoming = TcpIncoming::from(edge.listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(config.keepalive_interval));
    let incoming = connections::accept(
        incoming,
        connections::Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
        },
        edge.secured.tls,
    );
    let server = router.serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(server);

    let mut drain = shutdown.clone();
    let deadline = config.drain_deadline;
    tokio::select! {
        result = &mut server => result.map_err(|e| Error::Internal(format!("transport: {e}"))),
        _ = async { drain.wait().await; tokio::time::sleep(deadline).await } => {
            tracing::warn!(?deadline, "drain deadline passed; no longer waiting for open calls");
            Ok(())
        }
    }
}
