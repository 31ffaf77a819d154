//! The connection to NATS and to caravan's stream, and the check that this
//! node's store is a prefix of the stream before the node serves.

use super::state::ClusterState;
use crate::error::Error;
use crate::storage::StoreHandle;
use async_nats::jetstream::{self, stream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default stream replicas: 3 (a quorum of 2 survives one node).
pub const DEFAULT_REPLICAS: usize = 3;
/// How long a start waits for the stream to answer.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long one request to JetStream (a publish's acknowledgement, stream
/// info) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A replica the leader has not heard from for this long does not count
/// towards its quorum.
const QUORUM_SILENCE: Duration = Duration::from_secs(3);

/// The stream as its leader answered.
pub(crate) struct StreamState {
    /// The last message's stream sequence.
    pub last: u64,
    /// The sequence of the newest event (the last message's last).
    pub head: u64,
    /// The leader has a quorum of current replicas: appends can commit.
    pub quorum: bool,
}

/// `--jetstream*` settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS servers, `nats://host:port` (any of the cluster's).
    pub servers: Vec<String>,
    /// The stream (created if missing); its subject is `caravan.<stream>`.
    pub stream: String,
    /// Replicas of a stream this node creates.
    pub replicas: usize,
    /// JetStream's own de-duplication window of a stream this node creates
    /// (caravan's idempotency is its permanent event-id index, not this).
    pub duplicate_window: Duration,
    /// The largest stream message this node publishes (events are packed
    /// into messages up to it); `None`: the servers' `max_payload`.
    pub max_message_bytes: Option<usize>,
    /// A NATS credentials file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// CA certificate(s) that NATS servers' certificates must chain to
    /// (TLS is then required).
    pub ca_cert: Option<PathBuf>,
    /// This node's client certificate and key for NATS (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// This node's name in NATS (connection name, batch ids).
    pub node: String,
    /// Reach NATS servers beyond loopback without TLS.
    pub insecure: bool,
}

impl ClusterConfig {
    /// The NATS servers, parsed; one beyond loopback without TLS is refused
    /// unless `insecure` (checked at start and by `caravan config check`).
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, Error> {
        let servers = self
            .servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|e| Error::Internal(format!("--jetstream {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = self.ca_cert.is_some() || self.client_cert.is_some();
        let loopback = |host: &str| {
            host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        if let Some(far) = servers
            .iter()
            .find(|s| !loopback(s.host()) && !s.tls_required() && !tls)
        {
            if !self.insecure {
                return Err(Error::Internal(format!(
                    "--jetstream {}: a NATS server beyond loopback needs TLS (--jetstream-ca-cert, \
                     or a tls:// address), or --insecure",
                    far.host()
                )));
            }
        }
        Ok(servers)
    }
}

/// A connection to NATS and caravan's stream.
#[derive(Clone)]
pub struct Link {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: String,
    pub(crate) subject: String,
    pub(crate) node: String,
    pub(crate) max_message_bytes: Option<usize>,
}

fn nats_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("JetStream: {context}: {e}"))
}

impl Link {
    /// Connects, and creates the stream if it does not exist.
    pub async fn connect(config: &ClusterConfig) -> Result<Link, Error> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("caravan {}", config.node))
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect();
        if let Some(path) = &config.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        }
        if let Some(ca) = &config.ca_cert {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.client_cert {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let servers = config.servers()?;
        let client = async_nats::connect_with_options(servers, options)
            .await
            .map_err(|e| nats_error("connect", e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let link = Link {
            client,
            js,
            stream: config.stream.clone(),
            subject: format!("caravan.{}", config.stream),
            node: config.node.clone(),
            max_message_bytes: config.max_message_bytes,
        };
        let began = Instant::now();
        loop {
            match link.ensure_stream(config).await {
                Ok(()) => return Ok(link),
                Err(e) if began.elapsed() < START_PATIENCE => {
                    tracing::warn!(error = %e, "waiting for JetStream");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn ensure_stream(&self, config: &ClusterConfig) -> Result<(), Error> {
        let wanted = stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            discard: stream::DiscardPolicy::New,
            duplicate_window: config.duplicate_window,
            allow_atomic_publish: true,
            allow_direct: true,
            deny_delete: true,
            deny_purge: true,
            description: Some("caravan's replicated event log".into()),
            ..Default::default()
        };
        let stream = self
            .js
            .get_or_create_stream(wanted)
            .await
            .map_err(|e| nats_error(&format!("stream {}", self.stream), e))?;
        let info = stream.cached_info();
        if !info.config.allow_atomic_publish || info.config.subjects != [self.subject.clone()] {
            return Err(Error::Internal(format!(
                "the stream {} exists but is not caravan's (it needs the subject {} alone and \
                 atomic publish allowed)",
                self.stream, self.subject
            )));
        }
        Ok(())
    }

    /// The stream's sequences, and whether its leader has a quorum of
    /// replicas it has heard from lately (a leader cut off from the others
    /// may answer for a while before it steps down; a replica still catching
    /// up counts, as it does for Raft).
    pub(crate) async fn stream_state(&self) -> Result<StreamState, Error> {
        // One request: getting the stream reads its info.
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| nats_error("stream", e))?;
        let info = stream.cached_info();
        let replicas = info.config.num_replicas.max(1);
        let quorum = info.cluster.as_ref().map_or(replicas == 1, |c| {
            let current = c
                .replicas
                .iter()
                .filter(|p| !p.offline && p.active < QUORUM_SILENCE)
                .count();
            c.leader.is_some() && current + 1 > replicas / 2
        });
        let last = info.state.last_sequence;
        let head = match last {
            0 => 0,
            n => self.message_bounds(&stream, n).await?.1,
        };
        Ok(StreamState { last, head, quorum })
    }

    /// The (first, last) event sequences of the message at `sequence`.
    async fn message_bounds(
        &self,
        stream: &stream::Stream,
        sequence: u64,
    ) -> Result<(u64, u64), Error> {
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|e| nats_error(&format!("message {sequence}"), e))?;
        super::frames::bounds(&message.payload)
    }

    /// The events of the message at `sequence`.
    async fn message(
        &self,
        stream: &stream::Stream,
        sequence: u64,
    ) -> Result<Vec<crate::domain::StoredEvent>, Error> {
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|e| nats_error(&format!("message {sequence}"), e))?;
        super::frames::unpack(&message.payload)
    }

    /// The stream sequence of the message whose last event is `event`
    /// (0 for event 0): a binary search over the stream's messages, whose
    /// events ascend. `None` when no message ends with it.
    pub(crate) async fn locate(&self, event: u64) -> Result<Option<u64>, Error> {
        if event == 0 {
            return Ok(Some(0));
        }
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| nats_error("stream", e))?;
        let (mut lo, mut hi) = {
            let state = &stream.cached_info().state;
            (state.first_sequence.max(1), state.last_sequence)
        };
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let (first, last) = self.message_bounds(&stream, mid).await?;
            if last < event {
                lo = mid + 1;
            } else if first > event {
                hi = mid - 1;
            } else {
                return Ok((last == event).then_some(mid));
            }
        }
        Ok(None)
    }

    /// Refuses to serve a store that is not a prefix of the stream: more
    /// events than the stream holds (another stream's store, or a stream
    /// that lost acknowledged events), another event at the store's last
    /// sequence, or a stream that no longer holds the events after it.
    /// Remembers where the store's last event is in the stream.
    pub async fn check_prefix(
        &self,
        store: &StoreHandle,
        state: &ClusterState,
    ) -> Result<(), Error> {
        let began = Instant::now();
        let stream = loop {
            match self.stream_state().await {
                Ok(s) => break s,
                Err(e) if began.elapsed() < START_PATIENCE => {
                    tracing::warn!(error = %e, "waiting for JetStream");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let held = store.last_sequence();
        let refuse = |why: String| {
            Err(Error::Internal(format!(
                "this node's store is not a replica of the stream {}: {why}; refusing to serve",
                self.stream
            )))
        };
        if held > stream.head {
            return refuse(format!(
                "the store holds {held} events and the stream only {} (another stream's \
                 store, or a stream that lost acknowledged events)",
                stream.head
            ));
        }
        let Some(position) = self.locate(held).await? else {
            return refuse(format!(
                "no message of the stream ends with event {held} (the stream no longer \
                 holds it: restore a newer backup)"
            ));
        };
        if held > 0 {
            let handle = self
                .js
                .get_stream(&self.stream)
                .await
                .map_err(|e| nats_error("stream", e))?;
            let theirs = self.message(&handle, position).await?;
            let ours = store.event_at(held)?;
            if ours.as_ref() != theirs.last() {
                return refuse(format!("event {held} differs"));
            }
        }
        state.record(held, position);
        state.heard(stream.head);
        tracing::info!(stream = %self.stream, held, position, head = stream.head, "the store is a prefix of the stream");
        Ok(())
    }
}
