//! The writer's [`Sequencer`] on JetStream: a group's events packed into
//! as few messages as `max_payload` allows (`frames`), published on the
//! condition that the stream's last message is the one that ends with the
//! event this node applied last (`Nats-Expected-Last-Sequence`); a group of
//! several messages is one atomic batch. Every message carries a
//! `Nats-Msg-Id` (unique per attempt) and the group's last event sequence.
//!
//! Runs on the writer thread, blocking on the runtime's handle while NATS
//! answers.

use super::frames::pack;
use super::link::Link;
use super::state::ClusterState;
use super::BATCH_LAST;
use crate::storage::{NotAppended, Sequencer};
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use std::sync::Arc;

/// Room left in a message for its headers.
const HEADER_ROOM: usize = 4096;

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

    /// The largest payload of one message: `--jetstream-max-message-bytes`,
    /// at most the servers' `max_payload` less room for the headers.
    fn payload_limit(&self) -> usize {
        let server = self.link.client.server_info().max_payload;
        let server = if server == 0 { 1024 * 1024 } else { server };
        let room = server.saturating_sub(HEADER_ROOM).max(256);
        self.link
            .max_message_bytes
            .map_or(room, |m| m.clamp(256, room))
    }

    /// The stream sequence of the message that ends with event `after`.
    async fn position(&self, after: u64) -> Result<u64, NotAppended> {
        if let Some(p) = self.state.position(after) {
            return Ok(p);
        }
        match self.link.locate(after).await {
            Ok(Some(p)) => {
                self.state.record(after, p);
                Ok(p)
            }
            Ok(None) => Err(NotAppended::Behind),
            Err(e) => Err(NotAppended::Unconfirmed(e.to_string())),
        }
    }

    async fn publish(&mut self, after: u64, events: Vec<Vec<u8>>) -> Result<(), NotAppended> {
        let began = std::time::Instant::now();
        let count = events.len() as u64;
        let last_event = after + count;
        let expected = self.position(after).await?;
        let messages = pack(events, self.payload_limit()).map_err(NotAppended::Refused)?;
        let unconfirmed = |e: &dyn std::fmt::Display| NotAppended::Unconfirmed(e.to_string());
        self.batches += 1;
        let id = format!("{}-{:x}-{}", self.link.node, self.started, self.batches);
        let size = messages.len();
        let batch_last = last_event.to_string();
        let mut ack = None;
        for (i, payload) in messages.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            // Unique per attempt: a message id shared with another node's
            // message of the same events would be answered as a duplicate.
            let message_id = format!("{id}-{i}");
            headers.insert(header::NATS_MESSAGE_ID, message_id.as_str());
            headers.insert(BATCH_LAST, batch_last.as_str());
            if i == 0 {
                headers.insert(
                    header::NATS_EXPECTED_LAST_SEQUENCE,
                    expected.to_string().as_str(),
                );
            }
            if size > 1 {
                headers.insert(header::NATS_BATCH_ID, id.as_str());
                headers.insert(header::NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            }
            if i + 1 == size {
                if size > 1 {
                    headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
                }
                let publish = PublishMessage::build()
                    .headers(headers)
                    .payload(payload.into());
                ack = Some(
                    self.link
                        .js
                        .send_publish(self.link.subject.clone(), publish)
                        .await
                        .map_err(|e| unconfirmed(&e))?,
                );
            } else {
                self.link
                    .client
                    .publish_with_headers(self.link.subject.clone(), headers, payload.into())
                    .await
                    .map_err(|e| unconfirmed(&e))?;
            }
        }
        let sent = began.elapsed();
        let Some(ack) = ack else {
            return Err(NotAppended::Refused("nothing to append".into()));
        };
        let wanted = expected + size as u64;
        match ack.await {
            Ok(ack) if ack.sequence == wanted && !ack.duplicate => {
                self.state.record(last_event, wanted);
                self.state.appended(last_event);
                self.state.heard(last_event);
            }
            Ok(ack) => {
                return Err(NotAppended::Unconfirmed(format!(
                    "the stream stored the group at {} (duplicate: {}), not at {wanted}",
                    ack.sequence, ack.duplicate
                )))
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                return Err(NotAppended::Behind)
            }
            Err(e) => return Err(unconfirmed(&e)),
        }
        tracing::debug!(
            after,
            events = count,
            messages = size,
            send_us = sent.as_micros() as u64,
            confirmed_us = began.elapsed().as_micros() as u64,
            "appended to the stream"
        );
        Ok(())
    }
}

impl Sequencer for JetStreamSequencer {
    fn append(&mut self, after: u64, events: Vec<Vec<u8>>) -> Result<(), NotAppended> {
        let runtime = self.runtime.clone();
        let result = runtime.block_on(self.publish(after, events));
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
            self.state.heard(stream.head);
        }
        self.state.record(stream.head, stream.last);
        Ok(stream.head)
    }

    fn ready(&self) -> Result<(), String> {
        if self.state.reachable() {
            Ok(())
        } else {
            Err("JetStream has no quorum or does not answer".into())
        }
    }
}
