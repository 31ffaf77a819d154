//! `caravan bench`: ingest throughput and acknowledgement latency of the real
//! server over loopback, measured with real gRPC clients on a fresh temporary
//! store per scenario. Prints a table; figures only, no thresholds.
//!
//! Depends on the server, the generated clients and the wire types; never on
//! sled or the storage internals.

use crate::grpc::server::{self, ServerConfig};
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_client::IngestServiceClient;
use std::error::Error;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Options of `caravan bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A small run that finishes in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Events per scenario (batch-of-1 scenarios use a hundredth).
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Build a store of this many trade records and time the query RPCs on it
    /// (0 skips; `--quick` uses 100,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub query_records: usize,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Seconds of the subscription latency run (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub subscription_seconds: u64,
    /// Run only the ingest scenarios whose name contains this text (for
    /// profiling one of them); the ceiling still runs.
    #[arg(long)]
    pub only: Option<String>,
    /// Skip the hostile section (resident memory under 16 concurrent
    /// worst-case requests of each RPC).
    #[arg(long)]
    pub no_hostile: bool,
    /// Skip the identities section (what identities cost on the ingest
    /// path; another identity's acknowledgements while one floods past its
    /// quota).
    #[arg(long)]
    pub no_identities: bool,
    /// Also build a store of this many events and measure its size on disk,
    /// the time to reopen it and the process's resident memory after that.
    #[arg(long, default_value_t = 0)]
    pub footprint_events: usize,
    /// The data of the footprint store: `world` is shaped like world trade
    /// at HS 6-digit level (`caravan gen --profile world`), `bench` is the
    /// ingest scenarios' own small mix (30 countries, HS4, 25 years).
    #[arg(long, value_enum, default_value = "world")]
    pub footprint_profile: FootprintProfile,
    /// Build the footprint store in this new directory and keep it (for
    /// profiling a server on it); by default it is temporary.
    #[arg(long)]
    pub footprint_keep: Option<std::path::PathBuf>,
    /// Lines of each file of the file scenario: the real `caravan ingest`
    /// of JSON Lines and Comtrade CSV, plain and gzip, against the
    /// server-only Append figure on the same events (0 skips; `--quick`
    /// uses 20,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub ingest_lines: usize,
    /// Also measure cluster mode: a local 3-node NATS cluster (R3,
    /// `sync_interval: always`) and 3 caravan nodes against one embedded
    /// node, in the same run.
    #[arg(long)]
    pub jetstream: bool,
    /// The nats-server binary for --jetstream (2.12 or later).
    #[arg(long, env = "CARAVAN_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: std::path::PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FootprintProfile {
    World,
    Bench,
}

use crate::tools::gen::Rng as SplitMix;

const COUNTRIES: &[&str] = &[
    "CN", "KZ", "KG", "TJ", "TM", "UZ", "US", "DE", "RU", "IN", "JP", "KR", "FR", "GB", "IT", "BR",
    "CA", "AU", "TR", "IR", "PK", "AF", "MN", "AZ", "GE", "AM", "UA", "PL", "NL", "ES",
];

/// `n` distinct, realistic trade-record events with ids `{prefix}-{i}`.
pub fn synthetic_events(prefix: &str, n: usize, seed: u64) -> Vec<pb::Event> {
    let mut rng = SplitMix::new(seed);
    (0..n)
        .map(|i| {
            let r = rng.below(COUNTRIES.len() as u64) as usize;
            let p = (r + 1 + rng.below(COUNTRIES.len() as u64 - 1) as usize) % COUNTRIES.len();
            let chapter = 1 + rng.below(97);
            let monthly = rng.below(2) == 0;
            pb::Event {
                event_id: format!("{prefix}-{i}"),
                feed: "bench".into(),
                occurred_at: None,
                payload: Some(pb::event::Payload::TradeRecord(pb::TradeRecord {
                    reporter: COUNTRIES[r].into(),
                    partner: COUNTRIES[p].into(),
                    flow: 1 + rng.below(2) as i32,
                    period: Some(pb::Period {
                        year: 2000 + rng.below(25) as i32,
                        frequency: if monthly {
                            pb::Frequency::Monthly as i32
                        } else {
                            pb::Frequency::Annual as i32
                        },
                        number: if monthly { 1 + rng.below(12) as i32 } else { 0 },
                    }),
                    commodity: Some(pb::CommodityScope {
                        scope: Some(pb::commodity_scope::Scope::HsCode(format!(
                            "{chapter:02}{:02}",
                            rng.below(100)
                        ))),
                    }),
                    value: Some(pb::Money {
                        currency_code: "USD".into(),
                        units: rng.below(10_000_000_000) as i64,
                        nanos: 0,
                    }),
                    quantity: None,
                    source: "caravan bench (synthetic)".into(),
                    note: String::new(),
                })),
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    Unary { batch: usize },
    Stream,
}

pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) mode: Mode,
    pub(crate) feeds: usize,
    pub(crate) events: usize,
    /// Re-send the same events a second time and measure that pass.
    pub(crate) duplicates: bool,
}

pub(crate) struct Measured {
    pub(crate) events: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What one feed sends, built before the clock starts so that only sending,
/// not building the messages, is timed.
enum Work {
    Unary(Vec<pb::AppendRequest>),
    Stream(Vec<pb::Event>),
}

async fn feed(
    mut client: IngestServiceClient<tonic::transport::Channel>,
    work: Work,
) -> Result<Vec<Duration>, Box<dyn Error + Send + Sync>> {
    let mut latencies = Vec::new();
    match work {
        Work::Unary(batches) => {
            for b in batches {
                let n = b.len().unwrap_or(0);
                let t = Instant::now();
                client.append(b).await?;
                let d = t.elapsed();
                latencies.extend(std::iter::repeat_n(d, n));
            }
        }
        Work::Stream(events) => {
            let n = events.len();
            // When each event was sent, for its latency. Unbounded, but it
            // holds at most one instant per event of this run.
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
            let requests = tokio_stream::iter(events).map(move |e| {
                let _ = sent_tx.send(Instant::now());
                pb::AppendStreamRequest { event: Some(e) }
            });
            let mut answers = client.append_stream(requests).await?.into_inner();
            while let Some(a) = answers.next().await {
                let a = a?;
                if let Some(pb::append_stream_response::Result::Rejection(r)) = a.result {
                    return Err(format!("rejected: {}", r.message).into());
                }
                if let Some(sent) = sent_rx.recv().await {
                    latencies.push(sent.elapsed());
                }
            }
            if latencies.len() != n {
                return Err(format!("{} of {n} events answered", latencies.len()).into());
            }
        }
    }
    Ok(latencies)
}

async fn pass(url: &str, s: &Scenario, events: &[pb::Event]) -> Result<Measured, Box<dyn Error>> {
    pass_to(&[url.to_owned()], s, events).await
}

/// A pass whose feed `i` sends to `urls[i % urls.len()]`.
pub(crate) async fn pass_to(
    urls: &[String],
    s: &Scenario,
    events: &[pb::Event],
) -> Result<Measured, Box<dyn Error>> {
    let per_feed = events.len().div_ceil(s.feeds);
    let mut feeds = Vec::new();
    for (i, part) in events.chunks(per_feed).enumerate() {
        let client = IngestServiceClient::connect(urls[i % urls.len()].clone()).await?;
        let work = match s.mode {
            Mode::Unary { batch } => Work::Unary(
                part.chunks(batch)
                    .map(|b| pb::AppendRequest::new(b.to_vec()))
                    .collect(),
            ),
            Mode::Stream => Work::Stream(part.to_vec()),
        };
        feeds.push((client, work));
    }
    let start = Instant::now();
    let tasks: Vec<_> = feeds
        .into_iter()
        .map(|(client, work)| tokio::spawn(feed(client, work)))
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?.map_err(|e| e.to_string())?);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Measured {
        events: events.len(),
        elapsed,
        latencies,
    })
}

async fn run_scenario(s: &Scenario) -> Result<Measured, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig::new("127.0.0.1:0".parse()?, dir.path().join("store"));
    let server = server::start(config).await?;
    let url = format!("http://{}", server.addr());
    let events = synthetic_events("bench", s.events, 7);
    let mut measured = pass(&url, s, &events).await?;
    if s.duplicates {
        measured = pass(&url, s, &events).await?;
    }
    server.shutdown().await?;
    Ok(measured)
}

/// Runs every scenario and prints the table.
pub async fn run(args: BenchArgs) -> Result<(), Box<dyn Error>> {
    use serde_json::json;
    let mut report = serde_json::Map::new();
    let mut ingest = Vec::new();
    let n = if args.quick { 20_000 } else { args.events };
    let small = (n / 100).max(100);
    let unary = |batch, feeds, events, duplicates| Scenario {
        name: format!(
            "{}Append, batches of {batch}, {feeds} feed{}",
            if duplicates { "duplicates: " } else { "" },
            if feeds > 1 { "s" } else { "" }
        ),
        mode: Mode::Unary { batch },
        feeds,
        events,
        duplicates,
    };
    let stream = |feeds| Scenario {
        name: format!(
            "AppendStream, {feeds} feed{}",
            if feeds > 1 { "s" } else { "" }
        ),
        mode: Mode::Stream,
        feeds,
        events: n,
        duplicates: false,
    };
    let scenarios = [
        unary(1, 1, small, false),
        unary(1, 4, small, false),
        unary(100, 1, n, false),
        unary(100, 4, n, false),
        unary(1000, 1, n, false),
        unary(1000, 4, n, false),
        stream(1),
        stream(4),
        unary(1000, 4, n, true),
    ];
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["scenario", "events", "events/s", "ack p50", "ack p99"]);
    let mut four_feeds_1000 = 0.0;
    let chosen = scenarios.iter().filter(|s| {
        args.only
            .as_ref()
            .is_none_or(|o| s.name.contains(o.as_str()))
    });
    for s in chosen {
        let m = run_scenario(s).await?;
        let rate = m.events as f64 / m.elapsed.as_secs_f64();
        eprintln!("{}: {:.0} events/s", s.name, rate);
        if s.feeds == 4 && matches!(s.mode, Mode::Unary { batch: 1000 }) && !s.duplicates {
            four_feeds_1000 = rate;
        }
        ingest.push(json!({
            "scenario": s.name,
            "events": m.events,
            "events_per_s": rate.round(),
            "ack_p50_ms": percentile(&m.latencies, 0.50).as_secs_f64() * 1e3,
            "ack_p99_ms": percentile(&m.latencies, 0.99).as_secs_f64() * 1e3,
        }));
        table.add_row([
            s.name.clone(),
            m.events.to_string(),
            format!("{rate:.0}"),
            format!(
                "{:.2} ms",
                percentile(&m.latencies, 0.50).as_secs_f64() * 1e3
            ),
            format!(
                "{:.2} ms",
                percentile(&m.latencies, 0.99).as_secs_f64() * 1e3
            ),
        ]);
    }
    println!("{table}");
    report.insert("ingest".into(), json!(ingest));

    // The storage engine's ceiling: the same events, keyed and encoded as
    // caravan stores them, straight into sled, batches of 1,000 with fsync.
    let events: Vec<crate::domain::Event> = synthetic_events("bench", n, 7)
        .iter()
        .map(crate::convert::parse_event)
        .collect::<Result<_, _>>()
        .map_err(|v| format!("synthetic event does not parse: {v:?}"))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ceiling");
    let ceiling =
        tokio::task::spawn_blocking(move || crate::storage::ceiling_write(&path, &events, 1000))
            .await??;
    println!(
        "ceiling: sled alone, same keys, values and fsync, batches of 1,000: {ceiling:.0} events/s; \
         caravan (Append, batches of 1,000, 4 feeds): {four_feeds_1000:.0} events/s = {:.0} % of the ceiling",
        100.0 * four_feeds_1000 / ceiling
    );
    report.insert(
        "ceiling".into(),
        json!({"events_per_s": ceiling.round(), "caravan_4_feeds_1000_events_per_s": four_feeds_1000.round(), "ratio": four_feeds_1000 / ceiling}),
    );

    // The gRPC floor: the same requests over the same loopback connections
    // to a service that only decodes and acknowledges.
    let floor = super::floor::start().await?;
    let floor_url = format!("http://{}", floor.addr);
    let events = synthetic_events("bench", n, 7);
    let floor_scenario = unary(1000, 4, n, false);
    let m = pass(&floor_url, &floor_scenario, &events).await?;
    drop(floor);
    let floor_rate = m.events as f64 / m.elapsed.as_secs_f64();
    let lower = ceiling.min(floor_rate);
    println!(
        "floor: gRPC alone (decode and acknowledge, no checks, no storage), Append, batches of 1,000, \
         4 feeds: {floor_rate:.0} events/s; caravan = {:.0} % of the floor, {:.0} % of the lower of \
         floor and ceiling",
        100.0 * four_feeds_1000 / floor_rate,
        100.0 * four_feeds_1000 / lower
    );
    report.insert(
        "floor".into(),
        json!({
            "events_per_s": floor_rate.round(),
            "ack_p50_ms": percentile(&m.latencies, 0.50).as_secs_f64() * 1e3,
            "caravan_ratio": four_feeds_1000 / floor_rate,
            "caravan_ratio_of_lower": four_feeds_1000 / lower,
        }),
    );

    let query_records = if args.quick {
        args.query_records.min(100_000)
    } else {
        args.query_records
    };
    if query_records > 0 {
        report.insert("queries".into(), queries(query_records).await?);
    }
    if args.subscription_seconds > 0 {
        let (seconds, subscribers) = if args.quick {
            (args.subscription_seconds.min(3), 20)
        } else {
            (args.subscription_seconds, 100)
        };
        report.insert(
            "subscriptions".into(),
            subscriptions(10_000, seconds, subscribers).await?,
        );
    }
    if args.footprint_events > 0 {
        report.insert(
            "footprint".into(),
            footprint(
                args.footprint_events,
                args.footprint_profile,
                args.footprint_keep.as_deref(),
            )
            .await?,
        );
    }
    let ingest_lines = if args.quick {
        args.ingest_lines.min(20_000)
    } else {
        args.ingest_lines
    };
    if ingest_lines > 0 {
        report.insert(
            "ingest_files".into(),
            super::ingest_bench::files(ingest_lines, n, four_feeds_1000).await?,
        );
    }
    if args.jetstream {
        report.insert(
            "jetstream".into(),
            super::cluster_bench::cluster(&args.nats_server, n).await?,
        );
    }
    if !args.no_identities {
        let figures = super::identities::identities(args.quick)
            .await
            .map_err(|e| e.to_string())?;
        report.insert("identities".into(), figures);
    }
    if !args.no_hostile {
        report.insert("hostile".into(), super::hostile::hostile().await?);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Resident memory of a process now and at its peak, in MiB, from /proc.
pub(crate) fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts `caravan serve` as a separate process; returns it and its URL.
pub(crate) async fn spawn_server(
    store: &std::path::Path,
) -> Result<(std::process::Child, String), Box<dyn Error>> {
    spawn_server_with(store, &[]).await
}

/// Starts `caravan serve` with more flags.
pub(crate) async fn spawn_server_with(
    store: &std::path::Path,
    flags: &[String],
) -> Result<(std::process::Child, String), Box<dyn Error>> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(store)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await??;
    let addr = line
        .trim()
        .strip_prefix("caravan listening on ")
        .ok_or_else(|| format!("unexpected server output {line:?}"))?
        .to_owned();
    Ok((child, format!("http://{addr}")))
}

pub(crate) fn stop_server(mut child: std::process::Child) -> Result<(), Box<dyn Error>> {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    child.wait()?;
    Ok(())
}

/// Disk, memory and restart time of a separate server process holding `n` events.
async fn footprint(
    n: usize,
    profile: FootprintProfile,
    keep: Option<&std::path::Path>,
) -> Result<serde_json::Value, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = match keep {
        Some(path) if path.exists() => {
            return Err(format!("--footprint-keep {}: already exists", path.display()).into())
        }
        Some(path) => path.to_path_buf(),
        None => dir.path().join("store"),
    };
    let s = Scenario {
        name: String::new(),
        mode: Mode::Unary { batch: 1000 },
        feeds: 4,
        events: n,
        duplicates: false,
    };
    let (child, url) = spawn_server(&store).await?;
    let chunk = 200_000;
    let mut world = crate::tools::gen::WorldGen::new(1);
    for (i, start) in (0..n).step_by(chunk).enumerate() {
        let len = chunk.min(n - start);
        let events = match profile {
            FootprintProfile::World => (0..len).map(|_| world.next_event()).collect(),
            FootprintProfile::Bench => synthetic_events(&format!("fp{i}"), len, i as u64),
        };
        pass(&url, &s, &events).await?;
    }
    let (_, peak_loading) = rss_mib(child.id());
    stop_server(child)?;
    let bytes = dir_bytes(&store)?;

    let t = Instant::now();
    let (child, url) = spawn_server(&store).await?;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| s == serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restart = t.elapsed();
    let (rss_restarted, _) = rss_mib(child.id());
    // The query timings on the restarted store (world data: HS6 from 2017,
    // the most traded products first: chapters 01-24 are the first loaded).
    let what = match profile {
        FootprintProfile::World => (2017, pb::CommodityLevel::Hs6, pb::Sector::AgricultureFood),
        FootprintProfile::Bench => (2022, pb::CommodityLevel::Hs4, pb::Sector::Energy),
    };
    let timed = time_queries(&url, n as u64, what).await?;
    let (rss_queried, _) = rss_mib(child.id());
    stop_server(child)?;
    println!("queries on the restarted footprint store of {n} events:");
    println!("{}", timed.table);
    println!(
        "StreamTradeRecords: {:.0} records/s to one client; RSS after the queries {rss_queried:.0} MiB",
        timed.records_per_s
    );
    println!(
        "footprint of the server process with {n} events: {:.1} MB on disk ({:.0} bytes/event); \
         peak RSS while loading {peak_loading:.0} MiB; restart to health SERVING {:.2} s, \
         RSS after restart {rss_restarted:.0} MiB",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64,
        restart.as_secs_f64()
    );
    let per_event_mib = rss_restarted / n as f64;
    let scale = 50_000_000.0 / n as f64;
    println!(
        "extrapolated linearly to 50 million events: {:.1} GB on disk, about {:.1} GiB of memory, \
         about {:.0} s to restart",
        bytes as f64 * scale / 1e9,
        per_event_mib * 50_000_000.0 / 1024.0,
        restart.as_secs_f64() * scale
    );
    Ok(serde_json::json!({
        "events": n,
        "profile": format!("{profile:?}").to_lowercase(),
        "disk_bytes": bytes,
        "peak_rss_loading_mib": peak_loading,
        "rss_after_restart_mib": rss_restarted,
        "restart_to_serving_s": restart.as_secs_f64(),
        "rss_after_queries_mib": rss_queried,
        "queries": timed.figures,
        "stream_trade_records_per_s": timed.records_per_s.round(),
    }))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

macro_rules! timed_stream {
    ($runs:expr, $make:expr, $count:expr) => {{
        let mut first = Vec::new();
        let mut whole = Vec::new();
        let mut items = 0usize;
        for _ in 0..$runs {
            let t = Instant::now();
            let mut s = $make.await?.into_inner();
            let mut n = 0usize;
            let mut got_first = false;
            while let Some(m) = s.message().await? {
                if !got_first {
                    first.push(t.elapsed());
                    got_first = true;
                }
                n += $count(&m);
            }
            whole.push(t.elapsed());
            items = n;
        }
        first.sort_unstable();
        whole.sort_unstable();
        (first, whole, items)
    }};
}

async fn queries(n: usize) -> Result<serde_json::Value, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let server = server::start(ServerConfig::new(
        "127.0.0.1:0".parse()?,
        dir.path().join("store"),
    ))
    .await?;
    let url = format!("http://{}", server.addr());
    let load = Scenario {
        name: String::new(),
        mode: Mode::Unary { batch: 1000 },
        feeds: 4,
        events: n,
        duplicates: false,
    };
    // The `caravan gen` dataset (seed 1): ~200 countries skewed toward large
    // traders, HS4 codes, annual and monthly 2015-2024, revisions, duplicates.
    let mut gen = crate::tools::gen::TradeGen::new(1);
    let chunk = 200_000;
    for start in (0..n).step_by(chunk) {
        let events: Vec<pb::Event> = (0..chunk.min(n - start))
            .map(|_| gen.next_event())
            .collect();
        pass(&url, &load, &events).await?;
    }
    let timed = time_queries(
        &url,
        n as u64,
        (2022, pb::CommodityLevel::Hs4, pb::Sector::Energy),
    )
    .await?;
    println!("queries on a store of {n} trade records from `caravan gen --seed 1` (HS4, annual and monthly):");
    println!("{}", timed.table);
    println!(
        "StreamTradeRecords: {:.0} records/s to one client",
        timed.records_per_s
    );
    server.shutdown().await?;
    Ok(serde_json::json!({
        "records": n,
        "queries": timed.figures,
        "stream_trade_records_per_s": timed.records_per_s.round()
    }))
}

/// The query timings of one store.
struct Timed {
    table: comfy_table::Table,
    figures: Vec<serde_json::Value>,
    records_per_s: f64,
}

/// Times the query RPCs on the server at `url`, which holds `n` events: the
/// country view of CN for `year` at `level` (now and as of sequence `n`/2),
/// the sector view of `sector`, Aggregate of CN by partner, and
/// StreamTradeRecords of every annual figure at `level`.
async fn time_queries(
    url: &str,
    n: u64,
    (year, level, sector): (i32, pb::CommodityLevel, pb::Sector),
) -> Result<Timed, Box<dyn Error>> {
    use crate::proto::v1::query_service_client::QueryServiceClient;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await?;
    let mut q = QueryServiceClient::new(channel);
    let period = |y| pb::Period {
        year: y,
        frequency: pb::Frequency::Annual as i32,
        number: 0,
    };
    let one_year = pb::PeriodRange {
        frequency: pb::Frequency::Annual as i32,
        from: Some(period(year)),
        to: Some(period(year)),
    };
    let all_years = pb::PeriodRange {
        frequency: pb::Frequency::Annual as i32,
        from: None,
        to: None,
    };
    let runs = 21;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        format!("query ({} figures)", level.as_str_name()),
        "items".into(),
        "first p50".into(),
        "first p99".into(),
        "whole p50".into(),
        "whole p99".into(),
    ]);
    let mut figures = Vec::new();
    let mut row = |name: &str, (first, whole, items): (Vec<Duration>, Vec<Duration>, usize)| {
        figures.push(serde_json::json!({
            "query": name,
            "items": items,
            "first_p50_ms": percentile(&first, 0.5).as_secs_f64() * 1e3,
            "first_p99_ms": percentile(&first, 0.99).as_secs_f64() * 1e3,
            "whole_p50_ms": percentile(&whole, 0.5).as_secs_f64() * 1e3,
            "whole_p99_ms": percentile(&whole, 0.99).as_secs_f64() * 1e3,
        }));
        table.add_row([
            name.to_owned(),
            items.to_string(),
            ms(percentile(&first, 0.5)),
            ms(percentile(&first, 0.99)),
            ms(percentile(&whole, 0.5)),
            ms(percentile(&whole, 0.99)),
        ]);
    };
    let country = |as_of| pb::StreamCountryCooperationRequest {
        country: "CN".into(),
        periods: Some(one_year),
        level: level as i32,
        as_of_sequence: as_of,
        ..Default::default()
    };
    row(
        &format!("country view, CN, {year}"),
        timed_stream!(
            runs,
            q.stream_country_cooperation(country(0)),
            |_: &pb::StreamCountryCooperationResponse| 1
        ),
    );
    row(
        &format!("same, as of sequence {}", n / 2),
        timed_stream!(
            runs,
            q.stream_country_cooperation(country(n / 2)),
            |_: &pb::StreamCountryCooperationResponse| 1
        ),
    );
    let sector_name = sector.as_str_name();
    let sector = pb::StreamSectorCooperationRequest {
        sector: sector as i32,
        periods: Some(one_year),
        level: level as i32,
        ..Default::default()
    };
    row(
        &format!("sector view, {sector_name}, {year}"),
        timed_stream!(
            runs,
            q.stream_sector_cooperation(sector.clone()),
            |_: &pb::StreamSectorCooperationResponse| 1
        ),
    );
    let aggregate = pb::AggregateRequest {
        filter: Some(pb::FigureFilter {
            reporters: vec!["CN".into()],
            level: level as i32,
            periods: Some(one_year),
            ..Default::default()
        }),
        group_by: vec![pb::GroupBy::Partner as i32],
        ..Default::default()
    };
    row(
        &format!("Aggregate, CN by partner, {year}"),
        timed_stream!(
            runs,
            q.aggregate(aggregate.clone()),
            |_: &pb::AggregateResponse| 1
        ),
    );
    let records = pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            level: level as i32,
            periods: Some(all_years),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (first, whole, items) = timed_stream!(
        3,
        q.stream_trade_records(records.clone()),
        |m: &pb::StreamTradeRecordsResponse| m.records.len()
    );
    let rate = items as f64 / percentile(&whole, 0.5).as_secs_f64();
    row(
        "StreamTradeRecords, all annual figures",
        (first, whole, items),
    );
    Ok(Timed {
        table,
        figures,
        records_per_s: rate,
    })
}

/// Acknowledgement-to-delivery latency at a fixed event rate, with
/// `followers` subscribers each following one of ten countries and two
/// following everything.
async fn subscriptions(
    rate: u64,
    seconds: u64,
    followers: usize,
) -> Result<serde_json::Value, Box<dyn Error>> {
    use crate::proto::v1::subscription_service_client::SubscriptionServiceClient;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    const FOLLOWED: [&str; 10] = ["KZ", "KG", "TJ", "TM", "UZ", "DE", "US", "RU", "IN", "JP"];
    let dir = tempfile::tempdir()?;
    let server = server::start(ServerConfig::new(
        "127.0.0.1:0".parse()?,
        dir.path().join("store"),
    ))
    .await?;
    let url = format!("http://{}", server.addr());
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await?;
    let total = (rate * seconds) as usize;
    let mut readers = Vec::new();
    for i in 0..followers + 2 {
        let countries = if i < followers {
            vec![FOLLOWED[i % FOLLOWED.len()].to_owned()]
        } else {
            Vec::new()
        };
        let expected = if countries.is_empty() {
            total
        } else {
            total / FOLLOWED.len()
        };
        let mut stream = SubscriptionServiceClient::new(channel.clone())
            .subscribe(pb::SubscribeRequest {
                start: Some(pb::subscribe_request::Start::FromNow(pb::FromNow {})),
                countries,
                ..Default::default()
            })
            .await?
            .into_inner();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(expected);
            while seen.len() < expected {
                match stream.message().await {
                    Ok(Some(m)) => {
                        let now = Instant::now();
                        seen.extend(m.events.iter().map(|e| (e.sequence, now)));
                    }
                    _ => break,
                }
            }
            seen
        }));
    }
    // One feed at a fixed rate: a batch of 100 every 10 ms.
    let acked: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut client = IngestServiceClient::new(channel);
    let batch = (rate / 100).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let events: Vec<pb::Event> = (sent..(sent + batch).min(total))
            .map(|i| {
                let mut e = synthetic_events(&format!("s{i}"), 1, i as u64).remove(0);
                if let Some(pb::event::Payload::TradeRecord(r)) = &mut e.payload {
                    r.reporter = "CN".into();
                    r.partner = FOLLOWED[i % FOLLOWED.len()].into();
                }
                e
            })
            .collect();
        sent += events.len();
        let acks = client
            .append(pb::AppendRequest::new(events))
            .await?
            .into_inner()
            .acks;
        let now = Instant::now();
        let mut acked = acked.lock().map_err(|_| "poisoned")?;
        for a in acks {
            acked.insert(a.sequence, now);
        }
    }
    let mut latencies = Vec::new();
    let mut delivered = 0;
    for r in readers {
        let seen = tokio::time::timeout(Duration::from_secs(30), r).await??;
        delivered += seen.len();
        let acked = acked.lock().map_err(|_| "poisoned")?;
        for (seq, at) in seen {
            if let Some(ack) = acked.get(&seq) {
                // Delivery can beat the acknowledgement to the client: count 0.
                latencies.push(at.saturating_duration_since(*ack));
            }
        }
    }
    latencies.sort_unstable();
    println!(
        "subscriptions: {rate} events/s for {seconds} s, {followers} subscribers following one country each and 2 following everything: \
         {delivered} deliveries, acknowledgement to delivery p50 {}, p99 {}, max {}",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    server.shutdown().await?;
    Ok(serde_json::json!({
        "events_per_s": rate,
        "seconds": seconds,
        "country_subscribers": followers,
        "all_subscribers": 2,
        "deliveries": delivered,
        "p50_ms": percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        "p99_ms": percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    }))
}
