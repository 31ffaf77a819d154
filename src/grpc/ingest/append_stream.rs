//! AppendStream: one answer per event, in request order, pipelined with a
//! bounded window.
//!
//! Two tasks per stream. The reader parses each event and queues it on the
//! store (or answers a bad one at once); the responder awaits each queued
//! event's outcome and answers in order. Both channels between the client,
//! the reader, the responder and the response are bounded by the window, so a
//! client that stops reading answers stops the responder, then the reader,
//! then the server stops reading the client's stream.
//!
//! At shutdown the reader stops reading; the responder answers what was read
//! (for at most the drain deadline), then ends the stream with UNAVAILABLE.
//!
//! Depends on the store handle, `request`, `status` and the generated code.

use super::request;
use crate::auth::Identity;
use crate::error::{Error, Retry};
use crate::grpc::shutdown::Shutdown;
use crate::grpc::status;
use crate::grpc::stream::{self, Answer};
use crate::ops::metrics::{FeedCounters, Metrics};
use crate::proto::v1 as pb;
use crate::storage::{self, StoreHandle};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tonic::{Status, Streaming};
use tracing::Instrument;

/// One event of an AppendStream on its way to an answer, kept in order.
enum Pending {
    Answered(pb::AppendStreamResponse),
    Waiting {
        index: u64,
        event_id: String,
        /// The counters of the event's feed, for the metrics.
        feed: Arc<FeedCounters>,
        outcome: storage::Answer,
    },
    /// Ends the stream with this status after everything before it.
    End(Status),
}

/// What the stream's tasks need.
pub(super) struct Stream {
    /// Who sends the events: their author, the feeds it may write, and the
    /// rates that pace its reading.
    pub caller: Arc<Identity>,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    pub tasks: TaskTracker,
    pub window: usize,
    pub drain_deadline: Duration,
}

fn shutting_down() -> Status {
    Error::ShuttingDown(Retry::ResendUnacknowledged).into()
}

fn rejection(index: u64, event_id: String, e: Error) -> Result<pb::AppendStreamResponse, Status> {
    let r = status::rejection(e)?;
    Ok(pb::AppendStreamResponse {
        index,
        event_id,
        result: Some(pb::append_stream_response::Result::Rejection(r)),
    })
}

impl Stream {
    /// Starts the reader and the responder; returns the response stream.
    pub(super) fn start(
        self,
        inbound: Streaming<pb::AppendStreamRequest>,
    ) -> Answer<pb::AppendStreamResponse> {
        let window = self.window.max(1);
        // Answers waiting for the client: at most a window of them.
        let (out, answer) = stream::channel(window, None);
        // Events read but not answered: at most a window of them, so the
        // reader stops reading when the responder (or the client) is behind.
        let (pending_tx, pending_rx) = mpsc::channel::<Pending>(window);
        let reader = read(
            inbound,
            self.caller,
            self.store,
            Arc::clone(&self.metrics),
            self.shutdown.clone(),
            pending_tx,
        );
        let responder = respond(
            pending_rx,
            out,
            self.metrics,
            self.shutdown,
            self.drain_deadline,
        );
        self.tasks.spawn(reader.in_current_span());
        self.tasks.spawn(responder.in_current_span());
        answer
    }
}

/// Parses events and queues them on the store, in order. A caller over its
/// append rates is paced: the next message is read only once it fits, and
/// HTTP/2 flow control holds the client back meanwhile.
async fn read(
    mut inbound: Streaming<pb::AppendStreamRequest>,
    caller: Arc<Identity>,
    store: StoreHandle,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
    pending_tx: mpsc::Sender<Pending>,
) {
    let author = super::author(&caller);
    let mut index = 0u64;
    // The feed of the last event and its counters.
    let mut counters: Option<(String, Arc<FeedCounters>)> = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.wait() => {
                let _ = pending_tx.send(Pending::End(shutting_down())).await;
                return;
            }
            next = inbound.message() => next,
        };
        let request = match next {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%status, "append stream: the request stream failed");
                // Answered after everything read before it, unless the
                // client is gone.
                if let Some(end) = status::request_stream_failed(status) {
                    let _ = pending_tx.send(Pending::End(end)).await;
                }
                return;
            }
        };
        loop {
            match caller.pace_append(1, request.encoded_len() as u64) {
                Ok(None) => break,
                Ok(Some(wait)) => {
                    tokio::select! {
                        biased;
                        _ = shutdown.wait() => {
                            let _ = pending_tx.send(Pending::End(shutting_down())).await;
                            return;
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => {
                    let _ = pending_tx.send(Pending::End(e.into())).await;
                    return;
                }
            }
        }
        let event_id = request
            .event
            .as_ref()
            .map(|e| e.event_id.clone())
            .unwrap_or_default();
        let pending = match request::stream_event(request.event.as_ref(), &caller) {
            Err(e) => {
                let feed = request
                    .event
                    .as_ref()
                    .and_then(|ev| super::feed_label(&ev.feed));
                metrics.rejected(feed, status::reason(&e), 1);
                match rejection(index, event_id, e) {
                    Ok(r) => Pending::Answered(r),
                    Err(status) => Pending::End(status),
                }
            }
            Ok(p) => {
                // A stream is mostly of one feed: its counters are looked
                // up once per feed it changes to, not once per event.
                let name = p.event().feed.as_str();
                let feed = match &counters {
                    Some((last, c)) if last == name => Arc::clone(c),
                    _ => {
                        let c = metrics.feed(name);
                        counters = Some((name.to_owned(), Arc::clone(&c)));
                        c
                    }
                };
                match store.submit(vec![p], author.clone()).await {
                    Ok(outcome) => {
                        tracing::debug!(index, "parsed; queued for the writer");
                        Pending::Waiting {
                            index,
                            event_id,
                            feed,
                            outcome,
                        }
                    }
                    Err(e) => Pending::End(e.into()),
                }
            }
        };
        let end = matches!(pending, Pending::End(_));
        if pending_tx.send(pending).await.is_err() || end {
            return;
        }
        index += 1;
    }
}

/// Answers in request order.
async fn respond(
    mut pending_rx: mpsc::Receiver<Pending>,
    out: stream::Producer<pb::AppendStreamResponse>,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
    drain_deadline: Duration,
) {
    let deadline = async {
        shutdown.wait().await;
        tokio::time::sleep(drain_deadline).await;
    };
    tokio::pin!(deadline);
    loop {
        let pending = tokio::select! {
            p = pending_rx.recv() => match p { Some(p) => p, None => return },
            _ = &mut deadline => return out.fail(shutting_down()),
        };
        let reply = match pending {
            Pending::Answered(r) => Ok(r),
            Pending::End(status) => Err(status),
            Pending::Waiting {
                index,
                event_id,
                feed,
                outcome,
            } => match outcome.await {
                Ok(Ok(outcomes)) => match outcomes.first() {
                    Some(o) => {
                        feed.count(u64::from(!o.duplicate), u64::from(o.duplicate));
                        Ok(pb::AppendStreamResponse {
                            index,
                            event_id: event_id.clone(),
                            result: Some(pb::append_stream_response::Result::Ack(super::ack(
                                event_id, *o,
                            ))),
                        })
                    }
                    None => Err(Error::Internal(
                        "the writer answered no outcome for an event".into(),
                    )
                    .into()),
                },
                Ok(Err(e)) => {
                    metrics.rejected(Some(feed.feed()), status::reason(&e), 1);
                    rejection(index, event_id, e)
                }
                // The writer dropped the request unanswered: it is closing.
                Err(_) => Err(shutting_down()),
            },
        };
        match reply {
            Ok(response) => {
                if out.send(response, 0).await.is_err() {
                    return;
                }
            }
            Err(status) => return out.fail(status),
        }
    }
}
