//! A full disk is a state, not a crash: on a small tmpfs (where this machine
//! may mount one; skipped with the reason printed where it may not), the
//! real binary stops acknowledging before the disk is full, says so in its
//! health (ingest NOT_SERVING, queries SERVING), its metrics and its log,
//! goes on serving every acknowledged event, takes appends again once space
//! is freed, and after a restart holds every acknowledged event.

use super::backup::caravan;
use super::*;
use crate::damage::terminate;
use caravan::proto::v1::subscription_service_client::SubscriptionServiceClient;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount cannot run: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Starts the binary; (child, gRPC URL, metrics address).
async fn serve(data: &Path) -> (Child, String, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--min-free-disk-mib", "8", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = Vec::new();
    for _ in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("announces itself")
            .unwrap()
            .unwrap_or_default();
        next.push(line);
    }
    let (grpc, metrics) = (next[0].clone(), next[1].clone());
    let url = format!(
        "http://{}",
        grpc.strip_prefix("caravan listening on ").expect(&grpc)
    );
    let metrics = metrics
        .strip_prefix("caravan metrics on http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .expect(&metrics)
        .parse()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log).await;
        // The way the test ends is visible in its output.
        eprintln!("server log:\n{log}");
    });
    (child, url, metrics)
}

async fn health(url: &str, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn a_full_disk_stops_acknowledging_serves_reads_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let mount_point = root.path().join("disk");
    std::fs::create_dir(&mount_point).unwrap();
    let _disk = match Tmpfs::mount(&mount_point, 24) {
        Ok(d) => d,
        Err(why) => {
            println!(
                "SKIPPED: no tmpfs can be mounted here ({why}); the full-disk test needs root"
            );
            return;
        }
    };
    // Most of the disk taken by something else.
    let filler = mount_point.join("filler");
    std::fs::write(&filler, vec![1u8; 10 << 20]).unwrap();
    let data = mount_point.join("store");
    let (child, url, metrics) = serve(&data).await;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ingest =
        caravan::proto::v1::ingest_service_client::IngestServiceClient::new(channel.clone());

    // Appends until the server refuses them.
    let mut acked: Vec<pb::Ack> = Vec::new();
    let refusal = loop {
        assert!(acked.len() < 2_000_000, "the disk never filled");
        match append(&mut ingest, feed_events("feed-a", acked.len(), 5000)).await {
            Ok(acks) => acked.extend(acks),
            Err(status) => break status,
        }
    };
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(
        refusal.message().contains("--min-free-disk-mib"),
        "{}",
        refusal.message()
    );
    let last = acked.last().expect("some acknowledged").sequence;
    println!("refused after {} events ({last})", acked.len());

    // A state: health, metrics.
    let ingest_name = "caravan.v1.IngestService";
    let down = eventually(Duration::from_secs(5), || async {
        (health(&url, ingest_name).await == ServingStatus::NotServing as i32)
            .then_some(())
            .ok_or(())
    })
    .await;
    assert!(down.is_some(), "ingest turns NOT_SERVING");
    assert_eq!(
        health(&url, "caravan.v1.QueryService").await,
        ServingStatus::Serving as i32
    );
    assert_eq!(
        health(&url, "caravan.v1.SubscriptionService").await,
        ServingStatus::Serving as i32
    );
    let (_, text) = http_get(metrics, "/metrics", None).await;
    let s = samples(&text);
    assert_eq!(s["caravan_store_writable"], 0.0);
    assert!(s["caravan_store_write_failures_total{reason=\"disk_low\"}"] >= 1.0);
    assert_eq!(s["caravan_durable_sequence"], last as f64);

    // Reads go on: every acknowledged event, by sequence and to a subscriber.
    let digest = log_digest(&mut ingest, last).await;
    let mut subscribe = SubscriptionServiceClient::new(channel.clone());
    let mut stream = subscribe
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSequence(last - 10)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while seen < last {
        let m = stream.message().await.unwrap().expect("events");
        seen = m
            .events
            .last()
            .map_or(seen, |e| e.sequence)
            .max(m.checkpoint);
    }
    assert_eq!(seen, last);
    let (n, _, _) = views_digest(channel.clone(), 0).await;
    assert!(n > 0);

    // Space freed: appends are taken again, by themselves.
    std::fs::remove_file(&filler).unwrap();
    let more = feed_events("feed-a", 5_000_000, 10);
    let resumed = eventually(Duration::from_secs(10), || {
        let more = more.clone();
        let mut ingest = ingest.clone();
        async move { append(&mut ingest, more).await.map_err(|_| ()) }
    })
    .await
    .expect("appends resume once space is freed");
    assert_eq!(resumed[0].sequence, last + 1);
    acked.extend(resumed);
    let up = eventually(Duration::from_secs(5), || async {
        (health(&url, ingest_name).await == ServingStatus::Serving as i32)
            .then_some(())
            .ok_or(())
    })
    .await;
    assert!(up.is_some(), "ingest SERVING again");

    // A start on a disk with no space at all says so in one line.
    terminate(child).await;
    let full = mount_point.join("everything");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&full).unwrap();
        let block = vec![7u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a start on a full disk is refused");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("is full") && err.contains("free space"),
        "{err}"
    );
    std::fs::remove_file(&full).unwrap();

    // And after a restart every acknowledged event is there.
    let (child, url, _) = serve(&data).await;
    let mut again = caravan::proto::v1::ingest_service_client::IngestServiceClient::new(
        tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let total = acked.last().unwrap().sequence;
    assert_eq!(last_sequence(&mut again).await, total);
    assert_eq!(log_digest(&mut again, last).await, digest);
    for chunk in acked.chunks(1000) {
        let found = again
            .lookup_events(pb::LookupEventsRequest {
                sequences: chunk.iter().map(|a| a.sequence).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = found
            .events
            .iter()
            .map(|e| e.event.as_ref().unwrap().event_id.as_str())
            .collect();
        let want: Vec<&str> = chunk.iter().map(|a| a.event_id.as_str()).collect();
        assert_eq!(ids, want);
    }
    terminate(child).await;
    // The store passes verify.
    let (code, out, err) = caravan(&["verify", "--data-dir", data.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
}
