//! Per-identity quotas: append events and bytes per second, query streams
//! and subscriptions at once. Beyond them: RESOURCE_EXHAUSTED with
//! google.rpc.RetryInfo; other identities go on unaffected.

use super::*;
use caravan::proto::v1::query_service_client::QueryServiceClient;
use caravan::proto::v1::subscription_service_client::SubscriptionServiceClient;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// `n` records of `feed`, each of its own pair partner's figures (feeds
/// here never share a pair).
fn batch(feed: &str, prefix: &str, n: usize) -> Vec<pb::Event> {
    let partner = match feed {
        "slow" => "KZ",
        "narrow" => "UZ",
        _ => "TJ",
    };
    (0..n)
        .map(|i| {
            let mut e = trade_of(feed, &format!("{prefix}-{i}"), "CN", partner, i as i64);
            record_mut(&mut e).period = Some(annual(1900 + i as i32));
            e
        })
        .collect()
}

#[tokio::test]
async fn append_rates_hold_say_when_to_retry_and_leave_others_alone() {
    let slow = Who {
        more: "quota = { append_events_per_sec = 100 }\n",
        ..Who::token("slow", &["ingest"], &["slow"])
    };
    let narrow = Who {
        more: "quota = { append_bytes_per_sec = 8192 }\n",
        ..Who::token("narrow", &["ingest"], &["narrow"])
    };
    let other = Who::token("other", &["ingest"], &["other"]);
    let secure = secure_app(&auth_file(&[&slow, &narrow, &other]), None, |_| {}).await;
    let ch = secure.channel(None).await.unwrap();
    let (slow_t, narrow_t, other_t) = (
        slow.token.clone().unwrap(),
        narrow.token.clone().unwrap(),
        other.token.clone().unwrap(),
    );

    // A second's worth at once, then the quota holds.
    append_as(&ch, &slow_t, batch("slow", "s1", 100))
        .await
        .unwrap();
    let before = last_as(&ch, &other_t).await;
    let refused = append_as(&ch, &slow_t, batch("slow", "s2", 50))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let wait = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    let quota = refused.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "identity:slow");
    assert_eq!(last_as(&ch, &other_t).await, before, "nothing stored");
    // Meanwhile another identity appends as much as it likes.
    for i in 0..5 {
        append_as(&ch, &other_t, batch("other", &format!("o{i}"), 200))
            .await
            .unwrap();
    }
    // A client that ignores the wait is held, unread, until it has passed,
    // and then served: the server does not refuse it over and over.
    let started = std::time::Instant::now();
    append_as(&ch, &slow_t, batch("slow", "s2", 50))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= wait.mul_f64(0.5),
        "served after {:?}, told to wait {wait:?}",
        started.elapsed()
    );
    // More than a second's worth never fits: no RetryInfo, smaller requests.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let never = append_as(&ch, &slow_t, batch("slow", "s3", 101))
        .await
        .unwrap_err();
    assert_eq!(never.code(), Code::ResourceExhausted);
    assert!(never.get_details_retry_info().is_none(), "{never:?}");
    assert!(never.message().contains("smaller"), "{never:?}");

    // Bytes: about 8 KiB a second.
    let mut sent = 0;
    let refused = loop {
        match append_as(&ch, &narrow_t, batch("narrow", &format!("n{sent}"), 10)).await {
            Ok(_) => sent += 1,
            Err(s) => break s,
        }
        assert!(sent < 100, "the byte quota never held");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("bytes"), "{refused:?}");
    assert!(refused.get_details_retry_info().is_some());

    // A stream over its rate is paced, not refused: 150 events at 100 a
    // second take at least half a second, and all are acknowledged.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let requests = tokio_stream::iter(
        batch("slow", "stream", 150)
            .into_iter()
            .map(|e| pb::AppendStreamRequest { event: Some(e) })
            .collect::<Vec<_>>(),
    );
    let mut answers = IngestServiceClient::new(ch.clone())
        .append_stream(authed(requests, Some(&slow_t)))
        .await
        .unwrap()
        .into_inner();
    let mut acked = 0;
    while let Some(a) = answers.message().await.unwrap() {
        assert!(matches!(
            a.result,
            Some(pb::append_stream_response::Result::Ack(_))
        ));
        acked += 1;
    }
    assert_eq!(acked, 150);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    secure.app.stop().await;
}

fn all_records() -> pb::StreamTradeRecordsRequest {
    pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            level: pb::CommodityLevel::Hs4 as i32,
            periods: Some(pb::PeriodRange {
                frequency: pb::Frequency::Annual as i32,
                from: None,
                to: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn from_beginning() -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        start: Some(pb::subscribe_request::Start::FromBeginning(
            pb::FromBeginning {},
        )),
        ..Default::default()
    }
}

#[tokio::test]
async fn one_identity_cannot_hold_every_stream_and_subscription() {
    let greedy = Who {
        more: "quota = { query_streams = 2, subscriptions = 2 }\n",
        ..Who::token("greedy", &["read"], &[])
    };
    let other = Who::token("other", &["read", "ingest"], &["load"]);
    // One buffered message per stream: a stream whose client does not read
    // stays open, holding its slot.
    let secure = secure_app(&auth_file(&[&greedy, &other]), None, |c| {
        c.query.stream_buffer = 1;
    })
    .await;
    let ch = secure.channel(None).await.unwrap();
    let (greedy_t, other_t) = (greedy.token.clone().unwrap(), other.token.clone().unwrap());
    // Enough records for several messages beyond HTTP/2's window.
    for i in 0..3 {
        let events: Vec<pb::Event> = (0..2_000)
            .map(|j| {
                let mut e = trade_of("load", &format!("r{i}-{j}"), "CN", "KZ", j);
                record_mut(&mut e).period = Some(annual(1900 + j as i32 % 200));
                let heading = format!("{:02}{:02}", 10 + i, j / 200);
                record_mut(&mut e).commodity = Some(pb::CommodityScope {
                    scope: Some(pb::commodity_scope::Scope::HsCode(heading)),
                });
                e
            })
            .collect();
        append_as(&ch, &other_t, events).await.unwrap();
    }
    // The greedy client's connection takes little before it reads (a small
    // HTTP/2 window), so that a stream it does not read stays open.
    let narrow = tls_endpoint(secure.app.addr, &secure.ca.pem.cert, None)
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(64 * 1024))
        .connect()
        .await
        .unwrap();
    let q = || QueryServiceClient::new(narrow.clone());
    // Two streams, never read.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            q().stream_trade_records(authed(all_records(), Some(&greedy_t)))
                .await
                .unwrap(),
        );
    }
    let refused = q()
        .stream_trade_records(authed(all_records(), Some(&greedy_t)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.get_details_retry_info().is_some());
    // Another identity still gets a stream, and reads it to the end.
    let mut theirs = QueryServiceClient::new(ch.clone())
        .stream_trade_records(authed(all_records(), Some(&other_t)))
        .await
        .unwrap()
        .into_inner();
    let mut records = 0;
    while let Some(m) = theirs.message().await.unwrap() {
        records += m.records.len();
    }
    assert_eq!(records, 6_000);
    // One of the greedy streams ends: its slot is the greedy identity's again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        match q()
            .stream_trade_records(authed(all_records(), Some(&greedy_t)))
            .await
        {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(again.is_some(), "the slot came back");

    // Subscriptions alike.
    let s = || SubscriptionServiceClient::new(ch.clone());
    let mut subs = Vec::new();
    for _ in 0..2 {
        subs.push(
            s().subscribe(authed(from_beginning(), Some(&greedy_t)))
                .await
                .unwrap(),
        );
    }
    let refused = s()
        .subscribe(authed(from_beginning(), Some(&greedy_t)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.get_details_retry_info().is_some());
    let mut theirs = s()
        .subscribe(authed(from_beginning(), Some(&other_t)))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.message().await.unwrap().is_some());
    drop((held, again, subs, theirs));
    secure.app.stop().await;
}
