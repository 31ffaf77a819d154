//! Cluster mode: NATS JetStream as the replicated log, each caravan node a
//! replica of it (`caravan serve --jetstream`).
//!
//! - `link`: the connection to NATS and the stream (created if missing:
//!   file storage, R3 by default, atomic publish allowed, discard new), and
//!   the check that this node's store is a prefix of the stream;
//! - `frames`: several events in one stream message;
//! - `sequencer`: the writer's [`Sequencer`](crate::storage::Sequencer): a
//!   group's events in as few messages as fit (one atomic batch), on the
//!   condition that the stream's last message ends with the event this node
//!   applied last;
//! - `follower`: an ordered consumer from the node's applied sequence + 1,
//!   which hands the stream's events to the writer in whole groups and
//!   never skips one;
//! - `state`: what the node knows of the stream (its head, when it last
//!   heard from it), for health, metrics and every read's answer.
//!
//! Depends on async-nats, the storage facade and `error`; must not depend on
//! the gRPC edge or the views.

mod follower;
mod frames;
mod link;
mod sequencer;
mod state;

pub use follower::follow;
pub use link::{ClusterConfig, Link, DEFAULT_REPLICAS};
pub use sequencer::JetStreamSequencer;
pub use state::{probe, ClusterState};

/// The header that marks, on every message of a group, the sequence of the
/// group's last event: a follower hands the writer whole groups only, so no
/// group (and no request) is ever partly visible on a replica.
pub(crate) const BATCH_LAST: &str = "Caravan-Batch-Last";
