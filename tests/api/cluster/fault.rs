//! The fault test: 4 feeds send 20,000 events in batches of 100 to random
//! caravan nodes while the stream leader is killed (25 %), a caravan node is
//! killed (50 %) and a nats node is paused for 5 s (75 %); then everything
//! restarts and every node must hold the same log and the same answers.

use super::{nats_server, node, Nats};
use crate::damage::stop;
use crate::helpers::*;
use crate::ops::{feed_events, views_digest};
use caravan::proto::v1 as pb;
use pb::ingest_service_client::IngestServiceClient;
use pb::subscription_service_client::SubscriptionServiceClient;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::transport::Channel;

const FEEDS: [&str; 4] = ["feed-a", "feed-b", "feed-c", "feed-d"];
const BATCHES_PER_FEED: usize = 50;
const BATCH: usize = 100;
/// How long one batch may take, retries included, before the test fails.
const BATCH_PATIENCE: Duration = Duration::from_secs(90);

fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

/// Every batch's acknowledgements, by (feed, batch).
type Acked = HashMap<(String, usize), Vec<pb::Ack>>;

/// A small deterministic generator for picking nodes.
struct Pick(u64);

impl Pick {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Sends one batch to random nodes until one acknowledges it.
async fn send(urls: &Mutex<Vec<String>>, events: &[pb::Event], pick: &mut Pick) -> Vec<pb::Ack> {
    let began = Instant::now();
    loop {
        let url = {
            let urls = urls.lock().unwrap();
            urls[pick.next(urls.len())].clone()
        };
        let mut client = IngestServiceClient::new(channel(&url));
        match append(&mut client, events.to_vec()).await {
            Ok(acks) => return acks,
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                    ),
                    "a failure a feed retries, not {status:?}"
                );
                assert!(
                    began.elapsed() < BATCH_PATIENCE,
                    "a batch acknowledged in time: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The sequences a node reports as applied, sampled until `stop`.
async fn sample(url: String, stop: watch::Receiver<bool>) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut client = IngestServiceClient::new(channel(&url));
    while !*stop.borrow() {
        if let Ok(r) = client
            .lookup_events(pb::LookupEventsRequest::default())
            .await
        {
            seen.insert(r.into_inner().last_sequence);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    seen
}

/// Follows the log from the beginning on `urls[0]`, and on another node from
/// its checkpoint whenever the one it reads fails, until it has seen `until`.
async fn subscribe(
    urls: Arc<Mutex<Vec<String>>>,
    first: String,
    until: watch::Receiver<u64>,
) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let mut resume = 0u64;
    let mut url = first;
    let began = Instant::now();
    loop {
        let target = *until.borrow();
        if target > 0 && resume >= target {
            return seen;
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "the subscriber caught up"
        );
        let mut client = SubscriptionServiceClient::new(channel(&url));
        let request = pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSequence(resume)),
            ..Default::default()
        };
        if let Ok(response) = client.subscribe(request).await {
            let mut stream = response.into_inner();
            loop {
                let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
                match next {
                    Ok(Ok(Some(m))) => {
                        for e in m.events {
                            seen.push(e.sequence);
                            resume = resume.max(e.sequence);
                        }
                        resume = resume.max(m.checkpoint);
                    }
                    Ok(_) => break,
                    Err(_) => {
                        let target = *until.borrow();
                        if target > 0 && resume >= target {
                            return seen;
                        }
                    }
                }
            }
        }
        // The node failed: another one, from the checkpoint.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let urls = urls.lock().unwrap();
        url = urls.iter().find(|u| **u != url).cloned().unwrap_or(url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_event_is_lost_when_nodes_die() {
    let Some(binary) = nats_server() else { return };
    let began = Instant::now();
    let mut nats = Nats::start(&binary).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let window = ["--jetstream-duplicate-window-secs", "2"];
    let mut nodes = Vec::new();
    for d in &dirs {
        nodes.push(super::node(d.path(), &nats, &window).await);
    }
    let urls = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>(),
    ));

    // Samplers of every node's applied sequence, and a subscriber on the
    // node that will be killed.
    let (stop_tx, stop_rx) = watch::channel(false);
    let samplers: Vec<_> = nodes
        .iter()
        .map(|n| tokio::spawn(sample(n.url.clone(), stop_rx.clone())))
        .collect();
    let (until_tx, until_rx) = watch::channel(0u64);
    let subscriber = tokio::spawn(subscribe(Arc::clone(&urls), nodes[1].url.clone(), until_rx));

    let progress = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut feeds = Vec::new();
    for (f, feed) in FEEDS.iter().enumerate() {
        let (urls, progress, acked) =
            (Arc::clone(&urls), Arc::clone(&progress), Arc::clone(&acked));
        feeds.push(tokio::spawn(async move {
            let mut pick = Pick(0x9e37_79b9 + f as u64 * 7919);
            for batch in 0..BATCHES_PER_FEED {
                let events = feed_events(feed, batch * BATCH, BATCH);
                let acks = send(&urls, &events, &mut pick).await;
                assert_eq!(acks.len(), BATCH);
                acked
                    .lock()
                    .unwrap()
                    .insert((feed.to_string(), batch), acks);
                progress.fetch_add(1, Ordering::AcqRel);
            }
        }));
    }
    let total = FEEDS.len() * BATCHES_PER_FEED;
    let reach = |share: usize| {
        let progress = Arc::clone(&progress);
        async move {
            while progress.load(Ordering::Acquire) < total * share / 100 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    reach(25).await;
    let leader = nats.leader("caravan").await.unwrap();
    nats.kill(leader);
    reach(50).await;
    let killed = nodes.remove(1);
    let killed_data = killed.data.clone();
    stop(killed.child).await;
    reach(75).await;
    let paused = (leader + 1) % 3;
    nats.signal(paused, "-STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.signal(paused, "-CONT");
    for f in feeds {
        f.await.expect("a feed finished");
    }

    // Everything back.
    nats.restart(leader).unwrap();
    let restarted = node(&killed_data, &nats, &window).await;
    urls.lock().unwrap()[1] = restarted.url.clone();
    nodes.insert(1, restarted);

    // The stream's head, and every node at it.
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let last_acked = acked.values().flatten().map(|a| a.sequence).max().unwrap();
    let mut heads = Vec::new();
    let settle = Instant::now();
    loop {
        heads.clear();
        for n in &nodes {
            heads.push(last_sequence(&mut IngestServiceClient::new(channel(&n.url))).await);
        }
        if heads.iter().all(|h| *h == heads[0] && *h >= last_acked) {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(60),
            "every node caught up: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = heads[0];
    until_tx.send_replace(n);
    stop_tx.send_replace(true);

    // Every node: sequences 1..n, each (feed, id) once, every acknowledged
    // event at its acknowledged sequence; the same log and views digests.
    let mut digests = Vec::new();
    let mut logs = Vec::new();
    for node in &nodes {
        let mut client = IngestServiceClient::new(channel(&node.url));
        let mut at: HashMap<(String, String), u64> = HashMap::new();
        let mut next = 1;
        while next <= n {
            let upto = (next + 999).min(n);
            let found = client
                .lookup_events(pb::LookupEventsRequest {
                    sequences: (next..=upto).collect(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(
                found.missing_sequences.is_empty(),
                "a gap: {:?}",
                found.missing_sequences
            );
            for e in found.events {
                let ev = e.event.unwrap();
                let before = at.insert((ev.feed.clone(), ev.event_id.clone()), e.sequence);
                assert!(before.is_none(), "{}/{} stored twice", ev.feed, ev.event_id);
            }
            next = upto + 1;
        }
        for ((feed, batch), acks) in &acked {
            for (i, ack) in acks.iter().enumerate() {
                let id = format!("{feed}-{}", batch * BATCH + i);
                assert_eq!(
                    at.get(&(feed.clone(), id.clone())),
                    Some(&ack.sequence),
                    "{id}"
                );
            }
        }
        digests.push((
            log_digest(&mut client, n).await,
            views_digest(channel(&node.url), n).await,
        ));
        logs.push(at);
    }
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "the same log and answers on every node"
    );

    // Every batch is one range of sequences, and no node ever showed part
    // of one.
    let at = &logs[0];
    let mut ranges = Vec::new();
    for feed in FEEDS {
        for batch in 0..BATCHES_PER_FEED {
            let seqs: Vec<u64> = (0..BATCH)
                .map(|i| at[&(feed.to_string(), format!("{feed}-{}", batch * BATCH + i))])
                .collect();
            let (lo, hi) = (seqs[0], seqs[BATCH - 1]);
            assert_eq!(
                hi - lo + 1,
                BATCH as u64,
                "batch {feed}/{batch} is one range"
            );
            ranges.push((lo, hi));
        }
    }
    for s in samplers {
        let seen = s.await.unwrap();
        for (lo, hi) in &ranges {
            assert!(
                seen.range(lo..hi).next().is_none(),
                "a node showed part of {lo}..={hi}"
            );
        }
    }

    // The subscriber moved from the killed node to another one: every
    // sequence once, in order.
    let seen = subscriber.await.unwrap();
    assert_eq!(
        seen,
        (1..=n).collect::<Vec<_>>(),
        "no gap and no repeat across failover"
    );

    // Past JetStream's duplicate window, re-sent events are still
    // duplicates, at their first sequence; the same id with other content
    // is refused.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut pick = Pick(42);
    for feed in FEEDS {
        let acks = send(&urls, &feed_events(feed, 0, BATCH), &mut pick).await;
        for (ack, first) in acks.iter().zip(&acked[&(feed.to_string(), 0)]) {
            assert!(ack.duplicate, "a re-sent event is a duplicate");
            assert_eq!(ack.sequence, first.sequence);
        }
    }
    let mut other = feed_events("feed-a", 0, 1);
    record_mut(&mut other[0]).value = Some(money(1));
    let mut client = IngestServiceClient::new(channel(&nodes[2].url));
    let refused = append(&mut client, other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert_eq!(last_sequence(&mut client).await, n, "nothing stored");
    eprintln!("cluster fault test: {n} events in {:?}", began.elapsed());
}
