//! Per-identity quotas: how many query streams and subscriptions an identity
//! may hold at once, and how many events and bytes it may append per
//! second. The limits ([`Quotas`]) come from the server's settings and the
//! auth file; what an identity uses ([`Usage`]) outlives reloads of the
//! file, so a reload neither frees nor forgets slots in use.
//!
//! Rates are a generic cell rate algorithm (a token bucket in one number per
//! rate): each rate keeps the time at which its bucket would be empty again;
//! a request of cost `c` at `r` per second moves it on by `c/r` seconds and
//! is admitted while that time stays within one second of now (the burst is
//! one second's worth). Integer nanoseconds throughout.
//!
//! Depends on std only.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Default most query streams one identity runs at once.
pub const DEFAULT_QUERY_STREAMS: usize = 16;
/// Default most subscriptions one identity holds at once.
pub const DEFAULT_SUBSCRIPTIONS: usize = 64;
/// Default events one identity may append per second.
pub const DEFAULT_APPEND_EVENTS_PER_SEC: u64 = 100_000;
/// Default bytes of append requests one identity may send per second (64 MiB).
pub const DEFAULT_APPEND_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;
/// The smallest bytes-per-second quota: one event of the largest size, with
/// its framing, fits one second.
pub const MIN_APPEND_BYTES_PER_SEC: u64 = 4096;

/// The limits of one identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub query_streams: usize,
    pub subscriptions: usize,
    pub append_events_per_sec: u64,
    pub append_bytes_per_sec: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            query_streams: DEFAULT_QUERY_STREAMS,
            subscriptions: DEFAULT_SUBSCRIPTIONS,
            append_events_per_sec: DEFAULT_APPEND_EVENTS_PER_SEC,
            append_bytes_per_sec: DEFAULT_APPEND_BYTES_PER_SEC,
        }
    }
}

impl Quotas {
    /// Checks that every limit admits something.
    pub fn check(&self) -> Result<(), String> {
        if self.query_streams == 0 || self.subscriptions == 0 || self.append_events_per_sec == 0 {
            return Err("quotas must be at least 1".into());
        }
        if self.append_bytes_per_sec < MIN_APPEND_BYTES_PER_SEC {
            return Err(format!(
                "append_bytes_per_sec must be at least {MIN_APPEND_BYTES_PER_SEC} (one event of the largest size)"
            ));
        }
        Ok(())
    }
}

const SECOND_NANOS: u128 = 1_000_000_000;

/// Nanoseconds since the first call (a monotonic clock).
fn now_nanos() -> u128 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos()
}

/// One rate: when its bucket would be empty again.
#[derive(Default, Debug)]
struct Rate {
    empty_at: u128,
}

impl Rate {
    /// Where the rate would be after a request of `cost` at `per_sec`, or
    /// how long to wait (`None`: the request alone is more than a second's
    /// worth and never fits).
    fn after(&self, now: u128, cost: u64, per_sec: u64) -> Result<u128, Option<Duration>> {
        let per_sec = u128::from(per_sec.max(1));
        let step = (u128::from(cost) * SECOND_NANOS).div_ceil(per_sec);
        if step > SECOND_NANOS {
            return Err(None);
        }
        let next = self.empty_at.max(now) + step;
        let ahead = next - now;
        if ahead > SECOND_NANOS {
            let wait = ahead - SECOND_NANOS;
            return Err(Some(Duration::from_nanos(
                u64::try_from(wait).unwrap_or(u64::MAX),
            )));
        }
        Ok(next)
    }
}

/// Why an append did not fit an identity's rates.
#[derive(Debug, PartialEq, Eq)]
pub enum OverRate {
    /// Retry after this long.
    RetryAfter { what: &'static str, wait: Duration },
    /// The request alone is more than a second of the quota.
    TooLarge { what: &'static str },
}

/// What one identity uses now.
#[derive(Default, Debug)]
pub struct Usage {
    query_streams: AtomicUsize,
    subscriptions: AtomicUsize,
    /// (events, bytes): checked and charged together.
    append: Mutex<(Rate, Rate)>,
    /// Until when (nanoseconds of `now_nanos`) the last refused append was
    /// told to wait: appends that come sooner wait for it, unread.
    hold_until: AtomicU64,
}

/// Which concurrent use a [`Slot`] holds.
#[derive(Clone, Copy, Debug)]
pub enum Held {
    QueryStream,
    Subscription,
}

/// One query stream or subscription of an identity; given back on drop.
#[derive(Debug)]
pub struct Slot {
    usage: Arc<Usage>,
    held: Held,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.usage.counter(self.held).fetch_sub(1, Ordering::AcqRel);
    }
}

impl Usage {
    fn counter(&self, held: Held) -> &AtomicUsize {
        match held {
            Held::QueryStream => &self.query_streams,
            Held::Subscription => &self.subscriptions,
        }
    }

    /// Takes one of `limit` slots, or `None` when all are held.
    pub fn take(self: &Arc<Self>, held: Held, limit: usize) -> Option<Slot> {
        self.counter(held)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                usage: Arc::clone(self),
                held,
            })
    }

    /// How many slots of a kind are held.
    pub fn held(&self, held: Held) -> usize {
        self.counter(held).load(Ordering::Acquire)
    }

    /// How long until the wait told with the identity's last refused
    /// append has passed (`None`: it has).
    pub fn append_hold(&self) -> Option<Duration> {
        let until = u128::from(self.hold_until.load(Ordering::Acquire));
        let now = now_nanos();
        (until > now).then(|| Duration::from_nanos(u64::try_from(until - now).unwrap_or(u64::MAX)))
    }

    /// Charges an append of `events` and `bytes` if both rates admit it now.
    pub fn charge_append(&self, events: u64, bytes: u64, quotas: &Quotas) -> Result<(), OverRate> {
        let now = now_nanos();
        let mut rates = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let e = rates.0.after(now, events, quotas.append_events_per_sec);
        let b = rates.1.after(now, bytes, quotas.append_bytes_per_sec);
        match (e, b) {
            (Ok(e), Ok(b)) => {
                rates.0.empty_at = e;
                rates.1.empty_at = b;
                Ok(())
            }
            (Err(None), _) => Err(OverRate::TooLarge { what: "events" }),
            (_, Err(None)) => Err(OverRate::TooLarge { what: "bytes" }),
            (Err(Some(we)), Err(Some(wb))) => {
                Err(self.hold(if we >= wb { "events" } else { "bytes" }, now, we.max(wb)))
            }
            (Err(Some(wait)), Ok(_)) => Err(self.hold("events", now, wait)),
            (Ok(_), Err(Some(wait))) => Err(self.hold("bytes", now, wait)),
        }
    }

    /// Records the wait a refusal tells, for [`Usage::append_hold`].
    fn hold(&self, what: &'static str, now: u128, wait: Duration) -> OverRate {
        let until = u64::try_from(now + wait.as_nanos()).unwrap_or(u64::MAX);
        self.hold_until.fetch_max(until, Ordering::AcqRel);
        OverRate::RetryAfter { what, wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back_on_drop() {
        let usage = Arc::new(Usage::default());
        let a = usage.take(Held::QueryStream, 2).unwrap();
        let _b = usage.take(Held::QueryStream, 2).unwrap();
        assert!(usage.take(Held::QueryStream, 2).is_none());
        assert!(usage.take(Held::Subscription, 1).is_some(), "apart");
        drop(a);
        assert_eq!(usage.held(Held::QueryStream), 1);
        assert!(usage.take(Held::QueryStream, 2).is_some());
    }

    #[test]
    fn a_rate_admits_one_second_of_burst_then_says_how_long_to_wait() {
        let r = Rate::default();
        let now = 10 * SECOND_NANOS;
        // 1,000 events per second: 1,000 at once fit, one more does not.
        let after = r.after(now, 1_000, 1_000).unwrap();
        let r = Rate { empty_at: after };
        match r.after(now, 100, 1_000) {
            Err(Some(wait)) => assert_eq!(wait, Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        // Half a second later, half the bucket is back.
        assert!(r.after(now + SECOND_NANOS / 2, 500, 1_000).is_ok());
        assert!(r.after(now + SECOND_NANOS / 2, 501, 1_000).is_err());
        // More than a second's worth never fits.
        assert_eq!(Rate::default().after(now, 1_001, 1_000), Err(None));
    }

    #[test]
    fn events_and_bytes_are_charged_together_or_not_at_all() {
        let usage = Usage::default();
        let q = Quotas {
            append_events_per_sec: 10,
            append_bytes_per_sec: 4096,
            ..Quotas::default()
        };
        usage.charge_append(5, 4000, &q).unwrap();
        // Events would fit, bytes not: nothing is charged.
        assert!(matches!(
            usage.charge_append(5, 1000, &q),
            Err(OverRate::RetryAfter { what: "bytes", .. })
        ));
        usage.charge_append(5, 90, &q).unwrap();
        assert!(matches!(
            usage.charge_append(1, 1, &q),
            Err(OverRate::RetryAfter { what: "events", .. })
        ));
        assert_eq!(
            usage.charge_append(11, 1, &q),
            Err(OverRate::TooLarge { what: "events" })
        );
        // The wait the last refusal told holds the next requests.
        let held = usage.append_hold().expect("held");
        assert!(held > Duration::ZERO && held <= Duration::from_secs(1));
        assert!(Usage::default().append_hold().is_none());
    }
}
