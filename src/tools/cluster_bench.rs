//! `caravan bench --jetstream`: ingest through a local 3-node cluster (3
//! nats-server, R3, `sync_interval: always`; 3 caravan nodes) against one
//! embedded node, in the same run, each a separate `caravan serve` process:
//! events/s, acknowledgement latency, and how far the replicas trail.
//!
//! Depends on the bench's passes, the local NATS cluster and the generated
//! clients.

use super::bench::{pass_to, percentile, spawn_server_with, stop_server, Mode, Scenario};
use super::local_nats::LocalNats;
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_client::IngestServiceClient;
use serde_json::json;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Client = IngestServiceClient<tonic::transport::Channel>;

async fn applied(client: &mut Client) -> u64 {
    client
        .lookup_events(pb::LookupEventsRequest::default())
        .await
        .map_or(0, |r| r.into_inner().last_sequence)
}

/// One pass to `send` while a sampler watches how far the slowest node of
/// `watch` trails the fastest; then how long until every node holds the
/// last acknowledged event.
async fn measured_pass(
    watch: &[String],
    send: &[String],
    s: &Scenario,
    events: &[pb::Event],
) -> Result<serde_json::Value, Box<dyn Error>> {
    let mut clients = Vec::new();
    for u in watch {
        clients.push(IngestServiceClient::connect(u.clone()).await?);
    }
    let done = Arc::new(AtomicBool::new(false));
    let max_lag = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, max_lag, mut clients) =
            (Arc::clone(&done), Arc::clone(&max_lag), clients.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                let mut seen = Vec::new();
                for c in clients.iter_mut() {
                    seen.push(applied(c).await);
                }
                let (lo, hi) = (seen.iter().min(), seen.iter().max());
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    max_lag.fetch_max(hi - lo, Ordering::AcqRel);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let m = pass_to(send, s, events).await?;
    let acked = Instant::now();
    let mut head = 0;
    for c in clients.iter_mut() {
        head = head.max(applied(c).await);
    }
    for c in clients.iter_mut() {
        while applied(c).await < head {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let caught_up = acked.elapsed();
    done.store(true, Ordering::Release);
    let _ = sampler.await;
    let rate = m.events as f64 / m.elapsed.as_secs_f64();
    Ok(json!({
        "events": m.events,
        "events_per_s": rate.round(),
        "ack_p50_ms": percentile(&m.latencies, 0.50).as_secs_f64() * 1e3,
        "ack_p99_ms": percentile(&m.latencies, 0.99).as_secs_f64() * 1e3,
        "replica_max_lag_events": max_lag.load(Ordering::Acquire),
        "replicas_caught_up_ms": caught_up.as_secs_f64() * 1e3,
    }))
}

/// Runs the comparison with `n` events per pass.
pub(crate) async fn cluster(
    nats_server: &std::path::Path,
    n: usize,
) -> Result<serde_json::Value, Box<dyn Error>> {
    let scenario = Scenario {
        name: "Append, batches of 1000, 4 feeds".into(),
        mode: Mode::Unary { batch: 1000 },
        feeds: 4,
        events: n,
        duplicates: false,
    };
    let events = super::bench::synthetic_events("bench", n, 7);

    // Embedded: one separate process, the same requests.
    let dir = tempfile::tempdir()?;
    let (child, url) = spawn_server_with(&dir.path().join("embedded"), &[]).await?;
    let urls = [url];
    let embedded = measured_pass(&urls, &urls, &scenario, &events).await?;
    stop_server(child)?;

    // Cluster: fresh NATS cluster and nodes per pass.
    let mut passes = Vec::new();
    for (name, entry_nodes) in [("one entry node", 1), ("feeds spread over 3 nodes", 3)] {
        let nats = LocalNats::start(nats_server).await?;
        let mut children = Vec::new();
        let mut urls = Vec::new();
        for i in 0..3 {
            let flags = ["--jetstream".to_owned(), nats.urls()];
            let (child, url) =
                spawn_server_with(&dir.path().join(format!("{name}-{i}")), &flags).await?;
            children.push(child);
            urls.push(url);
        }
        let figures = measured_pass(&urls, &urls[..entry_nodes], &scenario, &events).await?;
        for child in children {
            stop_server(child)?;
        }
        passes.push((name, figures));
    }
    let rate = |v: &serde_json::Value| v["events_per_s"].as_f64().unwrap_or(0.0);
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "Append, batches of 1000, 4 feeds",
        "events/s",
        "of embedded",
        "ack p50",
        "ack p99",
        "replica lag (max)",
        "replicas caught up",
    ]);
    let row = |name: &str, v: &serde_json::Value| {
        [
            name.to_owned(),
            format!("{:.0}", rate(v)),
            format!("{:.0} %", 100.0 * rate(v) / rate(&embedded)),
            format!("{:.1} ms", v["ack_p50_ms"].as_f64().unwrap_or(0.0)),
            format!("{:.1} ms", v["ack_p99_ms"].as_f64().unwrap_or(0.0)),
            format!("{} events", v["replica_max_lag_events"]),
            format!(
                "{:.0} ms",
                v["replicas_caught_up_ms"].as_f64().unwrap_or(0.0)
            ),
        ]
    };
    table.add_row(row("embedded (one process)", &embedded));
    for (name, v) in &passes {
        table.add_row(row(&format!("cluster, {name}"), v));
    }
    println!("{table}");
    println!(
        "cluster: 3 nats-server (R3, sync_interval always) and 3 caravan nodes, all on this \
         machine's cores with the bench client"
    );
    let mut report = serde_json::Map::new();
    report.insert("embedded".into(), embedded.clone());
    for (name, v) in passes {
        let mut v = v;
        v["ratio_to_embedded"] = json!(rate(&v) / rate(&embedded));
        report.insert(format!("cluster, {name}"), v);
    }
    Ok(serde_json::Value::Object(report))
}
