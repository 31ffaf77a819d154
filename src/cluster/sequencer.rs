//! The writer's [`Sequencer`] on JetStream: a group's events as consecutive
//! atomic batches, the first message of each carrying
//! `Nats-Expected-Last-Sequence`, every message its `Nats-Msg-Id`.
//!
//! Runs on the writer thread, blocking on the runtime's handle while NATS
//! answers.

use super::link::Link;
use super::state::ClusterState;
use super::BATCH_LAST;
use crate::storage::{NotAppended, Outgoing, Sequencer};
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use std::sync::Arc;

/// The writer's link to the stream.
pub struct JetStreamSequencer {
    link: Link,
    state: Arc<ClusterState>,
    runtime: tokio::runtime::Handle,
    /// Numbers this node's batches (their `Nats-Batch-Id`).
    batches: u64,
    /// Names this process's batches apart from an earlier run's.
    started: u128,
}

impl JetStreamSequencer {
    pub fn new(link: Link, state: Arc<ClusterState>, runtime: tokio::runtime::Handle) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        JetStreamSequencer {
            link,
            state,
            runtime,
            batches: 0,
            started,
        }
    }

    async fn publish(
        &mut self,
        after: u64,
        events: Vec<Outgoing>,
        batches: &[usize],
    ) -> Result<(), NotAppended> {
        let unconfirmed = |e: &dyn std::fmt::Display| NotAppended::Unconfirmed(e.to_string());
        let mut events = events.into_iter();
        let mut acks = Vec::with_capacity(batches.len());
        let mut last = after;
        for &size in batches {
            self.batches += 1;
            let id = format!("{}-{:x}-{}", self.link.node, self.started, self.batches);
            let batch_last = (last + size as u64).to_string();
            for i in 1..=size {
                let Some(event) = events.next() else {
                    return Err(NotAppended::Unconfirmed("fewer events than batches".into()));
                };
                let mut headers = HeaderMap::new();
                headers.insert(header::NATS_BATCH_ID, id.as_str());
                headers.insert(header::NATS_BATCH_SEQUENCE, i.to_string().as_str());
                headers.insert(header::NATS_MESSAGE_ID, event.message_id.as_str());
                headers.insert(BATCH_LAST, batch_last.as_str());
                if i == 1 {
                    headers.insert(
                        header::NATS_EXPECTED_LAST_SEQUENCE,
                        last.to_string().as_str(),
                    );
                }
                let payload = event.bytes.into();
                if i == size {
                    headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
                    let publish = PublishMessage::build().headers(headers).payload(payload);
                    let ack = self
                        .link
                        .js
                        .send_publish(self.link.subject.clone(), publish)
                        .await
                        .map_err(|e| unconfirmed(&e))?;
                    acks.push((ack, last + size as u64));
                } else {
                    self.link
                        .client
                        .publish_with_headers(self.link.subject.clone(), headers, payload)
                        .await
                        .map_err(|e| unconfirmed(&e))?;
                }
            }
            last += size as u64;
        }
        for (k, (ack, expected)) in acks.into_iter().enumerate() {
            match ack.await {
                Ok(ack) if ack.sequence == expected && !ack.duplicate => {
                    self.state.heard(expected);
                }
                Ok(ack) => {
                    return Err(NotAppended::Unconfirmed(format!(
                        "the stream stored the batch at {} (duplicate: {}), not at {expected}",
                        ack.sequence, ack.duplicate
                    )))
                }
                Err(e) if k == 0 && e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(NotAppended::Behind)
                }
                Err(e) => return Err(unconfirmed(&e)),
            }
        }
        Ok(())
    }
}

impl Sequencer for JetStreamSequencer {
    fn append(
        &mut self,
        after: u64,
        events: Vec<Outgoing>,
        batches: &[usize],
    ) -> Result<(), NotAppended> {
        let runtime = self.runtime.clone();
        let result = runtime.block_on(self.publish(after, events, batches));
        if let Err(NotAppended::Unconfirmed(e)) = &result {
            tracing::warn!(error = %e, after, "JetStream did not confirm a group");
        }
        result
    }

    fn head(&mut self) -> Result<u64, String> {
        let link = self.link.clone();
        let stream = self
            .runtime
            .block_on(link.stream_state())
            .map_err(|e| e.to_string())?;
        if stream.quorum {
            self.state.heard(stream.last);
        }
        Ok(stream.last)
    }

    fn max_batch(&self) -> usize {
        self.link.max_batch
    }
}
