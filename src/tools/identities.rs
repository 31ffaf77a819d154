//! `caravan bench`'s identities section, on servers with an auth file over
//! loopback:
//!
//! - **what identities cost on the ingest path**: 4 feeds appending batches
//!   of 1,000 as the anonymous caller of an open server, as identities with
//!   tokens writing pairs no other feed writes (the owner of every figure is
//!   known without a look-up), and as two feeds without the curate scope
//!   writing the same pairs (every new figure is looked up in the views to
//!   learn its owner: the worst case). Three rounds, each in another order
//!   (what runs after another pays for what that one left behind), on fresh
//!   stores; the medians are compared in one run.
//! - **quota isolation**: a "steady" identity appends batches of 100 every
//!   10 ms and records its acknowledgement latency — alone; while a "flood"
//!   identity appends from 4 connections as fast as it can, far over its
//!   quota of 20,000 events a second; and while the same flood has no limit
//!   (a quota far above what it can send), which shows what the quota
//!   protects the steady feed from. Interleaved, twice; medians.
//!
//! Depends on the server's start function, the generated clients and the
//! bench's synthetic events; never on the server's internals.

use super::bench::{percentile, synthetic_events};
use super::client::Credentials;
use crate::auth::token;
use crate::auth::TokenHash;
use crate::grpc::server::{self, RunningServer, ServerConfig};
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_client::IngestServiceClient;
use prost::Message;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = IngestServiceClient<InterceptedService<Channel, Credentials>>;
type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The flood identity's quota in the isolation runs.
const FLOOD_QUOTA: u64 = 20_000;
/// Batches of 1,000 one flood connection gets ready per second of a phase.
const FLOOD_BATCHES_PER_SEC: f64 = 120.0;
/// A quota far above what any client here can send.
const UNLIMITED: &str =
    "quota = { append_events_per_sec = 1000000000, append_bytes_per_sec = 100000000000 }";

/// A server with these identities (name, scopes, feeds, quota line), and a
/// token for each.
struct Served {
    server: RunningServer,
    tokens: Vec<String>,
    /// The store and auth file, until the server has stopped.
    dir: tempfile::TempDir,
}

async fn serve(identities: &[(&str, &str, &str, &str)]) -> Result<Served> {
    let dir = tempfile::tempdir()?;
    let mut tokens = Vec::new();
    let mut file = String::new();
    for (name, scopes, feeds, quota) in identities {
        let t = token::generate()?;
        file.push_str(&format!(
            "[[identity]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nscopes = [{scopes}]\nfeeds = [{feeds}]\n{quota}\n",
            TokenHash::of(&t).to_hex()
        ));
        tokens.push(t);
    }
    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, file)?;
    let mut config = ServerConfig::new("127.0.0.1:0".parse()?, dir.path().join("store"));
    config.auth_file = Some(auth);
    let server = server::start(config).await?;
    Ok(Served {
        server,
        tokens,
        dir,
    })
}

async fn client(server: &RunningServer, token: Option<&str>) -> Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr()))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(IngestServiceClient::new(InterceptedService::new(
        channel,
        Credentials::bearer(token).map_err(|e| e.to_string())?,
    )))
}

/// `n` synthetic events of `feed`, each record adjusted by `adjust`; each
/// prefix draws figures of its own.
fn events(
    prefix: &str,
    feed: &str,
    n: usize,
    adjust: impl Fn(&mut pb::TradeRecord),
) -> Vec<pb::Event> {
    let seed = xxhash_rust::xxh3::xxh3_64(prefix.as_bytes());
    let mut all = synthetic_events(prefix, n, seed);
    for e in &mut all {
        e.feed = feed.into();
        if let Some(pb::event::Payload::TradeRecord(r)) = &mut e.payload {
            adjust(r);
        }
    }
    all
}

/// Events in requests of `size`.
fn requests(events: Vec<pb::Event>, size: usize) -> Vec<pb::AppendRequest> {
    events
        .chunks(size)
        .map(|c| pb::AppendRequest::new(c.to_vec()))
        .collect()
}

/// Only the years of one parity: two feeds of the same pairs then never
/// record the same figure.
fn years_of(parity: i32) -> impl Fn(&mut pb::TradeRecord) {
    move |r| {
        if let Some(p) = r.period.as_mut() {
            p.year = p.year - p.year % 2 + parity;
        }
    }
}

/// The steady feed reports for CN alone, the flood never does: their pairs
/// differ, so that only the quota, not ownership, is measured.
fn as_reporter_cn(r: &mut pb::TradeRecord) {
    if r.partner == "CN" {
        r.partner = r.reporter.clone();
    }
    r.reporter = "CN".into();
}

fn never_cn(r: &mut pb::TradeRecord) {
    for c in [&mut r.reporter, &mut r.partner] {
        if c == "CN" {
            *c = "MX".into();
        }
    }
}

/// Appends every batch from its own clients at once; events per second.
async fn load(feeds: Vec<(Client, Vec<pb::AppendRequest>)>) -> Result<f64> {
    let total: usize = feeds
        .iter()
        .map(|(_, b)| b.iter().map(|r| r.len().unwrap_or(0)).sum::<usize>())
        .sum();
    let started = Instant::now();
    let tasks: Vec<_> = feeds
        .into_iter()
        .map(|(mut c, batches)| {
            tokio::spawn(async move {
                for b in batches {
                    c.append(b).await?;
                }
                Ok::<_, tonic::Status>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The ways of ingesting compared.
#[derive(Clone, Copy)]
enum Way {
    /// The anonymous caller of an open server.
    Anonymous,
    /// One identity with a token, its feed alone in its pairs.
    OwnPairs,
    /// Two identities without curate, their feeds in the same pairs (each
    /// new figure looked up to learn its owner).
    SharedPairs,
}

/// One way of ingesting `n` events on a fresh store: events per second.
async fn ingest_once(way: Way, n: usize) -> Result<f64> {
    let per_feed = n / 4;
    let mut feeds = Vec::new();
    // The store directory lives until the server has stopped.
    let (server, _dir) = match way {
        Way::Anonymous => {
            let dir = tempfile::tempdir()?;
            let config = ServerConfig::new("127.0.0.1:0".parse()?, dir.path().join("store"));
            let open = server::start(config).await?;
            for f in 0..4 {
                let c = client(&open, None).await?;
                let mine = events(&format!("o{f}"), "bench", per_feed, |_| {});
                feeds.push((c, requests(mine, 1000)));
            }
            (open, dir)
        }
        // Quotas far above the load: what is measured is the checks' cost.
        Way::OwnPairs => {
            let one = serve(&[("loader", "\"ingest\"", "\"bench\"", UNLIMITED)]).await?;
            for f in 0..4 {
                let c = client(&one.server, Some(&one.tokens[0])).await?;
                let mine = events(&format!("t{f}"), "bench", per_feed, |_| {});
                feeds.push((c, requests(mine, 1000)));
            }
            (one.server, one.dir)
        }
        Way::SharedPairs => {
            let two = serve(&[
                ("loader-a", "\"ingest\"", "\"feed-a\"", UNLIMITED),
                ("loader-b", "\"ingest\"", "\"feed-b\"", UNLIMITED),
            ])
            .await?;
            for f in 0..4 {
                let (token, feed, parity) = match f % 2 {
                    0 => (&two.tokens[0], "feed-a", 0),
                    _ => (&two.tokens[1], "feed-b", 1),
                };
                let c = client(&two.server, Some(token)).await?;
                let mine = events(&format!("s{f}"), feed, per_feed, years_of(parity));
                feeds.push((c, requests(mine, 1000)));
            }
            (two.server, two.dir)
        }
    };
    let rate = load(feeds).await?;
    server.shutdown().await?;
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One isolation phase of `seconds`: the steady feed's latencies, and what
/// the flood got stored and refused (when there is one).
struct Phase {
    latencies: Vec<Duration>,
    flood_stored: u64,
    flood_refused: u64,
}

async fn phase(flood: Option<&str>, seconds: f64) -> Result<Phase> {
    let quota = format!("quota = {{ append_events_per_sec = {FLOOD_QUOTA} }}");
    let served = serve(&[
        ("steady", "\"ingest\"", "\"steady\"", UNLIMITED),
        (
            "flood",
            "\"ingest\"",
            "\"flood\"",
            if flood == Some("quota") {
                &quota
            } else {
                UNLIMITED
            },
        ),
    ])
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    if flood.is_some() {
        for f in 0..4 {
            let mut c = client(&served.server, Some(&served.tokens[1])).await?;
            // Encoded before the phase, as bytes: the flood costs its client
            // (in this process, on the same cores) next to nothing to send,
            // so that what slows the steady feed is the server's work. Enough
            // new events for the phase at the fastest rate seen here; then
            // they come round again, as duplicates.
            let pool: Vec<prost::bytes::Bytes> = (0..(seconds * FLOOD_BATCHES_PER_SEC) as usize)
                .map(|i| {
                    let e = events(&format!("f{f}-{i}"), "flood", 1000, never_cn);
                    pb::AppendRequest::new(e).encode_to_vec().into()
                })
                .collect();
            let (stop, stored, refused) = (stop.clone(), stored.clone(), refused.clone());
            flooders.push(tokio::spawn(async move {
                for bytes in pool.iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match c.append(pb::AppendRequest::received(bytes.clone())).await {
                        Ok(a) => {
                            stored.fetch_add(a.into_inner().acks.len() as u64, Ordering::Relaxed)
                        }
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(s) => return Err(s),
                    };
                }
                Ok(())
            }));
        }
    }
    // The steady feed: a batch of 100 every 10 ms.
    let mut steady = client(&served.server, Some(&served.tokens[0])).await?;
    let mine = events(
        "steady",
        "steady",
        (seconds * 10_000.0) as usize,
        as_reporter_cn,
    );
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for r in requests(mine, 100) {
        tick.tick().await;
        let t = Instant::now();
        steady.append(r).await?;
        latencies.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await??;
    }
    served.server.shutdown().await?;
    latencies.sort_unstable();
    Ok(Phase {
        latencies,
        flood_stored: stored.load(Ordering::Relaxed),
        flood_refused: refused.load(Ordering::Relaxed),
    })
}

/// Runs the section, prints its tables, returns its figures.
pub(crate) async fn identities(quick: bool) -> Result<serde_json::Value> {
    use serde_json::json;
    let n = if quick { 40_000 } else { 200_000 };
    // Each round in another order: what runs after another pays for what
    // the one before left behind (sled's files being written back).
    let rounds = 3;
    let ways = [Way::Anonymous, Way::OwnPairs, Way::SharedPairs];
    let mut runs: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for i in 0..ways.len() {
            let k = (i + round) % ways.len();
            runs[k].push(ingest_once(ways[k], n).await?);
        }
    }
    let [anonymous, own, shared] = runs.map(median);
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "Append, batches of 1,000, 4 connections",
        "events/s (median)",
        "of anonymous",
    ]);
    for (name, rate) in [
        ("anonymous caller, open server", anonymous),
        ("identities with tokens, pairs of one feed", own),
        (
            "two feeds without curate, the same pairs (every new figure looked up)",
            shared,
        ),
    ] {
        table.add_row([
            name.to_owned(),
            format!("{rate:.0}"),
            format!("{:.0} %", 100.0 * rate / anonymous),
        ]);
    }
    println!(
        "what identities cost on the ingest path ({n} events each, {rounds} rounds in rotating order, medians):"
    );
    println!("{table}");

    let seconds = if quick { 1.0 } else { 3.0 };
    let mut phases: [Vec<Phase>; 3] = Default::default();
    for _ in 0..rounds {
        for (i, flood) in [None, Some("quota"), Some("none")].into_iter().enumerate() {
            phases[i].push(phase(flood, seconds).await?);
        }
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "the steady identity's acks (batches of 100 every 10 ms)",
        "p50",
        "p99",
        "flood acknowledged/s",
        "flood refused/s",
    ]);
    let mut figures = Vec::new();
    for (i, name) in [
        "alone".to_owned(),
        format!("while flood exceeds its quota of {FLOOD_QUOTA} events/s"),
        "while flood has no limit".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let p50 = median(
            phases[i]
                .iter()
                .map(|p| percentile(&p.latencies, 0.5).as_secs_f64() * 1e3)
                .collect(),
        );
        let p99 = median(
            phases[i]
                .iter()
                .map(|p| percentile(&p.latencies, 0.99).as_secs_f64() * 1e3)
                .collect(),
        );
        let stored = median(
            phases[i]
                .iter()
                .map(|p| p.flood_stored as f64 / seconds)
                .collect(),
        );
        let refused = median(
            phases[i]
                .iter()
                .map(|p| p.flood_refused as f64 / seconds)
                .collect(),
        );
        table.add_row([
            name.clone(),
            format!("{p50:.2} ms"),
            format!("{p99:.2} ms"),
            format!("{stored:.0}"),
            format!("{refused:.0}"),
        ]);
        figures.push(json!({
            "phase": name, "steady_p50_ms": p50, "steady_p99_ms": p99,
            "flood_stored_per_s": stored.round(), "flood_refused_requests_per_s": refused.round(),
        }));
    }
    println!("quota isolation ({seconds} s per phase, {rounds} interleaved rounds, medians):");
    println!("{table}");
    Ok(json!({
        "ingest": {
            "events": n,
            "anonymous_events_per_s": anonymous.round(),
            "identities_own_pairs_events_per_s": own.round(),
            "identities_shared_pairs_events_per_s": shared.round(),
        },
        "isolation": figures,
    }))
}
