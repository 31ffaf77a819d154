//! The life of a query call after its request is parsed: [`QueryApi::begin`]
//! fixes its deadline, snapshot and resume position and takes a stream slot;
//! [`QueryApi::stream`] then runs a producer task that computes the answer one
//! bounded chunk at a time under a short read lock and queues it on a bounded
//! stream, until the answer ends, the client leaves, the deadline passes or
//! the server shuts down.
//!
//! Depends on the views, the store handle (for the newest durable sequence),
//! `cursor`, `stream`, `shutdown` and `error`.

use super::cursor::{self, Position, Refused};
use super::request::Resumable;
use super::QueryApi;
use crate::auth::quota::Slot;
use crate::domain::FieldViolation;
use crate::error::{Error, Retry};
use crate::grpc::access::Caller;
use crate::grpc::stream::{self, Answer, TrySend};
use crate::views::Views;
use prost::Message;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::Request;
use tracing::Instrument;

/// The snapshot a call answers at, and what its cursors pin.
pub(super) struct Snapshot {
    /// The as-of sequence: every answer of the call is as of it.
    pub sequence: u64,
    fingerprint: u64,
}

impl Snapshot {
    /// The cursor of a message that ends at `position`.
    pub(super) fn cursor<P: Position>(&self, position: &P) -> Vec<u8> {
        cursor::encode(self.sequence, self.fingerprint, position)
    }
}

/// A call that may stream: its snapshot, its deadline, and its slot among
/// the running query streams.
pub(super) struct Begun {
    snapshot: Snapshot,
    deadline: Option<Instant>,
    /// One of `--max-query-streams` slots, held by the producer until the
    /// stream ends: bounds the producers (and their buffers) running at once.
    permit: OwnedSemaphorePermit,
    /// One of the caller's own query streams (its quota), held likewise, so
    /// that no identity takes every slot (`None`: no quota).
    own: Option<Slot>,
}

/// What a producer computes per step: the next messages, or `None` at the end.
pub(super) type Chunk<T> = Result<Option<Vec<T>>, Error>;

/// Parses a `grpc-timeout` header ("100m", "5S", …) into a deadline.
fn deadline_of(metadata: &MetadataMap) -> Option<Instant> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    Instant::now().checked_add(crate::grpc::freshness::grpc_timeout(raw)?)
}

fn bad_cursor(description: &str) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new("resume_after", description)])
}

impl QueryApi {
    /// Parses the request with `parse`, then fixes the call's snapshot (from
    /// its cursor when resuming, else its `as_of_sequence`, 0 being the newest
    /// durable sequence) and the position it resumes after, and takes a
    /// stream slot.
    pub(super) fn begin<R: Resumable, Q, P: Position>(
        &self,
        request: &Request<R>,
        parse: fn(&R) -> Result<Q, Error>,
    ) -> Result<(Q, Option<P>, Begun), Error> {
        let caller = Caller::of(request)?;
        let query = parse(request.get_ref())?;
        let deadline = deadline_of(request.metadata());
        let request = request.get_ref();
        let newest = self.store.last_sequence();
        let as_of = request.as_of_sequence();
        if as_of > newest {
            return Err(Error::OutOfRange(format!(
                "as_of_sequence {as_of} is after the newest durable sequence {newest}"
            )));
        }
        let fingerprint = request.fingerprint();
        let (sequence, after) = if request.resume_after().is_empty() {
            (if as_of == 0 { newest } else { as_of }, None)
        } else {
            let c = cursor::decode::<P>(request.resume_after()).map_err(|r| match r {
                Refused::NotACursor => bad_cursor("is not a cursor of this call"),
                Refused::BadPosition => bad_cursor("is not a valid cursor"),
            })?;
            if c.fingerprint != fingerprint {
                return Err(bad_cursor(
                    "belongs to a different request: send the same request with the cursor",
                ));
            }
            if as_of != 0 && as_of != c.snapshot {
                return Err(bad_cursor("pins another as_of_sequence than the request's"));
            }
            if c.snapshot > newest {
                return Err(bad_cursor("is from the future"));
            }
            (c.snapshot, Some(c.position))
        };
        if self.shutdown.is_shutdown() {
            return Err(Error::ShuttingDown(Retry::Later));
        }
        let own = caller.query_stream()?;
        let permit = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "{} query streams are running, the most allowed (--max-query-streams); retry later",
                self.limits.max_streams
            ))
        })?;
        tracing::debug!(snapshot = sequence, resuming = after.is_some(), "begun");
        let call = Begun {
            snapshot: Snapshot {
                sequence,
                fingerprint,
            },
            deadline,
            permit,
            own,
        };
        Ok((query, after, call))
    }

    /// Spawns the producer: runs `next_chunk` until it returns `Ok(None)`,
    /// sending each message while the client reads; stops when the client
    /// leaves, and ends the stream with DEADLINE_EXCEEDED or UNAVAILABLE after
    /// the messages already queued when the deadline passes or the server
    /// shuts down, or with RESOURCE_EXHAUSTED when the client has accepted
    /// nothing for the stall timeout (its slot goes to others).
    pub(super) fn stream<T: Message + Send + 'static>(
        &self,
        call: Begun,
        mut next_chunk: impl FnMut(&Views, &Snapshot) -> Chunk<T> + Send + 'static,
    ) -> Answer<T> {
        // Bounded by messages and by their encoded bytes (both settings): a
        // client that does not read holds at most this much in memory, and
        // its producer waits in `send` below.
        let (producer, answer) = stream::channel(
            self.limits.stream_buffer,
            Some(self.limits.stream_buffer_bytes),
        );
        let views = Arc::clone(&self.views);
        let mut shutdown = self.shutdown.clone();
        let stall = self.limits.stall_timeout;
        let Begun {
            snapshot,
            deadline,
            permit,
            own,
        } = call;
        let task = async move {
            let _slots = (permit, own);
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expired);
            let shutting_down = || Error::ShuttingDown(Retry::ResumeFromCursor).into();
            let stalled = || {
                Error::Stalled {
                    after: stall,
                    retry: Retry::ResumeFromCursor,
                }
                .into()
            };
            loop {
                // Checked here too: while the client keeps up, messages never
                // wait in the `select!` below.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return producer.fail(Error::DeadlineExceeded.into());
                }
                if shutdown.is_shutdown() {
                    return producer.fail(shutting_down());
                }
                let items = match next_chunk(&views, &snapshot) {
                    Ok(Some(items)) => items,
                    Ok(None) => return,
                    Err(e) => return producer.fail(e.into()),
                };
                for item in items {
                    let bytes = item.encoded_len();
                    // Room in the buffer: no waiting, nothing to race.
                    let item = match producer.try_send(item, bytes) {
                        Ok(()) => continue,
                        Err(TrySend::Closed) => return,
                        Err(TrySend::Full(item)) => item,
                    };
                    // The buffer is full: the client is not reading.
                    tokio::select! {
                        sent = producer.send(item, bytes) => if sent.is_err() { return },
                        _ = &mut expired => return producer.fail(Error::DeadlineExceeded.into()),
                        _ = shutdown.wait() => return producer.fail(shutting_down()),
                        _ = tokio::time::sleep(stall) => return producer.fail(stalled()),
                    }
                }
                tokio::task::yield_now().await;
            }
        };
        self.tasks.spawn(task.in_current_span());
        answer
    }
}
