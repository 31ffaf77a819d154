//! What the server tells operators about its store: the gauges a metrics
//! scrape reads ([`gauges`]) and the ingest service's health, which follows
//! whether the store takes appends ([`follow_write_state`]).
//!
//! Depends on the store facade, the views, the metrics and tonic-health.

use super::ingest::IngestApi;
use super::shutdown;
use crate::cluster::ClusterState;
use crate::ops::cursors::Cursors;
use crate::ops::metrics::{ClusterSnapshot, Gauges, Snapshot};
use crate::proto::v1::ingest_service_server::IngestServiceServer;
use crate::storage::{StoreHandle, WriteState};
use crate::views::Views;
use std::sync::Arc;
use std::time::Duration;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How often the ingest service's health follows the store's write state.
const WRITE_STATE_POLL: Duration = Duration::from_millis(250);

/// What a scrape reads from the server.
pub(super) fn gauges(
    store: StoreHandle,
    views: Arc<Views>,
    cursors: Arc<Cursors>,
    cluster: Option<Arc<ClusterState>>,
) -> Gauges {
    Arc::new(move || {
        let durable = store.last_sequence();
        let (applied, checkpointed, checkpoint_ms) = views.positions();
        let (depth, capacity) = store.writer_queue();
        let (subscriptions, oldest) = cursors.oldest();
        Snapshot {
            durable_sequence: durable,
            views_applied_sequence: applied,
            checkpoint_sequence: checkpointed,
            checkpoint_time_seconds: checkpoint_ms as f64 / 1000.0,
            writer_queue_depth: depth as u64,
            writer_queue_capacity: capacity as u64,
            store_size_bytes: store.size_on_disk(),
            disk_free_bytes: store.disk_free().unwrap_or(0),
            store_writable: store.write_state() == WriteState::Writable,
            subscriber_lag_max: oldest.map_or(0, |o| durable.saturating_sub(o)),
            subscriptions,
            cluster: cluster.as_ref().map(|c| ClusterSnapshot {
                stream_head: c.head(),
                silence_seconds: c.silence().as_secs_f64(),
                quorum: c.reachable(),
            }),
        }
    })
}

/// Keeps the ingest service's health in step with the store: NOT_SERVING
/// while it refuses appends (a nearly full disk, a failed write), SERVING
/// again when a full disk has room; the query and subscription services
/// serve acknowledged data throughout. In cluster mode ingest also needs
/// the stream to answer (a quorum). Ends at shutdown.
pub(super) async fn follow_write_state(
    health: HealthReporter,
    store: StoreHandle,
    cluster: Option<Arc<ClusterState>>,
    mut shutdown: shutdown::Shutdown,
) {
    let ingest = IngestServiceServer::<IngestApi>::NAME;
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WRITE_STATE_POLL) => {}
            _ = shutdown.wait() => return,
        }
        let mut state = store.write_state();
        if state == WriteState::Writable && cluster.as_ref().is_some_and(|c| !c.reachable()) {
            state = WriteState::Stopped("JetStream has no quorum or does not answer".into());
        }
        let now = state == WriteState::Writable;
        if now != serving {
            serving = now;
            match &state {
                WriteState::Writable => tracing::info!("the store writes again: ingest is SERVING"),
                WriteState::DiskLow(why) | WriteState::Stopped(why) => {
                    tracing::error!(cause = %why, "the store refuses appends: ingest is NOT_SERVING; reads go on")
                }
            }
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(ingest, status).await;
        }
    }
}
