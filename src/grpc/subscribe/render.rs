//! Delivered events → subscription messages: each message holds matching
//! events up to about [`MESSAGE_BYTES`] encoded bytes and the checkpoint (the
//! last sequence it covers, matching or not).
//!
//! Depends on `convert` and the generated messages.

use crate::convert;
use crate::domain::StoredEvent;
use crate::grpc::stream::MESSAGE_BYTES;
use crate::proto::v1 as pb;
use prost::Message;

/// A message being filled.
#[derive(Default)]
pub(super) struct MessageBuilder {
    events: Vec<pb::StoredEvent>,
    bytes: usize,
}

impl MessageBuilder {
    /// Adds an event; `false` once the message is full.
    pub(super) fn push(&mut self, e: &StoredEvent) -> bool {
        let wire = convert::pb_stored_event(e);
        self.bytes += wire.encoded_len();
        self.events.push(wire);
        self.bytes < MESSAGE_BYTES
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The message, covering everything up to `checkpoint`.
    pub(super) fn finish(self, checkpoint: u64) -> pb::SubscribeResponse {
        pb::SubscribeResponse {
            events: self.events,
            checkpoint,
        }
    }
}

/// A message with no events, only a checkpoint.
pub(super) fn checkpoint(checkpoint: u64) -> pb::SubscribeResponse {
    MessageBuilder::default().finish(checkpoint)
}
