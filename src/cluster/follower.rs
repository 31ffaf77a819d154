//! Follows the stream into this node's store: an ordered consumer from the
//! store's last sequence + 1, whose events go to the writer in whole atomic
//! batches, in order. A gap (a message whose stream sequence is not the next
//! one) is never skipped: the consumer is dropped and made again from the
//! first sequence the writer has not been given.

use super::link::Link;
use super::state::ClusterState;
use super::BATCH_LAST;
use crate::domain::StoredEvent;
use crate::storage::{decode_stored, StoreHandle};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// The most events handed to the writer at once (whole batches: a batch
/// larger than this goes alone).
const MAX_HANDOFF: usize = 4096;
/// How long the follower waits before it makes its consumer again after an
/// error.
const RETRY: Duration = Duration::from_millis(500);

/// Feeds the writer the stream's events until shutdown or until the writer
/// is gone.
pub async fn follow(
    link: Link,
    store: StoreHandle,
    writer: mpsc::Sender<Vec<StoredEvent>>,
    state: Arc<ClusterState>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    // The last sequence handed to the writer (or held by the store).
    let mut handed = store.last_sequence();
    loop {
        let followed = follow_from(&link, &mut handed, &writer, &state);
        let outcome = tokio::select! {
            r = followed => r,
            _ = &mut stop => return,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, from = handed + 1, "following the stream again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = &mut stop => return,
        }
    }
}

/// Follows from `handed + 1` until an error (`Ok` only when the writer is
/// gone).
async fn follow_from(
    link: &Link,
    handed: &mut u64,
    writer: &mpsc::Sender<Vec<StoredEvent>>,
    state: &ClusterState,
) -> Result<(), String> {
    let stream = link
        .js
        .get_stream(&link.stream)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: *handed + 1,
            },
            filter_subject: link.subject.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("messages: {e}"))?;
    let mut pending: Vec<StoredEvent> = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("message: {e}"))?;
        let info = message.info().map_err(|e| format!("message info: {e}"))?;
        let sequence = info.stream_sequence;
        let expected = *handed + pending.len() as u64 + 1;
        if sequence < expected {
            continue;
        }
        if sequence > expected {
            return Err(format!("a gap: message {sequence} after {}", expected - 1));
        }
        let stored = decode_stored(&message.payload).map_err(|e| e.to_string())?;
        if stored.sequence != sequence {
            return Err(format!(
                "message {sequence} holds event {}: not caravan's stream",
                stored.sequence
            ));
        }
        let batch_last = message
            .headers
            .as_ref()
            .and_then(|h| h.get(BATCH_LAST))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(sequence);
        pending.push(stored);
        state.heard(sequence + info.pending);
        let batch_done = sequence >= batch_last;
        if batch_done && (info.pending == 0 || pending.len() >= MAX_HANDOFF) {
            let events = std::mem::take(&mut pending);
            let count = events.len() as u64;
            // Waits while the writer's replica queue is full: the consumer
            // then stops pulling (bounded memory), it never drops events.
            if writer.send(events).await.is_err() {
                return Ok(());
            }
            *handed += count;
        }
    }
    Err("the consumer ended".into())
}
