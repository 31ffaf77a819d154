//! Cluster mode, one property at a time: replicas that start empty or from
//! a backup catch up; reads say what a node has applied and can wait for
//! a sequence; ingest needs a quorum while reads go on; a store that is not
//! a prefix of the stream is refused; an event larger than a stream message
//! is refused.

use super::{nats_server, node, Nats};
use crate::damage::{start_with, Start};
use crate::helpers::*;
use crate::ops::{backup::caravan, feed_events, http_get, samples, views_digest};
use caravan::proto::v1 as pb;
use pb::ingest_service_client::IngestServiceClient;
use std::time::{Duration, Instant};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn ingest(url: &str) -> IngestServiceClient<tonic::transport::Channel> {
    IngestServiceClient::connect(url.to_owned())
        .await
        .expect("connect")
}

/// Waits until the node at `url` has applied `n` events.
async fn applied(url: &str, n: u64) {
    let mut client = ingest(url).await;
    let began = Instant::now();
    while last_sequence(&mut client).await < n {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "{url} applied {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(url: &str, service: &str) -> i32 {
    let mut client = HealthClient::new(c_channel(url).await);
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

#[tokio::test]
async fn replicas_catch_up_from_nothing_and_from_a_backup_and_read_their_writes() {
    let Some(binary) = nats_server() else { return };
    let nats = Nats::start(&binary).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Small messages: a request's events span many messages of one atomic
    // batch.
    let first = node(
        dirs[0].path(),
        &nats,
        &["--jetstream-max-message-bytes", "1024"],
    )
    .await;
    let mut client = ingest(&first.url).await;
    for batch in 0..6 {
        append(&mut client, feed_events("feed-a", batch * 100, 100))
            .await
            .unwrap();
    }

    // A backup of the first node, restored for the third.
    let backup = dirs[2].path().join("backup");
    let restored = dirs[2].path().join("store");
    let (code, _, err) = caravan(&[
        "backup",
        "--server",
        &first.url,
        "--out",
        backup.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = caravan(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    for batch in 6..8 {
        append(&mut client, feed_events("feed-a", batch * 100, 100))
            .await
            .unwrap();
    }
    // An empty replica replays the stream; the restored one takes the rest.
    let empty = node(dirs[1].path(), &nats, &[]).await;
    let from_backup = node(&restored, &nats, &[]).await;

    // Read-your-writes on another node: the acknowledged sequence as the
    // minimum.
    let acks = append(&mut ingest(&empty.url).await, feed_events("feed-b", 0, 50))
        .await
        .unwrap();
    let wanted = acks.last().unwrap().sequence;
    assert_eq!(wanted, 850);
    let mut request = tonic::Request::new(pb::LookupEventsRequest {
        sequences: vec![wanted],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("caravan-min-sequence", wanted.to_string().parse().unwrap());
    let response = ingest(&from_backup.url)
        .await
        .lookup_events(request)
        .await
        .unwrap();
    let header: u64 = response
        .metadata()
        .get("caravan-applied-sequence")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(header >= wanted);
    assert!(response.metadata().get("caravan-stream-sequence").is_some());
    assert_eq!(
        response.into_inner().events.len(),
        1,
        "its own write, read on another node"
    );

    // A sequence no node has: FAILED_PRECONDITION at the deadline.
    let mut request = tonic::Request::new(pb::LookupEventsRequest::default());
    request
        .metadata_mut()
        .insert("caravan-min-sequence", "1000000".parse().unwrap());
    request.set_timeout(Duration::from_millis(300));
    let refused = ingest(&first.url)
        .await
        .lookup_events(request)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // An event larger than a stream message may be is refused, nothing
    // stored.
    let mut large = feed_events("feed-c", 0, 1);
    record_mut(&mut large[0]).note = "n".repeat(2000);
    let refused = append(&mut client, large).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );

    for n in [&first, &empty, &from_backup] {
        applied(&n.url, 850).await;
    }
    let mut digests = Vec::new();
    for n in [&first, &empty, &from_backup] {
        let mut c = ingest(&n.url).await;
        assert_eq!(last_sequence(&mut c).await, 850);
        digests.push((
            log_digest(&mut c, 850).await,
            views_digest(c_channel(&n.url).await, 850).await,
        ));
    }
    assert!(digests.iter().all(|d| *d == digests[0]));
    // A cluster node stops cleanly on SIGTERM (status 0), and starts again
    // on its store.
    let data = first.data.clone();
    crate::damage::terminate(first.child).await;
    let again = node(&data, &nats, &[]).await;
    assert_eq!(last_sequence(&mut ingest(&again.url).await).await, 850);
}

async fn c_channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_a_quorum_ingest_is_not_serving_and_reads_go_on() {
    let Some(binary) = nats_server() else { return };
    let mut nats = Nats::start(&binary).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), &nats, &["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics = |n: &super::Node| {
        let at = n.metrics.expect("metrics address");
        async move { samples(&http_get(at, "/metrics", None).await.1) }
    };
    let mut client = ingest(&n.url).await;
    append(&mut client, feed_events("feed-a", 0, 10))
        .await
        .unwrap();
    let ingest_service = "caravan.v1.IngestService";
    let query_service = "caravan.v1.QueryService";
    assert_eq!(health(&n.url, ingest_service).await, 1);

    nats.kill(0);
    nats.kill(1);
    let began = Instant::now();
    while health(&n.url, ingest_service).await != 2 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "ingest NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health(&n.url, query_service).await, 1, "queries SERVING");
    let refused = append(&mut client, feed_events("feed-a", 10, 10))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(last_sequence(&mut client).await, 10, "reads go on");
    let found = client
        .lookup_events(pb::LookupEventsRequest::default())
        .await
        .unwrap();
    let silence: u64 = found
        .metadata()
        .get("caravan-stream-silence-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        silence >= 1000,
        "the answer says how stale it may be: {silence} ms"
    );

    let m = metrics(&n).await;
    assert_eq!(m["caravan_cluster_quorum"], 0.0);
    assert_eq!(m["caravan_cluster_stream_head"], 10.0);
    assert!(m["caravan_cluster_stream_silence_seconds"] >= 1.0);
    nats.restart(0).unwrap();
    nats.restart(1).unwrap();
    let began = Instant::now();
    while health(&n.url, ingest_service).await != 1 {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "ingest SERVING again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acks = append(&mut client, feed_events("feed-a", 10, 10))
        .await
        .unwrap();
    assert_eq!(acks.last().unwrap().sequence, 20);
    let m = metrics(&n).await;
    assert_eq!(m["caravan_cluster_quorum"], 1.0);
    assert_eq!(m["caravan_cluster_stream_head"], 20.0);
    assert_eq!(m["caravan_cluster_apply_lag_events"], 0.0);
}

#[tokio::test]
async fn a_store_that_is_not_a_prefix_of_the_stream_is_refused() {
    let Some(binary) = nats_server() else { return };
    let nats = Nats::start(&binary).await.unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let n = node(cluster_dir.path(), &nats, &[]).await;
    append(&mut ingest(&n.url).await, feed_events("feed-a", 0, 5))
        .await
        .unwrap();

    // An embedded store with other events at the same sequences.
    let other = tempfile::tempdir().unwrap();
    let app = spawn_app_in(other, |_| {}).await;
    append(&mut app.ingest().await, feed_events("feed-b", 0, 5))
        .await
        .unwrap();
    let other = app.stop().await;
    match start_with(&store_path(other.path()), &["--jetstream", &nats.urls()]).await {
        Start::Refused(status, err) => {
            assert!(!status.success());
            assert!(
                err.contains("not a replica") && err.contains("event 5 differs"),
                "{err}"
            );
        }
        Start::Serving(..) => panic!("a store that is not a prefix of the stream was served"),
    }
}
