//! The `IngestService`: Append (a batch, all or nothing), AppendStream (one
//! answer per event, pipelined with a bounded window; `append_stream`) and
//! LookupEvents.
//!
//! Handlers stay thin: charge the caller's quota, parse the wire messages
//! into domain events under the feeds the caller may write (`request`), hand
//! them to the store with the caller as their author, and turn outcomes into
//! wire answers; errors become statuses or rejections only through
//! `status`. Must not depend on sled.

mod append_stream;
mod request;

use crate::auth::{Identity, Scope};
use crate::convert;
use crate::domain::{FeedName, FieldViolation};
use crate::error::{Error, Retry};
use crate::grpc::access::Caller;
use crate::grpc::shutdown::Shutdown;
use crate::grpc::status;
use crate::grpc::stream::Answer;
use crate::ops::metrics::Metrics;
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_server::IngestService;
use crate::storage::{Author, Outcome, StoreHandle};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
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
        }
    }
}

pub(crate) struct IngestApi {
    store: StoreHandle,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    /// The AppendStream tasks, which the server waits for at shutdown.
    tasks: TaskTracker,
    limits: IngestLimits,
    /// How long an AppendStream may go on answering after shutdown begins.
    drain_deadline: Duration,
}

impl IngestApi {
    pub(crate) fn new(
        store: StoreHandle,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        tasks: TaskTracker,
        limits: IngestLimits,
        drain_deadline: Duration,
    ) -> Self {
        IngestApi {
            store,
            metrics,
            shutdown,
            tasks,
            limits,
            drain_deadline,
        }
    }

    fn refuse_when_shutting_down(&self) -> Result<(), Status> {
        if self.shutdown.is_shutdown() {
            return Err(Error::ShuttingDown(Retry::Later).into());
        }
        Ok(())
    }
}

/// Who the store records as the author of a caller's events, and whether
/// it may overrule the feed that owns what they change.
fn author(caller: &Identity) -> Author {
    Author {
        name: caller.name().cloned(),
        curates: caller.has(Scope::Curate),
    }
}

/// The feed label of an event's raw feed name: itself when it is a valid
/// feed name, else "invalid" (client text never becomes a label as it is).
fn feed_label(raw: &str) -> Option<&str> {
    Some(if FeedName::parse(raw).is_ok() {
        raw
    } else {
        "invalid"
    })
}

/// Counts an Append refused as a whole: every event of it, under the feed
/// of the event the error is about (else of the first event).
fn count_refused(metrics: &Metrics, request: &pb::AppendRequest, e: &Error) {
    let at = status::event_index(e).unwrap_or(0);
    let event = request.events().nth(at).and_then(Result::ok);
    let feed = event.as_ref().and_then(|ev| feed_label(&ev.feed));
    let events = request.len().unwrap_or(0).max(1) as u64;
    metrics.rejected(feed, status::reason(e), events);
}

/// Counts the stored and duplicate events of an answered Append.
fn count_outcomes<'a>(metrics: &Metrics, answered: impl Iterator<Item = (&'a str, Outcome)>) {
    let mut run: Option<(&str, u64, u64)> = None;
    for (feed, o) in answered {
        match &mut run {
            Some((f, new, dup)) if *f == feed => {
                *new += u64::from(!o.duplicate);
                *dup += u64::from(o.duplicate);
            }
            _ => {
                if let Some((f, new, dup)) = run.take() {
                    metrics.appended(f, new, dup);
                }
                run = Some((feed, u64::from(!o.duplicate), u64::from(o.duplicate)));
            }
        }
    }
    if let Some((f, new, dup)) = run {
        metrics.appended(f, new, dup);
    }
}

fn ack(event_id: String, o: Outcome) -> pb::Ack {
    pb::Ack {
        event_id,
        sequence: o.sequence,
        duplicate: o.duplicate,
    }
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        self.refuse_when_shutting_down()?;
        let caller = Caller::of(&request)?;
        // The quota is charged before anything is parsed: a caller over it
        // costs the server only the count of its events.
        let events = request.get_ref().len().unwrap_or(0);
        let parsed = caller
            .charge_append(events as u64, request.get_ref().encoded_len() as u64)
            .and_then(|()| {
                request::append(request.get_ref(), self.limits.max_batch_events, &caller)
            });
        let prepared = match parsed {
            Ok(p) => p,
            Err(e) => {
                count_refused(&self.metrics, request.get_ref(), &e);
                return Err(e.into());
            }
        };
        let ids: Vec<(String, String)> = prepared
            .iter()
            .map(|p| {
                let e = p.event();
                (e.id.as_str().to_owned(), e.feed.as_str().to_owned())
            })
            .collect();
        tracing::debug!(events = prepared.len(), "parsed; queued for the writer");
        let started = std::time::Instant::now();
        let outcomes = match self.store.append(prepared, author(&caller)).await {
            Ok(o) => o,
            Err(e) => {
                count_refused(&self.metrics, request.get_ref(), &e);
                return Err(e.into());
            }
        };
        self.metrics.append_took(started.elapsed());
        // The received bytes are let go before the answer is built.
        drop(request);
        count_outcomes(
            &self.metrics,
            ids.iter()
                .map(|(_, feed)| feed.as_str())
                .zip(outcomes.iter().copied()),
        );
        let acks = ids
            .into_iter()
            .zip(outcomes)
            .map(|((id, _), o)| ack(id, o))
            .collect();
        Ok(Response::new(pb::AppendResponse { acks }))
    }

    type AppendStreamStream = Answer<pb::AppendStreamResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        self.refuse_when_shutting_down()?;
        let caller = Caller::of(&request)?;
        let stream = append_stream::Stream {
            caller,
            store: self.store.clone(),
            metrics: Arc::clone(&self.metrics),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
            window: self.limits.stream_window,
            drain_deadline: self.drain_deadline,
        };
        Ok(Response::new(stream.start(request.into_inner())))
    }

    async fn lookup_events(
        &self,
        request: Request<pb::LookupEventsRequest>,
    ) -> Result<Response<pb::LookupEventsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let lookup = request::lookup(request.into_inner(), self.limits.max_lookup)?;
        let feed = match (&lookup.feed, lookup.ids.is_empty()) {
            (Some(feed), _) => Some(feed.clone()),
            (None, true) => None,
            (None, false) => match caller.only_feed() {
                Some(only) => Some(only.clone()),
                None => {
                    return Err(Error::from(vec![FieldViolation::new(
                        "feed",
                        "is required with event_ids: event ids are unique per feed",
                    )])
                    .into())
                }
            },
        };
        // Without the read scope, a caller sees only the feeds it writes.
        let reads_all = caller.has(Scope::Read);
        let may_see = move |feed: &FeedName| reads_all || caller.may_write(feed);
        if let Some(feed) = feed
            .as_ref()
            .filter(|f| !lookup.ids.is_empty() && !may_see(f))
        {
            return Err(Error::PermissionDenied(format!(
                "this identity may not look up events of feed {feed:?}: it needs the read scope, \
                 or to write that feed"
            ))
            .into());
        }
        let store = self.store.clone();
        // Reads sled: off the async threads.
        let response = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let last_sequence = store.last_sequence();
            let mut out = pb::LookupEventsResponse {
                last_sequence,
                ..Default::default()
            };
            for id in lookup.ids {
                let found = match &feed {
                    Some(feed) => store.event_by_id(feed, &id)?,
                    None => None,
                };
                match found {
                    Some(e) => out.events.push(convert::pb_stored_event(&e)),
                    None => out.missing_event_ids.push(id.as_str().to_owned()),
                }
            }
            for seq in lookup.sequences {
                match store.event_at(seq)? {
                    Some(e) if seq <= last_sequence => {
                        if !may_see(&e.event.feed) {
                            return Err(Error::PermissionDenied(format!(
                                "sequence {seq} holds an event of feed {:?}, which this identity \
                                 may not look up: it needs the read scope, or to write that feed",
                                e.event.feed.as_str()
                            )));
                        }
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
