//! The real `caravan` binary: SIGKILL right after acknowledgements loses
//! nothing acknowledged; SIGTERM shuts down cleanly with exit status 0; the
//! debug log follows a request from the edge to fsync and back. (What
//! refuses a start is in `identities/startup.rs`.)

use crate::helpers::*;
use caravan::proto::v1 as pb;
use caravan::proto::v1::ingest_service_client::IngestServiceClient;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `caravan serve` on a free port and returns it with its address.
async fn start_binary(data_dir: &Path) -> (Child, String) {
    start_binary_with(data_dir, &[]).await
}

/// Starts `caravan serve` with extra flags; its warnings go to the test's
/// stderr.
async fn start_binary_with(data_dir: &Path, flags: &[&str]) -> (Child, String) {
    start_binary_logging(data_dir, flags, "warn", Stdio::inherit()).await
}

/// Starts `caravan serve` with extra flags, `RUST_LOG` and its stderr.
async fn start_binary_logging(
    data_dir: &Path,
    flags: &[&str],
    log: &str,
    stderr: Stdio,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the server announces its address")
        .expect("read stdout")
        .expect("a line");
    let addr = line
        .strip_prefix("caravan listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, format!("http://{addr}"))
}

#[tokio::test]
async fn sigkill_right_after_acknowledgements_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = store_path(dir.path());
    let (mut child, url) = start_binary(&data).await;

    // Four feeds append batches as fast as they can; every ack is recorded.
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel::<pb::Ack>();
    let mut feeds = Vec::new();
    for feed in 0..4 {
        let url = url.clone();
        let acks_tx = acks_tx.clone();
        feeds.push(tokio::spawn(async move {
            let mut client = IngestServiceClient::connect(url).await.expect("connect");
            for batch in 0.. {
                let events = (0..100)
                    .map(|i| trade(&format!("k{feed}-{batch}-{i}"), "CN", "KZ", 1900 + i, batch))
                    .collect();
                match append(&mut client, events).await {
                    Ok(acks) => acks.into_iter().for_each(|a| {
                        let _ = acks_tx.send(a);
                    }),
                    Err(_) => return, // the server died
                }
            }
        }));
    }
    drop(acks_tx);
    // Kill as soon as enough acknowledgements have arrived.
    let mut acked = Vec::new();
    while acked.len() < 4_000 {
        acked.push(acks_rx.recv().await.expect("acks flow"));
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    for f in feeds {
        f.await.unwrap();
    }
    while let Some(a) = acks_rx.recv().await {
        acked.push(a);
    }

    let (mut child, url) = start_binary(&data).await;
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    let last = last_sequence(&mut client).await;
    assert!(last >= acked.iter().map(|a| a.sequence).max().unwrap());
    for chunk in acked.chunks(1_000) {
        let found = client
            .lookup_events(pb::LookupEventsRequest {
                event_ids: chunk.iter().map(|a| a.event_id.clone()).collect(),
                sequences: vec![],
                feed: "test-feed".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            found.missing_event_ids.is_empty(),
            "lost: {:?}",
            found.missing_event_ids
        );
        for (ack, stored) in chunk.iter().zip(&found.events) {
            assert_eq!(ack.sequence, stored.sequence, "{}", ack.event_id);
        }
    }
    // Sequences continue without a gap after the recovered log.
    let next = append(&mut client, vec![trade("after-kill", "CN", "KZ", 2000, 1)])
        .await
        .unwrap();
    assert_eq!(next[0].sequence, last + 1);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly_with_status_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = store_path(dir.path());
    let (mut child, url) = start_binary(&data).await;
    let mut client = IngestServiceClient::connect(url.clone()).await.unwrap();
    append(&mut client, vec![trade("t1", "CN", "KZ", 2000, 1)])
        .await
        .unwrap();
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the drain deadline")
        .unwrap();
    assert!(status.success(), "{status:?}");
    // And the store opens again with the event.
    let (mut child, url) = start_binary(&data).await;
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    assert_eq!(last_sequence(&mut client).await, 1);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn the_demo_prints_the_founding_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "70.07 bn",           // the computed sum of the five
        "70.20 bn",           // the published total beside it
        "+23.6 %",            // Kazakhstan 2021 → 2022
        "24.10 bn",           // Kazakhstan's own 2022 turnover
        "19.72 bn",           // China's 2023 exports to Kyrgyzstan …
        "5.40 bn",            // … against Kyrgyzstan's imports from China
        "0.84 bn",            // Tajikistan's imports from China, 2022
        "13.70 bn",           // Uzbekistan's own 2023 turnover
        "10.25 bn (+51.0 %)", // China's gas imports from Turkmenistan, 2022
        "1.07 bn (+33.9 %)",  // … from Uzbekistan, China's customs
        "905,700,000",        // Uzbekistan's own figure for them
        "164,300,000",        // the gap, exact
        "2,040,000,000",      // Kazakh copper ores
        "79,131 cars",        // Kyrgyzstan's cars from China, 2023
        "MoU on investment cooperation in green minerals",
        "MoU on cooperation in digital trade",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

/// Peak resident memory of a process, in MiB (Linux).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Ingests 100,000 events of about 2.2 KB into a fresh server, with or without
/// a subscriber that never reads, and returns the server's peak RSS.
async fn peak_rss_ingesting(with_stalled_subscriber: bool) -> f64 {
    use caravan::proto::v1::subscription_service_client::SubscriptionServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start_binary_with(
        &store_path(dir.path()),
        &["--subscription-buffer", "2", "--recent-events", "1024"],
    )
    .await;
    let pid = child.id().expect("pid");
    let mut stalled = None;
    if with_stalled_subscriber {
        // Small HTTP/2 windows: the server cannot push it much.
        let stream = SubscriptionServiceClient::new(small_window_channel(&url).await)
            .subscribe(pb::SubscribeRequest {
                start: Some(pb::subscribe_request::Start::FromBeginning(
                    pb::FromBeginning {},
                )),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stalled = Some(stream);
    }
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), async {
        for b in 0..100 {
            let events = (0..1_000)
                .map(|i| {
                    let mut e = trade(&format!("m{b}-{i}"), "CN", "KZ", 1900 + (i % 200), i as i64);
                    record_mut(&mut e).note = "n".repeat(2_000);
                    e
                })
                .collect();
            append(&mut client, events).await.unwrap();
        }
    })
    .await
    .expect("ingestion completes");
    // Give a subscriber that would buffer without limit time to do so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = peak_rss_mib(pid);
    drop(stalled);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    peak
}

#[tokio::test]
async fn a_stalled_subscriber_keeps_the_servers_memory_bounded() {
    let baseline = peak_rss_ingesting(false).await;
    let stalled = peak_rss_ingesting(true).await;
    eprintln!("server peak RSS: {baseline:.0} MiB without a subscriber, {stalled:.0} MiB with a stalled one");
    // The stalled subscription may hold 2 messages of about 1 MiB, one read
    // batch of 1,024 events (~2.3 MB) and HTTP/2 buffers; the rest is noise of
    // the allocator between two processes. Buffering the 100,000 events
    // (~220 MB on the wire) for it would exceed the bound several times over.
    assert!(
        stalled - baseline < 64.0,
        "a stalled subscriber cost {:.0} MiB",
        stalled - baseline
    );
}

#[tokio::test]
async fn the_debug_log_follows_one_request_from_the_edge_to_fsync_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start_binary_logging(
        &store_path(dir.path()),
        &[],
        "caravan=debug",
        Stdio::piped(),
    )
    .await;
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    let events = vec![
        trade("log-1", "CN", "KZ", 2021, 1),
        trade("log-2", "CN", "KZ", 2022, 2),
    ];
    append(&mut client, events).await.unwrap();
    drop(client);
    // SIGTERM: a clean shutdown, after which stderr is complete.
    signal(&child, "-TERM");
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{log}"))
            .to_string()
    };
    // The RPC's span names the method and the peer; its id ties the lines.
    let parsed = find("parsed; queued for the writer events=2");
    assert!(
        parsed.contains("method=\"/caravan.v1.IngestService/Append\"") && parsed.contains("peer="),
        "{parsed}"
    );
    let id = parsed
        .split("rpc{id=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("an rpc id")
        .to_owned();
    let in_span = format!("rpc{{id={id} ");
    // The group commit that fsynced the two events, with its time…
    let fsynced = find("written and fsynced first_sequence=1 new_events=2");
    assert!(fsynced.contains("group_commit{group=1"), "{fsynced}");
    assert!(fsynced.contains("fsync_us="), "{fsynced}");
    // …then, inside the RPC's span, the acknowledgement and the outcome.
    let durable = find("durable and visible; acknowledging group=1");
    assert!(durable.contains(&in_span), "{durable}");
    let finished = find("rpc finished code=Ok");
    assert!(finished.contains(&in_span), "{finished}");
    assert!(finished.contains("request_bytes=") && finished.contains("duration_us="));
    let at = |l: &str| lines.iter().position(|x| *x == l).unwrap();
    assert!(
        at(&parsed) < at(&fsynced) && at(&fsynced) < at(&durable) && at(&durable) < at(&finished)
    );
}
