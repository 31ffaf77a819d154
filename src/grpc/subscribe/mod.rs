//! The `SubscriptionService`: catch-up then live, filtered, resumable event
//! streams with backpressure.
//!
//! A subscription is one task with a cursor (the last sequence it examined).
//! It always reads forward from its cursor up to the newest durable sequence —
//! from the shared ring of recent events (`recent`) when the cursor is inside
//! it, else from the log — so history and live events are one sequence with no
//! seam, and only durable events are seen. It sends through a bounded channel
//! and simply waits while the client does not read: a slow subscriber falls
//! behind and catches up from the log, holding at most its channel's messages
//! and one read batch; nothing else waits for it. Idle subscriptions wait on
//! the store's durable-sequence watch.
//!
//! The handler reads in three steps: parse (`request`), begin (a slot),
//! stream (the task, which filters with `filter` and renders with `render`).
//!
//! Depends on the store facade, the views (a status change matches through its
//! agreement), `convert` and the generated code; never on sled.

mod filter;
mod recent;
mod render;
mod request;

pub(crate) use recent::Recent;

use crate::error::{Error, Retry};
use crate::grpc::access::Caller;
use crate::grpc::shutdown::Shutdown;
use crate::grpc::stream::{self, Answer};
use crate::ops::cursors::{Cursor, Cursors};
use crate::proto::v1 as pb;
use crate::proto::v1::subscription_service_server::SubscriptionService;
use crate::storage::StoreHandle;
use crate::views::Views;
use filter::Filter;
use recent::Subscribed;
use render::MessageBuilder;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::Instrument;

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
    /// A subscription whose client accepts nothing for this long is ended
    /// and its slot released.
    pub stall_timeout: Duration,
}

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
            stall_timeout: crate::grpc::query::DEFAULT_STALL_TIMEOUT,
        }
    }
}

pub(crate) struct SubscribeApi {
    store: StoreHandle,
    views: Arc<Views>,
    recent: Arc<Recent>,
    limits: SubscribeLimits,
    /// The `--max-subscriptions` slots: a subscription takes one without
    /// waiting (RESOURCE_EXHAUSTED when none is free) and its task holds it
    /// until the subscription ends.
    slots: Arc<Semaphore>,
    shutdown: Shutdown,
    /// The running subscription tasks, which the server waits for at shutdown.
    tasks: TaskTracker,
    /// Every running subscription's cursor, for the lag metric.
    cursors: Arc<Cursors>,
}

impl SubscribeApi {
    pub(crate) fn new(
        store: StoreHandle,
        views: Arc<Views>,
        recent: Arc<Recent>,
        shutdown: Shutdown,
        tasks: TaskTracker,
        limits: SubscribeLimits,
        cursors: Arc<Cursors>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(limits.max_subscriptions.max(1)));
        SubscribeApi {
            store,
            views,
            recent,
            limits,
            slots,
            shutdown,
            tasks,
            cursors,
        }
    }
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
    /// `cursor`, as the lag metric reads it.
    position: Cursor,
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
        // Matching events up to a full message; the cursor moves only over
        // what this message covers.
        let mut message = MessageBuilder::default();
        let mut last = self.cursor;
        for e in &batch {
            last = e.sequence;
            if self.filter.matches(e, &self.views) && !message.push(e) {
                break;
            }
        }
        *unreported += last - self.cursor;
        self.cursor = last;
        self.position.set(last);
        if !message.is_empty()
            || *unreported >= self.limits.checkpoint_events
            || last_sent.elapsed() >= self.limits.checkpoint_interval
        {
            return Ok(Step::Send(message.finish(last)));
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
            return Err(Error::ShuttingDown(Retry::Later).into());
        }
        let caller = Caller::of(&request)?;
        // 1. parse
        let request::Subscribe { after, filter } =
            request::parse(request.get_ref(), self.store.last_sequence())?;
        // 2. begin: a slot of the caller's quota, a slot of the server's and
        // the ring's interest, all held by the task
        let own = caller.subscription()?;
        let permit: OwnedSemaphorePermit =
            Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
                Error::ResourceExhausted(format!(
                    "{} subscriptions are running, the most allowed (--max-subscriptions); retry later",
                    self.limits.max_subscriptions
                ))
            })?;
        let subscribed = Subscribed::new(&self.recent);
        // 3. stream. At most `--subscription-buffer` messages wait for the
        // client; then the task waits in `send` and falls behind the ring, to
        // catch up from the log later. Nothing else waits for it.
        let (producer, answer) = stream::channel(self.limits.buffer, None);
        let mut sub = Subscription {
            store: self.store.clone(),
            views: Arc::clone(&self.views),
            recent: Arc::clone(&self.recent),
            filter,
            limits: self.limits.clone(),
            cursor: after,
            position: self.cursors.open(after),
        };
        let mut shutdown = self.shutdown.clone();
        // Wakes the task when new events are durable; only the newest
        // sequence is kept, so the publisher never waits for it.
        let mut durable = self.store.watch_durable();
        let stall = self.limits.stall_timeout;
        let task = async move {
            // Held for the subscription's life: its slots and its ring interest.
            let _own = own;
            let _permit = permit;
            let _subscribed = subscribed;
            let mut unreported = 0u64;
            let mut last_sent = Instant::now();
            loop {
                let step = match sub.step(&mut unreported, last_sent) {
                    Ok(step) => step,
                    Err(e) => return producer.fail(e.into()),
                };
                match step {
                    Step::Send(message) => {
                        tokio::select! {
                            sent = producer.send(message, 0) => if sent.is_err() { return },
                            _ = shutdown.wait() => return producer.fail(unavailable()),
                            _ = tokio::time::sleep(stall) => return producer.fail(stalled(stall)),
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
                                let message = render::checkpoint(sub.cursor);
                                tokio::select! {
                                    sent = producer.send(message, 0) => if sent.is_err() { return },
                                    _ = tokio::time::sleep(stall) => return producer.fail(stalled(stall)),
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
        };
        self.tasks.spawn(task.in_current_span());
        Ok(Response::new(answer))
    }
}

fn unavailable() -> Status {
    Error::ShuttingDown(Retry::ResubscribeFromCheckpoint).into()
}

fn stalled(after: Duration) -> Status {
    Error::Stalled {
        after,
        retry: Retry::ResubscribeFromCheckpoint,
    }
    .into()
}
