//! The server's metrics, in the Prometheus/OpenMetrics text format: one
//! [`Metrics`] per server (tests run many servers in one process, so nothing
//! here is global), its families registered once in a `prometheus-client`
//! registry, and [`Metrics::render`] for the exporter.
//!
//! Counters and histograms are updated where things happen (the edge's
//! trace layer, the ingest handlers, the store's writer through
//! [`crate::storage::StoreObserver`]); gauges that describe a state (the
//! durable sequence, the views' lag, the store's size, memory) are read when
//! a scrape asks, from a [`Gauges`] callback, so nothing polls.
//!
//! Label values that come from clients are bounded: a feed name becomes a
//! label only for the first [`MAX_FEED_LABELS`] feeds seen (later ones are
//! counted under `feed="other"`), and an RPC method only when the server
//! knows it (`method="unknown"` otherwise), so a hostile client cannot grow
//! the registry.
//!
//! Depends on `prometheus-client`, and on the store only for the
//! `StoreObserver` trait it implements.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Distinct feed names that get their own label value; later feeds are
/// counted as `feed="other"`.
pub const MAX_FEED_LABELS: usize = 1000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabel {
    feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    feed: String,
    reason: String,
}

// Methods and codes are fixed words: labels of them allocate nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodCodeLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// What a scrape reads from the running server, at the moment of the scrape.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub durable_sequence: u64,
    pub views_applied_sequence: u64,
    pub checkpoint_sequence: u64,
    /// Unix seconds of the newest checkpoint written by this process (0: none yet).
    pub checkpoint_time_seconds: f64,
    pub writer_queue_depth: u64,
    pub writer_queue_capacity: u64,
    pub store_size_bytes: u64,
    /// Free bytes on the store's file system (for the unprivileged user).
    pub disk_free_bytes: u64,
    /// 1 while the store acknowledges appends, 0 once it refuses them.
    pub store_writable: bool,
    /// The furthest a running subscription is behind the durable sequence.
    pub subscriber_lag_max: u64,
    pub subscriptions: u64,
    /// The stream as this node sees it, in cluster mode.
    pub cluster: Option<ClusterSnapshot>,
}

/// What a cluster node knows of the stream.
#[derive(Clone, Copy, Debug)]
pub struct ClusterSnapshot {
    /// The newest event sequence it has heard of.
    pub stream_head: u64,
    /// Seconds since it last heard from the stream.
    pub silence_seconds: f64,
    /// Whether the stream's leader has a quorum (ingest needs one).
    pub quorum: bool,
}

/// Reads a [`Snapshot`] when a scrape asks for one.
pub type Gauges = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    gauges: Mutex<Option<Gauges>>,
    feeds: Mutex<HashSet<String>>,
    appended: Family<FeedLabel, Counter>,
    duplicates: Family<FeedLabel, Counter>,
    rejected: Family<RejectedLabels, Counter>,
    append_seconds: Histogram,
    group_commit_seconds: Histogram,
    fsync_seconds: Histogram,
    group_events: Histogram,
    write_failures: Family<ReasonLabel, Counter>,
    rpc_requests: Family<MethodCodeLabels, Counter>,
    rpc_seconds: Family<MethodCodeLabels, Histogram>,
    rpc_in_flight: Family<MethodLabel, Gauge>,
    durable_sequence: Gauge,
    views_applied: Gauge,
    views_lag: Gauge,
    checkpoint_sequence: Gauge,
    checkpoint_lag: Gauge,
    checkpoint_time: Gauge<f64, AtomicU64>,
    stream_head: Gauge,
    apply_lag: Gauge,
    stream_silence: Gauge<f64, AtomicU64>,
    stream_quorum: Gauge,
    writer_queue_depth: Gauge,
    writer_queue_capacity: Gauge,
    store_size: Gauge,
    disk_free: Gauge,
    store_writable: Gauge,
    subscriber_lag_max: Gauge,
    subscriptions: Gauge,
    resident_memory: Gauge,
    start_time: Gauge<f64, AtomicU64>,
}

/// Latency buckets: 50 µs to about 26 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut r = Registry::with_prefix("caravan");
        let m = Metrics {
            registry: Registry::default(),
            gauges: Mutex::new(None),
            feeds: Mutex::new(HashSet::new()),
            appended: Family::default(),
            duplicates: Family::default(),
            rejected: Family::default(),
            append_seconds: latency_histogram(),
            group_commit_seconds: latency_histogram(),
            fsync_seconds: latency_histogram(),
            group_events: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            write_failures: Family::default(),
            rpc_requests: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency_histogram),
            rpc_in_flight: Family::default(),
            durable_sequence: Gauge::default(),
            views_applied: Gauge::default(),
            views_lag: Gauge::default(),
            checkpoint_sequence: Gauge::default(),
            checkpoint_lag: Gauge::default(),
            checkpoint_time: Gauge::default(),
            stream_head: Gauge::default(),
            apply_lag: Gauge::default(),
            stream_silence: Gauge::default(),
            stream_quorum: Gauge::default(),
            writer_queue_depth: Gauge::default(),
            writer_queue_capacity: Gauge::default(),
            store_size: Gauge::default(),
            disk_free: Gauge::default(),
            store_writable: Gauge::default(),
            subscriber_lag_max: Gauge::default(),
            subscriptions: Gauge::default(),
            resident_memory: Gauge::default(),
            start_time: Gauge::default(),
        };
        r.register(
            "events_appended",
            "Events stored (acknowledged as new), by feed",
            m.appended.clone(),
        );
        r.register(
            "events_duplicate",
            "Events acknowledged as duplicates of stored ones (nothing stored), by feed",
            m.duplicates.clone(),
        );
        r.register(
            "events_rejected",
            "Events refused (nothing stored), by feed and reason",
            m.rejected.clone(),
        );
        r.register_with_unit(
            "append_duration",
            "Time from an Append's events reaching the writer's queue to their acknowledgement",
            Unit::Seconds,
            m.append_seconds.clone(),
        );
        r.register_with_unit(
            "group_commit_duration",
            "Time to write one group commit's batch and flush it (without the fsync)",
            Unit::Seconds,
            m.group_commit_seconds.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "Time of the fsync of one group commit",
            Unit::Seconds,
            m.fsync_seconds.clone(),
        );
        r.register(
            "group_commit_events",
            "New events written by one group commit",
            m.group_events.clone(),
        );
        r.register(
            "store_write_failures",
            "Times the store stopped or refused writing, by reason (write, fsync, mark, disk_low)",
            m.write_failures.clone(),
        );
        r.register(
            "rpc_requests",
            "gRPC calls finished, by method and status code",
            m.rpc_requests.clone(),
        );
        r.register_with_unit(
            "rpc_duration",
            "Duration of gRPC calls (whole streams for streaming calls), by method and status code",
            Unit::Seconds,
            m.rpc_seconds.clone(),
        );
        r.register(
            "rpc_in_flight",
            "gRPC calls open now (query streams and subscriptions among them), by method",
            m.rpc_in_flight.clone(),
        );
        r.register(
            "durable_sequence",
            "Newest durable (fsynced, acknowledged) sequence",
            m.durable_sequence.clone(),
        );
        r.register(
            "views_applied_sequence",
            "Newest sequence the query views have applied",
            m.views_applied.clone(),
        );
        r.register(
            "views_lag_events",
            "Events durable but not yet in the query views",
            m.views_lag.clone(),
        );
        r.register(
            "checkpoint_sequence",
            "Sequence the views' newest checkpoint covers",
            m.checkpoint_sequence.clone(),
        );
        r.register(
            "checkpoint_lag_events",
            "Events applied to the views but not yet checkpointed (replayed at a restart)",
            m.checkpoint_lag.clone(),
        );
        r.register_with_unit(
            "checkpoint_last_time",
            "Unix time of the newest checkpoint written by this process (0: none yet)",
            Unit::Seconds,
            m.checkpoint_time.clone(),
        );
        r.register(
            "writer_queue_depth",
            "Append requests waiting for the writer",
            m.writer_queue_depth.clone(),
        );
        r.register(
            "writer_queue_capacity",
            "Append requests the writer's queue holds (--writer-queue)",
            m.writer_queue_capacity.clone(),
        );
        r.register_with_unit(
            "store_size",
            "Bytes of the store's files on disk",
            Unit::Bytes,
            m.store_size.clone(),
        );
        r.register_with_unit(
            "disk_free",
            "Free bytes on the store's file system",
            Unit::Bytes,
            m.disk_free.clone(),
        );
        r.register(
            "store_writable",
            "1 while the store acknowledges appends, 0 while it refuses them (disk full, failed write)",
            m.store_writable.clone(),
        );
        r.register(
            "subscriber_lag_max_events",
            "Events the furthest-behind subscription has still to examine",
            m.subscriber_lag_max.clone(),
        );
        r.register(
            "subscriptions",
            "Subscriptions running now",
            m.subscriptions.clone(),
        );
        r.register(
            "cluster_stream_head",
            "Cluster mode: the newest event sequence this node has heard of in the stream (0 otherwise)",
            m.stream_head.clone(),
        );
        r.register(
            "cluster_apply_lag_events",
            "Cluster mode: events of the stream this node has not applied yet",
            m.apply_lag.clone(),
        );
        r.register_with_unit(
            "cluster_stream_silence",
            "Cluster mode: time since this node last heard from the stream",
            Unit::Seconds,
            m.stream_silence.clone(),
        );
        r.register(
            "cluster_quorum",
            "Cluster mode: 1 while the stream's leader has a quorum (ingest needs one)",
            m.stream_quorum.clone(),
        );
        r.register_with_unit(
            "process_resident_memory",
            "Resident memory of the process",
            Unit::Bytes,
            m.resident_memory.clone(),
        );
        r.register_with_unit(
            "process_start_time",
            "Unix time the process started",
            Unit::Seconds,
            m.start_time.clone(),
        );
        r.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        m.start_time.set(unix_seconds(SystemTime::now()));
        Arc::new(Metrics { registry: r, ..m })
    }

    /// Sets where scrapes read the server's state from.
    pub fn read_gauges_from(&self, gauges: Gauges) {
        *self.gauges.lock().unwrap_or_else(|p| p.into_inner()) = Some(gauges);
    }

    /// Lets go of the server's state (at shutdown, so that the store it
    /// holds can close); later scrapes show the last values read.
    pub fn detach_gauges(&self) {
        self.gauges.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The label of `feed`: its name for the first [`MAX_FEED_LABELS`]
    /// feeds, `other` after.
    fn feed_label(&self, feed: &str) -> FeedLabel {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let known = feeds.contains(feed)
            || (feeds.len() < MAX_FEED_LABELS && feeds.insert(feed.to_owned()));
        FeedLabel {
            feed: if known {
                feed.to_owned()
            } else {
                "other".into()
            },
        }
    }

    /// Counts the outcome of appended events of `feed`.
    pub fn appended(&self, feed: &str, new: u64, duplicates: u64) {
        self.feed(feed).count(new, duplicates);
    }

    /// The counters of `feed`, for a caller that counts many of its events
    /// (an AppendStream keeps its feed's): incrementing them is one atomic
    /// add, with no label lookup.
    pub fn feed(&self, feed: &str) -> Arc<FeedCounters> {
        let label = self.feed_label(feed);
        Arc::new(FeedCounters {
            feed: label.feed.clone(),
            appended: self.appended.get_or_create_owned(&label),
            duplicates: self.duplicates.get_or_create_owned(&label),
        })
    }

    /// Counts `events` refused for `reason` (a fixed word, never client text).
    pub fn rejected(&self, feed: Option<&str>, reason: &'static str, events: u64) {
        let feed = match feed {
            Some(f) => self.feed_label(f).feed,
            None => "unknown".into(),
        };
        self.rejected
            .get_or_create(&RejectedLabels {
                feed,
                reason: reason.into(),
            })
            .inc_by(events);
    }

    pub fn append_took(&self, d: Duration) {
        self.append_seconds.observe(d.as_secs_f64());
    }

    pub fn group_committed(&self, events: usize, write: Duration, fsync: Duration) {
        self.group_commit_seconds.observe(write.as_secs_f64());
        self.fsync_seconds.observe(fsync.as_secs_f64());
        self.group_events.observe(events as f64);
    }

    pub fn write_failed(&self, reason: &'static str) {
        self.write_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// A call to `method` (a known method, or "unknown") begins.
    pub fn rpc_started(&self, method: &'static str) {
        self.rpc_in_flight
            .get_or_create(&MethodLabel { method })
            .inc();
    }

    /// A call to `method` ended with `code` after `d`.
    pub fn rpc_finished(&self, method: &'static str, code: &'static str, d: Duration) {
        self.rpc_in_flight
            .get_or_create(&MethodLabel { method })
            .dec();
        let labels = MethodCodeLabels { method, code };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_seconds
            .get_or_create(&labels)
            .observe(d.as_secs_f64());
    }

    /// The text exposition (OpenMetrics), with the state read now.
    pub fn render(&self) -> String {
        let gauges = self
            .gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(read) = gauges {
            let s = read();
            let set = |g: &Gauge, v: u64| {
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(&self.durable_sequence, s.durable_sequence);
            set(&self.views_applied, s.views_applied_sequence);
            set(
                &self.views_lag,
                s.durable_sequence.saturating_sub(s.views_applied_sequence),
            );
            set(&self.checkpoint_sequence, s.checkpoint_sequence);
            set(
                &self.checkpoint_lag,
                s.views_applied_sequence
                    .saturating_sub(s.checkpoint_sequence),
            );
            self.checkpoint_time.set(s.checkpoint_time_seconds);
            set(&self.writer_queue_depth, s.writer_queue_depth);
            set(&self.writer_queue_capacity, s.writer_queue_capacity);
            set(&self.store_size, s.store_size_bytes);
            set(&self.disk_free, s.disk_free_bytes);
            set(&self.store_writable, u64::from(s.store_writable));
            set(&self.subscriber_lag_max, s.subscriber_lag_max);
            set(&self.subscriptions, s.subscriptions);
            if let Some(c) = s.cluster {
                set(&self.stream_head, c.stream_head);
                set(
                    &self.apply_lag,
                    c.stream_head.saturating_sub(s.durable_sequence),
                );
                self.stream_silence.set(c.silence_seconds);
                set(&self.stream_quorum, u64::from(c.quorum));
            }
        }
        set_resident(&self.resident_memory);
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Now, in Unix seconds.
pub fn now_unix_seconds() -> f64 {
    unix_seconds(SystemTime::now())
}

/// The resident set of this process, from /proc (left as it is elsewhere).
fn set_resident(g: &Gauge) {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return;
    };
    let pages = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<i64>().ok());
    if let Some(pages) = pages {
        // The page size of every Linux target we build for.
        g.set(pages.saturating_mul(4096));
    }
}

/// The stored and duplicate counters of one feed.
pub struct FeedCounters {
    feed: String,
    appended: Counter,
    duplicates: Counter,
}

impl FeedCounters {
    /// The feed's label value (its name, or `other`).
    pub fn feed(&self) -> &str {
        &self.feed
    }

    pub fn count(&self, new: u64, duplicates: u64) {
        if new > 0 {
            self.appended.inc_by(new);
        }
        if duplicates > 0 {
            self.duplicates.inc_by(duplicates);
        }
    }
}

impl crate::storage::StoreObserver for Metrics {
    fn group_committed(&self, events: usize, write: Duration, fsync: Duration) {
        Metrics::group_committed(self, events, write, fsync);
    }

    fn write_failed(&self, reason: &'static str) {
        Metrics::write_failed(self, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_beyond_the_limit_share_one_label() {
        let m = Metrics::new();
        for i in 0..MAX_FEED_LABELS + 5 {
            m.appended(&format!("feed-{i}"), 1, 0);
        }
        let text = m.render();
        assert!(text.contains("caravan_events_appended_total{feed=\"feed-0\"} 1"));
        assert!(
            text.contains("caravan_events_appended_total{feed=\"other\"} 5"),
            "{text}"
        );
        assert!(!text.contains(&format!("feed-{}\"", MAX_FEED_LABELS)));
    }

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        m.rpc_started("/caravan.v1.IngestService/Append");
        m.rpc_finished(
            "/caravan.v1.IngestService/Append",
            "Ok",
            Duration::from_millis(3),
        );
        m.group_committed(10, Duration::from_millis(1), Duration::from_millis(2));
        let text = m.render();
        for name in [
            "caravan_rpc_requests_total{",
            "caravan_rpc_duration_seconds_bucket{",
            "caravan_fsync_duration_seconds_count 1",
            "caravan_process_start_time_seconds ",
            "caravan_build_info{version=",
            "caravan_store_size_bytes ",
        ] {
            assert!(text.contains(name), "{name} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// Every metric the Grafana dashboard in the repository queries is one
    /// this registry exports (each family made to show by one sample).
    #[test]
    fn the_dashboard_queries_only_metrics_that_are_exported() {
        let m = Metrics::new();
        m.appended("f", 1, 1);
        m.rejected(Some("f"), "invalid", 1);
        m.write_failed("disk_low");
        m.rpc_started("/caravan.v1.IngestService/Append");
        m.rpc_finished(
            "/caravan.v1.IngestService/Append",
            "Ok",
            Duration::from_millis(1),
        );
        m.read_gauges_from(Arc::new(Snapshot::default));
        let text = m.render();
        let mut exported = HashSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            exported.insert(name);
        }
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/caravan.json");
        let dashboard = std::fs::read_to_string(path).unwrap();
        serde_json::from_str::<serde_json::Value>(&dashboard).expect("valid JSON");
        let mut used = 0;
        for (i, _) in dashboard.match_indices("caravan_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which is not exported"
            );
            used += 1;
        }
        assert!(used > 20, "{used} references");
    }
}
