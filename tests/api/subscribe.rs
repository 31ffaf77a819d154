//! SubscriptionService: exactly-once, in-order delivery across the catch-up /
//! live seam under concurrent feeds; resumption; stalled subscribers; limits;
//! shutdown.

use crate::helpers::*;
use caravan::proto::v1 as pb;
use caravan::proto::v1::subscription_service_client::SubscriptionServiceClient;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

const COUNTRIES: [&str; 6] = ["KZ", "KG", "TJ", "TM", "UZ", "DE"];

async fn subscriber(app: &TestApp) -> SubscriptionServiceClient<Channel> {
    SubscriptionServiceClient::new(app.channel().await)
}

fn from_beginning() -> Option<pb::subscribe_request::Start> {
    Some(pb::subscribe_request::Start::FromBeginning(
        pb::FromBeginning {},
    ))
}

/// The i-th event of feed `f`: trade records with various partners and HS
/// chapters; every 50th an agreement, every 50th + 1 its status change.
fn feed_event(f: usize, i: usize) -> pb::Event {
    let id = format!("f{f}-{i}");
    match i % 50 {
        0 => {
            let mut a = agreement(&id, &format!("ag-{f}-{i}"));
            if let Some(pb::event::Payload::Agreement(ag)) = &mut a.payload {
                ag.parties = vec!["CN".into(), COUNTRIES[(f + i) % COUNTRIES.len()].into()];
            }
            a
        }
        1 => status_change(&id, &format!("ag-{f}-{}", i - 1)),
        _ => {
            let mut e = trade(
                &id,
                "CN",
                COUNTRIES[(i / 7 + f) % COUNTRIES.len()],
                2000 + (i % 25) as i32,
                i as i64,
            );
            record_mut(&mut e).commodity = Some(pb::CommodityScope {
                scope: Some(pb::commodity_scope::Scope::HsCode(format!(
                    "{:02}{:04}",
                    [27, 26, 10, 84][i % 4],
                    i % 10_000
                ))),
            });
            e
        }
    }
}

/// What a filter selects, computed independently of the server.
#[derive(Clone)]
struct Want {
    kinds: Vec<pb::EventKind>,
    countries: Vec<&'static str>,
    sectors: Vec<pb::Sector>,
}

impl Want {
    fn request(&self, start: Option<pb::subscribe_request::Start>) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            start,
            kinds: self.kinds.iter().map(|k| *k as i32).collect(),
            countries: self.countries.iter().map(|c| c.to_string()).collect(),
            sectors: self.sectors.iter().map(|s| *s as i32).collect(),
        }
    }

    /// `agreements` maps an agreement id to its parties (for status changes).
    fn matches(&self, e: &pb::Event, agreements: &BTreeMap<String, Vec<String>>) -> bool {
        use pb::event::Payload as P;
        let hs_sector = |r: &pb::TradeRecord| match &r.commodity.as_ref().unwrap().scope {
            Some(pb::commodity_scope::Scope::HsCode(h)) => match &h[..2] {
                "27" => pb::Sector::Energy,
                "26" => pb::Sector::MiningMetals,
                "10" => pb::Sector::AgricultureFood,
                _ => pb::Sector::MachineryElectronics,
            },
            _ => unreachable!(),
        };
        let (kind, countries, sectors): (pb::EventKind, Vec<String>, Vec<pb::Sector>) =
            match e.payload.as_ref().unwrap() {
                P::TradeRecord(r) => (
                    pb::EventKind::TradeRecord,
                    vec![r.reporter.clone(), r.partner.clone()],
                    vec![hs_sector(r)],
                ),
                P::Agreement(a) => (
                    pb::EventKind::Agreement,
                    a.parties.clone(),
                    vec![pb::Sector::Energy, pb::Sector::TransportLogistics],
                ),
                P::AgreementStatusChanged(c) => (
                    pb::EventKind::AgreementStatusChanged,
                    agreements[&c.agreement_id].clone(),
                    vec![pb::Sector::Energy, pb::Sector::TransportLogistics],
                ),
                P::TradeRecordRetracted(_) => unreachable!(),
            };
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.countries.is_empty()
                || countries
                    .iter()
                    .any(|c| self.countries.contains(&c.as_str())))
            && (self.sectors.is_empty() || sectors.iter().any(|s| self.sectors.contains(s)))
    }
}

/// Reads a subscription until its checkpoint reaches `end`, optionally slowly.
async fn collect_until(
    mut stream: tonic::Streaming<pb::SubscribeResponse>,
    mut end: tokio::sync::watch::Receiver<u64>,
    slow: bool,
) -> (Vec<u64>, u64) {
    let mut seqs = Vec::new();
    let mut checkpoint = 0;
    loop {
        let target = *end.borrow_and_update();
        if target > 0 && checkpoint >= target {
            return (seqs, checkpoint);
        }
        let next = tokio::select! {
            m = stream.message() => m,
            // The end became known: check it against what was read.
            _ = end.changed() => continue,
            _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("no message within 60 s"),
        };
        let m = next
            .expect("no stream error")
            .expect("the stream stays open");
        assert!(m.checkpoint >= checkpoint, "checkpoints never go back");
        for e in &m.events {
            assert!(e.sequence <= m.checkpoint);
            seqs.push(e.sequence);
        }
        checkpoint = m.checkpoint;
        if slow {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn twenty_subscribers_get_exactly_their_events_while_four_feeds_append() {
    let app = spawn_app().await;
    let wants = [
        Want {
            kinds: vec![],
            countries: vec![],
            sectors: vec![],
        },
        Want {
            kinds: vec![],
            countries: vec!["KZ"],
            sectors: vec![],
        },
        Want {
            kinds: vec![],
            countries: vec!["UZ", "TM"],
            sectors: vec![],
        },
        Want {
            kinds: vec![],
            countries: vec![],
            sectors: vec![pb::Sector::Energy],
        },
        Want {
            kinds: vec![
                pb::EventKind::Agreement,
                pb::EventKind::AgreementStatusChanged,
            ],
            countries: vec![],
            sectors: vec![],
        },
        Want {
            kinds: vec![pb::EventKind::AgreementStatusChanged],
            countries: vec!["KG"],
            sectors: vec![],
        },
        Want {
            kinds: vec![pb::EventKind::TradeRecord],
            countries: vec!["DE"],
            sectors: vec![pb::Sector::MiningMetals],
        },
        Want {
            kinds: vec![],
            countries: vec!["US"],
            sectors: vec![],
        }, // matches nothing
    ];
    let (end_tx, end_rx) = tokio::sync::watch::channel(0u64);
    let mut subscribers = Vec::new();
    // Eight subscribe before the feeds start; some read slowly.
    for (i, want) in wants.iter().enumerate() {
        let stream = subscriber(&app)
            .await
            .subscribe(want.request(from_beginning()))
            .await
            .unwrap()
            .into_inner();
        subscribers.push((
            want.clone(),
            0u64,
            tokio::spawn(collect_until(stream, end_rx.clone(), i % 3 == 0)),
        ));
    }
    // Four feeds append 50,000 events in all.
    let agreements: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let sent: Arc<Mutex<Vec<(u64, pb::Event)>>> = Arc::default();
    let mut feeds = Vec::new();
    for f in 0..4 {
        let mut client = app.ingest().await;
        let sent = Arc::clone(&sent);
        feeds.push(tokio::spawn(async move {
            for batch in 0..25 {
                let events: Vec<_> = (batch * 500..(batch + 1) * 500)
                    .map(|i| feed_event(f, i))
                    .collect();
                let acks = append(&mut client, events.clone()).await.unwrap();
                let mut sent = sent.lock().unwrap();
                for (a, e) in acks.iter().zip(events) {
                    assert!(!a.duplicate);
                    sent.push((a.sequence, e));
                }
            }
        }));
    }
    // Twelve more join while the feeds run, from the beginning or from a
    // sequence already stored: they catch up from the log, then follow live.
    for (i, want) in wants.iter().cycle().take(12).enumerate() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut client = subscriber(&app).await;
        let now = last_sequence(&mut app.ingest().await).await;
        let (start, after) = if i % 2 == 0 {
            (from_beginning(), 0)
        } else {
            (
                Some(pb::subscribe_request::Start::AfterSequence(now / 2)),
                now / 2,
            )
        };
        let stream = client
            .subscribe(want.request(start))
            .await
            .unwrap()
            .into_inner();
        subscribers.push((
            want.clone(),
            after,
            tokio::spawn(collect_until(stream, end_rx.clone(), i % 4 == 1)),
        ));
    }
    for f in feeds {
        f.await.unwrap();
    }
    let end = last_sequence(&mut app.ingest().await).await;
    assert_eq!(end, 50_000);
    end_tx.send(end).unwrap();

    let mut sent = std::mem::take(&mut *sent.lock().unwrap());
    sent.sort_by_key(|(s, _)| *s);
    {
        let mut agreements = agreements.lock().unwrap();
        for (_, e) in &sent {
            if let Some(pb::event::Payload::Agreement(a)) = &e.payload {
                agreements.insert(a.agreement_id.clone(), a.parties.clone());
            }
        }
    }
    let agreements = agreements.lock().unwrap().clone();
    assert_eq!(subscribers.len(), 20);
    for (want, after, task) in subscribers {
        let (got, _) = task.await.unwrap();
        let expected: Vec<u64> = sent
            .iter()
            .filter(|(s, e)| *s > after && want.matches(e, &agreements))
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(got.len(), expected.len(), "count for {:?}", want.countries);
        assert_eq!(got, expected, "exactly the matching events, in order");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_resumes_from_its_checkpoint_with_no_gap_or_repeat() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    let events: Vec<_> = (0..3_000).map(|i| feed_event(0, i)).collect();
    append(&mut ingest, events.clone()).await.unwrap();
    let want = Want {
        kinds: vec![],
        countries: vec!["KZ"],
        sectors: vec![],
    };
    let mut client = subscriber(&app).await;
    let mut stream = client
        .subscribe(want.request(from_beginning()))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut checkpoint = 0;
    for _ in 0..2 {
        let m = stream.message().await.unwrap().unwrap();
        got.extend(m.events.iter().map(|e| e.sequence));
        checkpoint = m.checkpoint;
    }
    drop(stream); // the client goes away mid-stream
    assert!(checkpoint > 0 && checkpoint < 3_000);
    let more: Vec<_> = (3_000..5_000).map(|i| feed_event(0, i)).collect();
    append(&mut ingest, more.clone()).await.unwrap();

    let resumed = client
        .subscribe(
            want.request(Some(pb::subscribe_request::Start::AfterSequence(
                checkpoint,
            ))),
        )
        .await
        .unwrap()
        .into_inner();
    let (_, end_rx) = tokio::sync::watch::channel(5_000u64);
    let (rest, _) = collect_until(resumed, end_rx, false).await;
    got.extend(rest);
    let mut agreements = BTreeMap::new();
    for e in events.iter().chain(&more) {
        if let Some(pb::event::Payload::Agreement(a)) = &e.payload {
            agreements.insert(a.agreement_id.clone(), a.parties.clone());
        }
    }
    let expected: Vec<u64> = events
        .iter()
        .chain(&more)
        .enumerate()
        .filter(|(_, e)| want.matches(e, &agreements))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(got, expected);
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_holds_up_nobody() {
    let app = spawn_app().await;
    let mut stalled_client = SubscriptionServiceClient::new(small_window_channel(&app.url()).await);
    let _stalled = stalled_client
        .subscribe(
            Want {
                kinds: vec![],
                countries: vec![],
                sectors: vec![],
            }
            .request(from_beginning()),
        )
        .await
        .unwrap()
        .into_inner();
    let live = subscriber(&app)
        .await
        .subscribe(
            Want {
                kinds: vec![],
                countries: vec![],
                sectors: vec![],
            }
            .request(from_beginning()),
        )
        .await
        .unwrap()
        .into_inner();
    let (end_tx, end_rx) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(collect_until(live, end_rx, false));
    let mut ingest = app.ingest().await;
    tokio::time::timeout(Duration::from_secs(120), async {
        for b in 0..20 {
            let events: Vec<_> = (b * 1_000..(b + 1) * 1_000)
                .map(|i| feed_event(1, i))
                .collect();
            append(&mut ingest, events).await.unwrap();
        }
    })
    .await
    .expect("ingestion is not held up by the stalled subscriber");
    end_tx.send(20_000).unwrap();
    let (got, _) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the live subscriber keeps up")
        .unwrap();
    assert_eq!(got, (1..=20_000).collect::<Vec<u64>>());
    app.stop().await;
}

#[tokio::test]
async fn the_subscription_limit_is_enforced_and_a_departed_client_frees_its_slot() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.subscribe.max_subscriptions = 2
    })
    .await;
    let all = Want {
        kinds: vec![],
        countries: vec![],
        sectors: vec![],
    };
    let mut client = subscriber(&app).await;
    let first = client
        .subscribe(all.request(from_beginning()))
        .await
        .unwrap()
        .into_inner();
    let _second = client
        .subscribe(all.request(from_beginning()))
        .await
        .unwrap()
        .into_inner();
    let err = client
        .subscribe(all.request(from_beginning()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    drop(first);
    let again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.subscribe(all.request(from_beginning())).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(again.is_ok(), "the slot was released");
    // Bad requests are INVALID_ARGUMENT; a future start is OUT_OF_RANGE.
    let err = client
        .subscribe(pb::SubscribeRequest {
            start: None,
            countries: vec!["XX".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["start", "countries[0]"]);
    let err = client
        .subscribe(all.request(Some(pb::subscribe_request::Start::AfterSequence(99))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    app.stop().await;
}

#[tokio::test]
async fn from_now_skips_history_and_shutdown_ends_subscriptions_with_unavailable() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    append(&mut ingest, (0..100).map(|i| feed_event(2, i)).collect())
        .await
        .unwrap();
    let mut client = subscriber(&app).await;
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::FromNow(pb::FromNow {})),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    append(&mut ingest, vec![feed_event(2, 100)]).await.unwrap();
    let m = stream.message().await.unwrap().unwrap();
    assert_eq!(
        m.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [101]
    );
    let stopping = tokio::spawn(app.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends");
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    stopping.await.unwrap();
}

/// A TCP proxy that can freeze: it stops moving bytes either way without
/// closing anything, like a client whose host vanished.
async fn freezable_proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let freeze = Arc::new(tokio::sync::Notify::new());
    let f = Arc::clone(&freeze);
    tokio::spawn(async move {
        let (inbound, _) = listener.accept().await.unwrap();
        let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
        let (mut ri, mut wi) = inbound.into_split();
        let (mut ro, mut wo) = outbound.into_split();
        let pipe = async {
            tokio::try_join!(
                tokio::io::copy(&mut ri, &mut wo),
                tokio::io::copy(&mut ro, &mut wi)
            )
        };
        tokio::select! {
            _ = pipe => {}
            _ = f.notified() => {
                // Frozen: keep both sockets open, move nothing, for a minute.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
        drop((ri, wi, ro, wo));
    });
    (addr, freeze)
}

#[tokio::test]
async fn a_client_that_vanishes_without_closing_is_released_by_keepalive() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.subscribe.max_subscriptions = 1;
        c.keepalive_interval = Duration::from_secs(1);
        c.keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    let (proxy, freeze) = freezable_proxy(app.addr).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let vanishing = SubscriptionServiceClient::new(channel)
        .subscribe(pb::SubscribeRequest {
            start: from_beginning(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut client = subscriber(&app).await;
    let all = pb::SubscribeRequest {
        start: from_beginning(),
        ..Default::default()
    };
    assert_eq!(
        client.subscribe(all.clone()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    freeze.notify_one();
    // The server's pings go unanswered: within interval + timeout (2 s here,
    // 40 s by default) it drops the connection and frees the slot.
    let freed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match client.subscribe(all.clone()).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(
        freed.is_ok(),
        "the vanished client's subscription was not released"
    );
    drop(vanishing);
    app.stop().await;
}

#[tokio::test]
async fn a_subscription_whose_client_accepts_nothing_is_released_after_the_stall_timeout() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.subscribe.max_subscriptions = 1;
        c.subscribe.buffer = 1;
        c.subscribe.stall_timeout = Duration::from_secs(1);
    })
    .await;
    let mut ingest = app.ingest().await;
    for b in 0..10 {
        let events = (0..1_000).map(|i| feed_event(b, i)).collect();
        append(&mut ingest, events).await.unwrap();
    }
    let all = Want {
        kinds: vec![],
        countries: vec![],
        sectors: vec![],
    };
    let stalled = SubscriptionServiceClient::new(small_window_channel(&app.url()).await)
        .subscribe(all.request(from_beginning()))
        .await
        .unwrap()
        .into_inner();
    let mut client = subscriber(&app).await;
    let err = client
        .subscribe(all.request(from_beginning()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let freed = eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        let request = all.request(from_beginning());
        async move { client.subscribe(request).await }
    })
    .await
    .expect("the slot is released");
    drop(freed);
    let end = end_status(stalled).await;
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(end.message().contains("resubscribe"), "{end:?}");
    app.stop().await;
}
