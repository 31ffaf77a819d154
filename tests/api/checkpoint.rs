//! Checkpointed views: the real binary is killed (SIGKILL) again and again
//! while it ingests and checkpoints every few hundred revisions; the store
//! it leaves, restarted from its checkpoint and the log after it, answers
//! every view at every snapshot exactly as a copy of it whose views are
//! rebuilt from the whole log (`--rebuild-views`).

use crate::damage::{copy_dir, start_with, stop, terminate, Start};
use crate::helpers::*;
use caravan::proto::v1 as pb;
use caravan::proto::v1::ingest_service_client::IngestServiceClient;
use caravan::proto::v1::query_service_client::QueryServiceClient;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const FLAGS: [&str; 4] = ["--checkpoint-revisions", "150", "--checkpoint-secs", "1"];
const PAIRS: [(&str, &str); 6] = [
    ("CN", "KZ"),
    ("KZ", "CN"),
    ("CN", "UZ"),
    ("UZ", "CN"),
    ("KZ", "UZ"),
    ("KG", "CN"),
];
const FLOWS: [pb::Flow; 3] = [pb::Flow::Export, pb::Flow::Import, pb::Flow::Turnover];
const SCOPES: [&str; 4] = ["", "27", "2711", "8703"];

/// A figure's key: pair, year, flow, commodity.
type Key = (usize, i32, usize, usize);

fn scope(i: usize) -> pb::CommodityScope {
    if SCOPES[i].is_empty() {
        all_commodities()
    } else {
        pb::CommodityScope {
            scope: Some(pb::commodity_scope::Scope::HsCode(SCOPES[i].into())),
        }
    }
}

fn record(id: String, (pair, year, flow, sc): Key, units: i64) -> pb::Event {
    let (r, p) = PAIRS[pair];
    let mut e = trade(&id, r, p, year, units);
    let t = record_mut(&mut e);
    t.flow = FLOWS[flow] as i32;
    t.commodity = Some(scope(sc));
    e
}

fn retract(id: String, (pair, year, flow, sc): Key) -> pb::Event {
    let mut e = retraction(&id, PAIRS[pair], FLOWS[flow], year, "withdrawn");
    if let Some(pb::event::Payload::TradeRecordRetracted(r)) = &mut e.payload {
        if let Some(k) = r.key.as_mut() {
            k.commodity = Some(scope(sc));
        }
    }
    e
}

/// Deterministic draws.
struct Draws(u64);

impl Draws {
    fn below(&mut self, n: usize) -> usize {
        self.0 += 1;
        (xxhash_rust::xxh3::xxh3_64(&self.0.to_le_bytes()) % n as u64) as usize
    }
    fn key(&mut self) -> Key {
        (
            self.below(PAIRS.len()),
            2019 + self.below(5) as i32,
            self.below(FLOWS.len()),
            self.below(SCOPES.len()),
        )
    }
}

/// One batch: records and revisions of random keys, and retractions of
/// figures that acknowledged batches left current.
fn batch(draws: &mut Draws, name: &str, current: &mut BTreeSet<Key>) -> Vec<pb::Event> {
    let mut retracted = BTreeSet::new();
    for _ in 0..15 {
        if current.is_empty() {
            break;
        }
        let i = draws.below(current.len());
        if let Some(k) = current.iter().nth(i).copied() {
            current.remove(&k);
            retracted.insert(k);
        }
    }
    let mut events: Vec<pb::Event> = retracted
        .iter()
        .enumerate()
        .map(|(i, k)| retract(format!("{name}-x{i}"), *k))
        .collect();
    for i in 0..85 {
        let k = draws.key();
        if retracted.contains(&k) {
            continue;
        }
        current.insert(k);
        events.push(record(
            format!("{name}-r{i}"),
            k,
            1 + draws.below(1_000_000) as i64,
        ));
    }
    events
}

async fn serving(data: &Path, flags: &[&str]) -> (tokio::process::Child, String) {
    match start_with(data, flags).await {
        Start::Serving(child, url) => (child, url),
        Start::Refused(status, err) => panic!("refused ({status}): {err}"),
    }
}

/// Every view's answer at `as_of`, rendered for comparison.
async fn answers(url: &str, as_of: u64) -> Vec<String> {
    let mut q = QueryServiceClient::connect(url.to_owned()).await.unwrap();
    let mut out = Vec::new();
    for level in [
        pb::CommodityLevel::All,
        pb::CommodityLevel::Hs2,
        pb::CommodityLevel::Hs4,
    ] {
        let records = q
            .stream_trade_records(pb::StreamTradeRecordsRequest {
                filter: Some(pb::FigureFilter {
                    periods: Some(annual_range(2018, 2024)),
                    level: level as i32,
                    ..Default::default()
                }),
                as_of_sequence: as_of,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.push(format!("{level:?} {:?}", drain(records).await.unwrap()));
    }
    for country in ["CN", "KZ", "UZ", "KG"] {
        for level in [pb::CommodityLevel::All, pb::CommodityLevel::Hs4] {
            let view = q
                .stream_country_cooperation(pb::StreamCountryCooperationRequest {
                    country: country.into(),
                    periods: Some(annual_range(2018, 2024)),
                    level: level as i32,
                    as_of_sequence: as_of,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            out.push(format!(
                "{country} {level:?} {:?}",
                drain(view).await.unwrap()
            ));
        }
    }
    for level in [pb::CommodityLevel::Hs2, pb::CommodityLevel::Hs4] {
        let view = q
            .stream_sector_cooperation(pb::StreamSectorCooperationRequest {
                sector: pb::Sector::Energy as i32,
                periods: Some(annual_range(2018, 2024)),
                level: level as i32,
                as_of_sequence: as_of,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.push(format!("energy {level:?} {:?}", drain(view).await.unwrap()));
    }
    let groups = q
        .aggregate(pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                periods: Some(annual_range(2018, 2024)),
                level: pb::CommodityLevel::Hs4 as i32,
                ..Default::default()
            }),
            group_by: vec![
                pb::GroupBy::Reporter as i32,
                pb::GroupBy::Partner as i32,
                pb::GroupBy::Period as i32,
            ],
            as_of_sequence: as_of,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    out.push(format!("aggregate {:?}", drain(groups).await.unwrap()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_killed_while_checkpointing_answers_as_one_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let mut draws = Draws(12);
    let mut current = BTreeSet::new();
    for cycle in 0..6 {
        let (child, url) = serving(&data, &FLAGS).await;
        let mut client = IngestServiceClient::connect(url).await.unwrap();
        for b in 0..6 {
            let events = batch(&mut draws, &format!("c{cycle}-b{b}"), &mut current);
            append(&mut client, events).await.unwrap();
        }
        // One more batch of records only, in flight when the process is
        // killed (stored or not, it leaves every retraction above valid), at
        // a moment that moves from cycle to cycle while checkpoints run.
        let mut last = Vec::new();
        for i in 0..100 {
            let k = draws.key();
            last.push(record(format!("c{cycle}-last-{i}"), k, 7));
        }
        let mut late = client.clone();
        let inflight = tokio::spawn(async move { late.append(pb::AppendRequest::new(last)).await });
        tokio::time::sleep(Duration::from_millis(40 * cycle)).await;
        stop(child).await;
        let _ = inflight.await;
    }
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    let (a, url_a) = serving(&data, &FLAGS).await;
    let (b, url_b) = serving(&copy, &["--rebuild-views"]).await;
    let mut client = IngestServiceClient::connect(url_a.clone()).await.unwrap();
    let last = last_sequence(&mut client).await;
    assert!(last > 3_000, "{last}");
    for as_of in [last, last - 1, last / 2, last / 3 + 7, 150, 1] {
        let (x, y) = (answers(&url_a, as_of).await, answers(&url_b, as_of).await);
        assert_eq!(x.len(), y.len());
        for (x, y) in x.iter().zip(&y) {
            assert!(x == y, "at {as_of}: from the checkpoint\n{x}\nrebuilt\n{y}");
        }
    }
    // The answers are not empty.
    assert!(answers(&url_a, last).await[2].len() > 10_000);
    // Stopped cleanly, the store ends with a checkpoint of everything: the
    // next start replays nothing and answers from the pages and rollups
    // alone, still as the rebuilt copy does.
    terminate(a).await;
    let (a, url_a) = serving(&data, &FLAGS).await;
    for as_of in [last, last / 2, 1] {
        let (x, y) = (answers(&url_a, as_of).await, answers(&url_b, as_of).await);
        for (x, y) in x.iter().zip(&y) {
            assert!(
                x == y,
                "at {as_of} after a clean restart\n{x}\nrebuilt\n{y}"
            );
        }
    }
    // A `--rebuild-views` interrupted by a crash deletes the checkpoint key
    // first and leaves pages, runs and rollups behind: the next start drops
    // them rather than merging them with the views it rebuilds.
    terminate(a).await;
    {
        let db = open_sled(&data);
        let tree = db.open_tree("caravan").unwrap();
        assert!(tree.remove("C").unwrap().is_some());
        assert!(tree.scan_prefix("R").next().is_some());
        db.flush().unwrap();
    }
    let (a, url_a) = serving(&data, &FLAGS).await;
    for as_of in [last, last / 2] {
        let (x, y) = (answers(&url_a, as_of).await, answers(&url_b, as_of).await);
        for (x, y) in x.iter().zip(&y) {
            assert!(
                x == y,
                "at {as_of} after dropping orphaned view keys\n{x}\nrebuilt\n{y}"
            );
        }
    }
    stop(a).await;
    stop(b).await;
}
