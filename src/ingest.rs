//! The `IngestService`: Append (a batch, all or nothing), AppendStream (one
//! answer per event, pipelined with a bounded window) and LookupEvents.
//!
//! Handlers stay thin: parse the wire messages into domain events (`convert`),
//! hand them to the store, and turn outcomes into wire answers; errors become
//! statuses or rejections only through `error`. Must not depend on sled.

use crate::convert;
use crate::domain::{EventId, FieldViolation};
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_server::IngestService;
use crate::shutdown::Shutdown;
use crate::storage::{Outcome, Prepared, StoreHandle};
use crate::stream::{self, Answer};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

/// Limits of the ingest API (all documented settings of `caravan serve`).
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// Most events in one Append request.
    pub max_batch_events: usize,
    /// Most events one AppendStream may have in flight (read, not answered).
    pub stream_window: usize,
    /// Most ids, and most sequences, in one LookupEvents request.
    pub max_lookup: usize,
    /// How long an AppendStream may take, after shutdown begins, to answer
    /// what it has read before it ends with UNAVAILABLE regardless.
    pub drain_deadline: Duration,
}

/// Default: 10,000 events per Append.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 10_000;
/// Default: 1,024 events in flight per AppendStream.
pub const DEFAULT_STREAM_WINDOW: usize = 1024;
/// Default: 1,000 ids and 1,000 sequences per LookupEvents.
pub const DEFAULT_MAX_LOOKUP: usize = 1000;

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            stream_window: DEFAULT_STREAM_WINDOW,
            max_lookup: DEFAULT_MAX_LOOKUP,
            drain_deadline: Duration::from_secs(5),
        }
    }
}

pub struct IngestApi {
    store: StoreHandle,
    shutdown: Shutdown,
    limits: IngestLimits,
}

impl IngestApi {
    pub fn new(store: StoreHandle, shutdown: Shutdown, limits: IngestLimits) -> Self {
        IngestApi {
            store,
            shutdown,
            limits,
        }
    }

    fn refuse_when_shutting_down(&self) -> Result<(), Status> {
        if self.shutdown.is_shutdown() {
            return Err(Error::Unavailable("the server is shutting down".into()).into());
        }
        Ok(())
    }
}

fn ack(event_id: String, o: Outcome) -> pb::Ack {
    pb::Ack {
        event_id,
        sequence: o.sequence,
        duplicate: o.duplicate,
    }
}

fn parse_one(event: Option<&pb::Event>) -> Result<Prepared, Error> {
    let event = event
        .ok_or_else(|| Error::InvalidArgument(vec![FieldViolation::new("", "is required")]))?;
    convert::parse_event(event)
        .map(Prepared::new)
        .map_err(Error::InvalidArgument)
}

/// One event of an AppendStream on its way to an answer, kept in order.
enum Pending {
    Answered(pb::AppendStreamResponse),
    Waiting {
        index: u64,
        event_id: String,
        outcome: oneshot::Receiver<Result<Vec<Outcome>, Error>>,
    },
    /// Ends the stream with this status after everything before it.
    End(Status),
}

fn rejection(index: u64, event_id: String, e: Error) -> Result<pb::AppendStreamResponse, Status> {
    let r = e.into_rejection()?;
    Ok(pb::AppendStreamResponse {
        index,
        event_id,
        result: Some(pb::append_stream_response::Result::Rejection(r)),
    })
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        self.refuse_when_shutting_down()?;
        let events = request.into_inner().events;
        if events.is_empty() {
            return Err(Error::InvalidArgument(vec![FieldViolation::new(
                "events",
                "at least one event is required",
            )])
            .into());
        }
        if events.len() > self.limits.max_batch_events {
            return Err(Error::InvalidArgument(vec![FieldViolation::new(
                "events",
                format!(
                    "at most {} events per request; got {} (split the batch or use AppendStream)",
                    self.limits.max_batch_events,
                    events.len()
                ),
            )])
            .into());
        }
        let mut violations = Vec::new();
        let mut prepared = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            match convert::parse_event(e) {
                Ok(event) => prepared.push(Prepared::new(event)),
                Err(vs) => {
                    let prefix = format!("events[{i}]");
                    violations.extend(vs.into_iter().map(|v| v.nested(&prefix)));
                }
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let outcomes = self.store.append(prepared).await?;
        let acks = events
            .into_iter()
            .zip(outcomes)
            .map(|(e, o)| ack(e.event_id, o))
            .collect();
        Ok(Response::new(pb::AppendResponse { acks }))
    }

    type AppendStreamStream = Answer<pb::AppendStreamResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        self.refuse_when_shutting_down()?;
        let mut inbound = request.into_inner();
        let window = self.limits.stream_window.max(1);
        // Both channels are bounded by the window: when the client stops
        // reading answers, the responder stops, then the reader stops reading.
        let (out, answer) = stream::channel(window, None);
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(window);
        let store = self.store.clone();
        let mut shutdown = self.shutdown.clone();
        let drain_deadline = self.limits.drain_deadline;

        // Reader: parses events and queues them on the store, in order.
        tokio::spawn(async move {
            let mut index = 0u64;
            loop {
                let next = tokio::select! {
                    biased;
                    _ = shutdown.wait() => {
                        let _ = pending_tx.send(Pending::End(Status::unavailable(
                            "the server is shutting down; re-send the events that were not acknowledged",
                        ))).await;
                        return;
                    }
                    next = inbound.message() => next,
                };
                let request = match next {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(%status, "append stream: client error");
                        return;
                    }
                };
                let event_id = request
                    .event
                    .as_ref()
                    .map(|e| e.event_id.clone())
                    .unwrap_or_default();
                let pending = match parse_one(request.event.as_ref()) {
                    Err(e) => match rejection(index, event_id, e.nested("event")) {
                        Ok(r) => Pending::Answered(r),
                        Err(status) => Pending::End(status),
                    },
                    Ok(p) => match store.submit(vec![p]).await {
                        Ok(outcome) => Pending::Waiting {
                            index,
                            event_id,
                            outcome,
                        },
                        Err(e) => Pending::End(e.into_status()),
                    },
                };
                let end = matches!(pending, Pending::End(_));
                if pending_tx.send(pending).await.is_err() || end {
                    return;
                }
                index += 1;
            }
        });

        // Responder: answers in request order.
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let deadline = async {
                shutdown.wait().await;
                tokio::time::sleep(drain_deadline).await;
            };
            tokio::pin!(deadline);
            loop {
                let pending = tokio::select! {
                    p = pending_rx.recv() => match p { Some(p) => p, None => return },
                    _ = &mut deadline => {
                        return out.fail(Status::unavailable(
                            "the server is shutting down; re-send the events that were not acknowledged",
                        ));
                    }
                };
                let reply = match pending {
                    Pending::Answered(r) => Ok(r),
                    Pending::End(status) => Err(status),
                    Pending::Waiting {
                        index,
                        event_id,
                        outcome,
                    } => match outcome.await {
                        Ok(Ok(outcomes)) => match outcomes.first() {
                            Some(o) => Ok(pb::AppendStreamResponse {
                                index,
                                event_id: event_id.clone(),
                                result: Some(pb::append_stream_response::Result::Ack(ack(
                                    event_id, *o,
                                ))),
                            }),
                            None => Err(Status::internal("no outcome for an event")),
                        },
                        Ok(Err(e)) => rejection(index, event_id, e),
                        Err(_) => Err(Status::unavailable("the store closed")),
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
        });
        Ok(Response::new(answer))
    }

    async fn lookup_events(
        &self,
        request: Request<pb::LookupEventsRequest>,
    ) -> Result<Response<pb::LookupEventsResponse>, Status> {
        let req = request.into_inner();
        let max = self.limits.max_lookup;
        let mut violations = Vec::new();
        if req.event_ids.is_empty() && req.sequences.is_empty() {
            violations.push(FieldViolation::new(
                "event_ids",
                "give at least one event id or sequence",
            ));
        }
        if req.event_ids.len() > max {
            violations.push(FieldViolation::new(
                "event_ids",
                format!("at most {max} per request; got {}", req.event_ids.len()),
            ));
        }
        if req.sequences.len() > max {
            violations.push(FieldViolation::new(
                "sequences",
                format!("at most {max} per request; got {}", req.sequences.len()),
            ));
        }
        let mut ids = Vec::with_capacity(req.event_ids.len());
        for (i, id) in req.event_ids.iter().enumerate() {
            match EventId::parse(id) {
                Ok(id) => ids.push(id),
                Err(d) => violations.push(FieldViolation::new(format!("event_ids[{i}]"), d)),
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let store = self.store.clone();
        let sequences = req.sequences;
        let response = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let last_sequence = store.last_sequence();
            let mut out = pb::LookupEventsResponse {
                last_sequence,
                ..Default::default()
            };
            for id in ids {
                match store.event_by_id(&id)? {
                    Some(e) => out.events.push(convert::pb_stored_event(&e)),
                    None => out.missing_event_ids.push(id.as_str().to_owned()),
                }
            }
            for seq in sequences {
                match store.event_at(seq)? {
                    Some(e) if seq <= last_sequence => {
                        out.events.push(convert::pb_stored_event(&e))
                    }
                    _ => out.missing_sequences.push(seq),
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("lookup task: {e}")))??;
        Ok(Response::new(response))
    }
}
