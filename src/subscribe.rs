//! The `SubscriptionService`: catch-up then live, filtered, resumable event
//! streams with backpressure.
//!
//! A subscription is one task with a cursor (the last sequence it examined).
//! It always reads forward from its cursor up to the newest durable sequence —
//! from the shared ring of recent events when the cursor is inside it, else
//! from the log — so history and live events are one sequence with no seam, and
//! only durable events are seen. It sends through a bounded channel and simply
//! waits while the client does not read: a slow subscriber falls behind and
//! catches up from the log, holding at most its channel's messages and one read
//! batch; nothing else waits for it. Idle subscriptions wait on the store's
//! durable-sequence watch.
//!
//! Depends on the store facade, the views (a status change matches through its
//! agreement), `convert` and the generated code; never on sled.

use crate::convert;
use crate::domain::{Country, FieldViolation, Payload, Sector, StoredEvent};
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::proto::v1::subscription_service_server::SubscriptionService;
use crate::shutdown::Shutdown;
use crate::storage::StoreHandle;
use crate::stream::{self, Answer};
use crate::views::{scope_sector, Views};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Limits of subscriptions (settings of `caravan serve`).
#[derive(Clone, Debug)]
pub struct SubscribeLimits {
    /// Subscriptions running at once; RESOURCE_EXHAUSTED beyond.
    pub max_subscriptions: usize,
    /// Messages buffered per subscription before it waits for its client.
    pub buffer: usize,
    /// Events read (and at most sent) per step and per message.
    pub batch: usize,
    /// Recent events kept in memory for live subscribers.
    pub recent_events: usize,
    /// A checkpoint-only message goes out after this many filtered-out events …
    pub checkpoint_events: u64,
    /// … or after this long, whichever comes first.
    pub checkpoint_interval: Duration,
}

/// A message is closed once its events reach this many encoded bytes.
const MESSAGE_BYTES: usize = 1024 * 1024;

/// Default: 256 subscriptions.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;
/// Default: 16 messages per subscription.
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 16;
/// Default: 1,024 events per read and per message.
pub const DEFAULT_SUBSCRIPTION_BATCH: usize = 1024;
/// Default: 8,192 recent events in memory (at most ~32 MiB even if every
/// event had the largest size allowed).
pub const DEFAULT_RECENT_EVENTS: usize = 8_192;

impl Default for SubscribeLimits {
    fn default() -> Self {
        SubscribeLimits {
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            buffer: DEFAULT_SUBSCRIPTION_BUFFER,
            batch: DEFAULT_SUBSCRIPTION_BATCH,
            recent_events: DEFAULT_RECENT_EVENTS,
            checkpoint_events: 10_000,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// The most recent durable events, shared by all subscriptions so that live
/// subscribers do not each read and decode them from the log. Filled only
/// while someone subscribes; always a contiguous run of sequences.
pub struct Recent {
    events: RwLock<VecDeque<Arc<StoredEvent>>>,
    capacity: usize,
    subscribers: AtomicUsize,
}

impl Recent {
    pub fn new(capacity: usize) -> Arc<Recent> {
        Arc::new(Recent {
            events: RwLock::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            subscribers: AtomicUsize::new(0),
        })
    }

    /// Keeps copies of durable events, if anyone subscribes.
    pub fn push(&self, batch: &[StoredEvent]) {
        if self.subscribers.load(Ordering::Acquire) == 0 || batch.is_empty() {
            return;
        }
        let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
        if events
            .back()
            .is_some_and(|b| b.sequence + 1 != batch[0].sequence)
        {
            events.clear(); // a pause in feeding: keep the run contiguous
        }
        for e in batch {
            if events.len() == self.capacity {
                events.pop_front();
            }
            events.push_back(Arc::new(e.clone()));
        }
    }

    /// Events `first..` (at most `max`, none past `upto`), if the ring holds
    /// `first`.
    fn from(&self, first: u64, upto: u64, max: usize) -> Option<Vec<Arc<StoredEvent>>> {
        let events = self.events.read().unwrap_or_else(|p| p.into_inner());
        let front = events.front()?.sequence;
        if first < front || first > events.back()?.sequence {
            return None;
        }
        let skip = usize::try_from(first - front).ok()?;
        Some(
            events
                .iter()
                .skip(skip)
                .take_while(|e| e.sequence <= upto)
                .take(max)
                .cloned()
                .collect(),
        )
    }
}

/// Counts a subscriber for as long as it lives.
struct Subscribed(Arc<Recent>);

impl Subscribed {
    fn new(recent: &Arc<Recent>) -> Self {
        recent.subscribers.fetch_add(1, Ordering::AcqRel);
        Subscribed(Arc::clone(recent))
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    TradeRecord,
    TradeRecordRetracted,
    Agreement,
    AgreementStatusChanged,
}

/// What a subscription delivers.
struct Filter {
    kinds: Vec<Kind>,
    countries: Vec<Country>,
    sectors: Vec<Sector>,
}

impl Filter {
    fn matches(&self, e: &StoredEvent, views: &Views) -> bool {
        let (kind, countries, sectors): (Kind, Vec<Country>, Vec<Sector>) = match &e.event.payload {
            Payload::TradeRecord(r) => (
                Kind::TradeRecord,
                vec![r.key.reporter(), r.key.partner()],
                scope_sector(&r.key.commodity).into_iter().collect(),
            ),
            Payload::TradeRecordRetracted(r) => (
                Kind::TradeRecordRetracted,
                vec![r.key.reporter(), r.key.partner()],
                scope_sector(&r.key.commodity).into_iter().collect(),
            ),
            Payload::Agreement(a) => (Kind::Agreement, a.parties().to_vec(), a.sectors().to_vec()),
            Payload::AgreementStatusChanged(c) => {
                if !self.kinds.is_empty() && !self.kinds.contains(&Kind::AgreementStatusChanged) {
                    return false;
                }
                if self.countries.is_empty() && self.sectors.is_empty() {
                    return true;
                }
                match views.read().agreement_at(&c.agreement_id, e.sequence) {
                    Some(a) => (
                        Kind::AgreementStatusChanged,
                        a.parties().to_vec(),
                        a.sectors().to_vec(),
                    ),
                    None => return false,
                }
            }
        };
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.countries.is_empty() || countries.iter().any(|c| self.countries.contains(c)))
            && (self.sectors.is_empty() || sectors.iter().any(|s| self.sectors.contains(s)))
    }
}

pub struct SubscribeApi {
    store: StoreHandle,
    views: Arc<Views>,
    recent: Arc<Recent>,
    limits: SubscribeLimits,
    slots: Arc<Semaphore>,
    shutdown: Shutdown,
}

impl SubscribeApi {
    pub fn new(
        store: StoreHandle,
        views: Arc<Views>,
        recent: Arc<Recent>,
        shutdown: Shutdown,
        limits: SubscribeLimits,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(limits.max_subscriptions.max(1)));
        SubscribeApi {
            store,
            views,
            recent,
            limits,
            slots,
            shutdown,
        }
    }
}

fn parse(req: &pb::SubscribeRequest, newest: u64) -> Result<(u64, Filter), Error> {
    let mut bad = Vec::new();
    let start = match req.start {
        None => {
            bad.push(FieldViolation::new(
                "start",
                "is required: from_beginning, after_sequence or from_now",
            ));
            0
        }
        Some(pb::subscribe_request::Start::FromBeginning(_)) => 0,
        Some(pb::subscribe_request::Start::FromNow(_)) => newest,
        Some(pb::subscribe_request::Start::AfterSequence(s)) => {
            if s > newest {
                return Err(Error::OutOfRange(format!(
                    "after_sequence {s} is after the newest durable sequence {newest}"
                )));
            }
            s
        }
    };
    let mut kinds = Vec::new();
    for (i, k) in req.kinds.iter().enumerate() {
        match pb::EventKind::try_from(*k) {
            Ok(pb::EventKind::TradeRecord) => kinds.push(Kind::TradeRecord),
            Ok(pb::EventKind::TradeRecordRetracted) => kinds.push(Kind::TradeRecordRetracted),
            Ok(pb::EventKind::Agreement) => kinds.push(Kind::Agreement),
            Ok(pb::EventKind::AgreementStatusChanged) => kinds.push(Kind::AgreementStatusChanged),
            _ => bad.push(FieldViolation::new(
                format!("kinds[{i}]"),
                "is not a known event kind",
            )),
        }
    }
    let mut countries = Vec::new();
    for (i, c) in req.countries.iter().enumerate() {
        match Country::parse(c) {
            Ok(c) => countries.push(c),
            Err(d) => bad.push(FieldViolation::new(format!("countries[{i}]"), d)),
        }
    }
    let mut sectors = Vec::new();
    for (i, s) in req.sectors.iter().enumerate() {
        match convert::sector(*s) {
            Ok(s) => sectors.push(s),
            Err(d) => bad.push(FieldViolation::new(format!("sectors[{i}]"), d)),
        }
    }
    if !bad.is_empty() {
        return Err(Error::InvalidArgument(bad));
    }
    Ok((
        start,
        Filter {
            kinds,
            countries,
            sectors,
        },
    ))
}

/// One running subscription.
struct Subscription {
    store: StoreHandle,
    views: Arc<Views>,
    recent: Arc<Recent>,
    filter: Filter,
    limits: SubscribeLimits,
    /// The last sequence examined.
    cursor: u64,
}

enum Step {
    /// Send this message (events and/or checkpoint).
    Send(pb::SubscribeResponse),
    /// Examined events without anything to send yet.
    Examined,
    /// Caught up with the newest durable event.
    CaughtUp,
}

impl Subscription {
    /// Reads the next batch after the cursor and filters it.
    fn step(&mut self, unreported: &mut u64, last_sent: Instant) -> Result<Step, Error> {
        let newest = self.store.last_sequence();
        if self.cursor >= newest {
            return Ok(Step::CaughtUp);
        }
        let batch = match self.recent.from(self.cursor + 1, newest, self.limits.batch) {
            Some(events) if !events.is_empty() => events,
            _ => self
                .store
                .events_after(self.cursor, self.limits.batch)?
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        if batch.is_empty() {
            return Ok(Step::CaughtUp);
        }
        // Matching events up to about MESSAGE_BYTES; the cursor moves only
        // over what this message covers.
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut last = self.cursor;
        for e in &batch {
            last = e.sequence;
            if self.filter.matches(e, &self.views) {
                let wire = convert::pb_stored_event(e);
                bytes += prost::Message::encoded_len(&wire);
                events.push(wire);
                if bytes >= MESSAGE_BYTES {
                    break;
                }
            }
        }
        *unreported += last - self.cursor;
        self.cursor = last;
        if !events.is_empty()
            || *unreported >= self.limits.checkpoint_events
            || last_sent.elapsed() >= self.limits.checkpoint_interval
        {
            return Ok(Step::Send(pb::SubscribeResponse {
                events,
                checkpoint: last,
            }));
        }
        Ok(Step::Examined)
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscribeApi {
    type SubscribeStream = Answer<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if self.shutdown.is_shutdown() {
            return Err(Error::Unavailable("the server is shutting down".into()).into());
        }
        let (start, filter) = parse(request.get_ref(), self.store.last_sequence())?;
        let permit: OwnedSemaphorePermit =
            Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
                Error::ResourceExhausted(format!(
                    "{} subscriptions are running, the most allowed (--max-subscriptions); retry later",
                    self.limits.max_subscriptions
                ))
            })?;
        let subscribed = Subscribed::new(&self.recent);
        let (producer, answer) = stream::channel(self.limits.buffer, None);
        let mut sub = Subscription {
            store: self.store.clone(),
            views: Arc::clone(&self.views),
            recent: Arc::clone(&self.recent),
            filter,
            limits: self.limits.clone(),
            cursor: start,
        };
        let mut shutdown = self.shutdown.clone();
        let mut durable = self.store.watch_durable();
        tokio::spawn(async move {
            // Held for the subscription's life: its slot and its ring interest.
            let _permit = permit;
            let _subscribed = subscribed;
            let mut unreported = 0u64;
            let mut last_sent = Instant::now();
            loop {
                let step = match sub.step(&mut unreported, last_sent) {
                    Ok(step) => step,
                    Err(e) => return producer.fail(e.into_status()),
                };
                match step {
                    Step::Send(message) => {
                        tokio::select! {
                            sent = producer.send(message, 0) => if sent.is_err() { return },
                            _ = shutdown.wait() => return producer.fail(unavailable()),
                        }
                        unreported = 0;
                        last_sent = Instant::now();
                    }
                    Step::Examined => tokio::task::yield_now().await,
                    Step::CaughtUp => {
                        let checkpoint_due = async {
                            if unreported == 0 {
                                std::future::pending::<()>().await;
                            }
                            tokio::time::sleep_until(last_sent + sub.limits.checkpoint_interval)
                                .await;
                        };
                        tokio::select! {
                            changed = durable.changed() => if changed.is_err() {
                                return producer.fail(unavailable());
                            },
                            _ = checkpoint_due => {
                                let message = pb::SubscribeResponse { events: Vec::new(), checkpoint: sub.cursor };
                                if producer.send(message, 0).await.is_err() {
                                    return;
                                }
                                unreported = 0;
                                last_sent = Instant::now();
                            }
                            _ = shutdown.wait() => return producer.fail(unavailable()),
                            _ = producer.closed() => return,
                        }
                    }
                }
            }
        });
        Ok(Response::new(answer))
    }
}

fn unavailable() -> Status {
    Status::unavailable(
        "the server is shutting down; resubscribe with after_sequence = the last checkpoint",
    )
}
