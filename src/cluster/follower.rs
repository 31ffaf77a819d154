//! Follows the stream into this node's store: an ordered consumer from the
//! message after the one that ends with the store's last event, whose events
//! go to the writer in whole groups, in order. A gap (a message whose stream
//! sequence is not the next one, or whose events do not follow) is never
//! skipped: the consumer is dropped and made again after the last message
//! the writer has been given.

use super::frames;
use super::link::Link;
use super::state::ClusterState;
use super::BATCH_LAST;
use crate::domain::StoredEvent;
use crate::storage::StoreHandle;
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

/// Where the follower stands: the last event handed to the writer (or held
/// by the store) and the stream sequence of the message that ends with it.
#[derive(Clone, Copy)]
struct Handed {
    event: u64,
    message: u64,
}

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
    let mut handed = None;
    loop {
        let followed = async {
            let at = match handed {
                Some(h) => h,
                None => {
                    let event = store.last_sequence();
                    let message = match state.position(event) {
                        Some(m) => m,
                        None => link
                            .locate(event)
                            .await
                            .map_err(|e| e.to_string())?
                            .ok_or_else(|| {
                                format!("no message of the stream ends with event {event}")
                            })?,
                    };
                    Handed { event, message }
                }
            };
            handed = Some(at);
            follow_from(&link, &store, &mut handed, &writer, &state).await
        };
        let outcome = tokio::select! {
            r = followed => r,
            _ = &mut stop => return,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "following the stream again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = &mut stop => return,
        }
    }
}

/// Follows from the message after `handed` until an error (`Ok` only when
/// the writer is gone), advancing `handed` as the writer takes events.
async fn follow_from(
    link: &Link,
    store: &StoreHandle,
    handed: &mut Option<Handed>,
    writer: &mpsc::Sender<Vec<StoredEvent>>,
    state: &ClusterState,
) -> Result<(), String> {
    let Some(start) = *handed else {
        return Err("no position".into());
    };
    let stream = link
        .js
        .get_stream(&link.stream)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.message + 1,
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
    // Received and not yet handed: events, and where the last ends.
    let mut pending: Vec<StoredEvent> = Vec::new();
    let mut seen = start;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("message: {e}"))?;
        let info = message.info().map_err(|e| format!("message info: {e}"))?;
        let sequence = info.stream_sequence;
        if sequence <= seen.message {
            continue;
        }
        if sequence > seen.message + 1 {
            return Err(format!("a gap: message {sequence} after {}", seen.message));
        }
        let last = frames::last_sequence(&message.payload).map_err(|e| e.to_string())?;
        if last <= seen.event {
            return Err(format!(
                "message {sequence} ends with event {last}, not after {}",
                seen.event
            ));
        }
        // Events the store already holds, or this node appended itself
        // (its writer writes them as soon as the stream confirms), need not
        // be decoded.
        let held = store.last_sequence().max(state.own());
        if !(pending.is_empty() && last <= held) {
            let events = frames::unpack(&message.payload).map_err(|e| e.to_string())?;
            if events.first().map(|e| e.sequence) != Some(seen.event + 1) {
                return Err(format!(
                    "message {sequence} does not follow event {}: not caravan's stream",
                    seen.event
                ));
            }
            pending.extend(events);
        }
        seen = Handed {
            event: last,
            message: sequence,
        };
        state.record(last, sequence);
        state.heard(last);
        let group_last = message
            .headers
            .as_ref()
            .and_then(|h| h.get(BATCH_LAST))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(last);
        let group_done = last >= group_last;
        if group_done && (info.pending == 0 || pending.len() >= MAX_HANDOFF) {
            if !pending.is_empty() {
                // Waits while the writer's replica queue is full: the
                // consumer then stops pulling (bounded memory), it never
                // drops events.
                if writer.send(std::mem::take(&mut pending)).await.is_err() {
                    return Ok(());
                }
            }
            *handed = Some(seen);
        }
    }
    Err("the consumer ended".into())
}
