//! Append, AppendStream and LookupEvents: acknowledgements, idempotency,
//! conflicts, validation.

use crate::helpers::*;
use caravan::proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn a_batch_is_acknowledged_with_gapless_sequences_and_can_be_read_back() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let events: Vec<_> = (0..50)
        .map(|i| trade(&format!("e{i}"), "CHN", "KAZ", 2000 + i, 1_000 + i as i64))
        .collect();
    let acks = append(&mut client, events).await.expect("append");
    assert_eq!(acks.len(), 50);
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a.event_id, format!("e{i}"));
        assert_eq!(a.sequence, i as u64 + 1);
        assert!(!a.duplicate);
    }
    let found = client
        .lookup_events(pb::LookupEventsRequest {
            event_ids: vec!["e7".into(), "nope".into()],
            sequences: vec![1, 50, 51],
            feed: "test-feed".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(found.last_sequence, 50);
    assert_eq!(found.missing_event_ids, ["nope"]);
    assert_eq!(found.missing_sequences, [51]);
    let seqs: Vec<u64> = found.events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [8, 1, 50]);
    let e7 = &found.events[0];
    assert!(e7.ingested_at.is_some());
    let Some(pb::event::Payload::TradeRecord(r)) = &e7.event.as_ref().unwrap().payload else {
        panic!("payload lost");
    };
    // Stored normalised: alpha-3 became alpha-2.
    assert_eq!((r.reporter.as_str(), r.partner.as_str()), ("CN", "KZ"));
    assert_eq!(r.value.as_ref().unwrap().units, 1_007);
    app.stop().await;
}

#[tokio::test]
async fn resending_is_a_duplicate_and_alpha3_matches_alpha2() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let first = append(
        &mut client,
        vec![
            trade("a", "CHN", "KAZ", 2022, 5),
            trade("b", "CHN", "UZB", 2022, 6),
        ],
    )
    .await
    .unwrap();
    let again = append(
        &mut client,
        vec![
            trade("b", "cn", "uz", 2022, 6),
            trade("c", "CN", "TJ", 2022, 7),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        (again[0].sequence, again[0].duplicate),
        (first[1].sequence, true)
    );
    assert_eq!((again[1].sequence, again[1].duplicate), (3, false));
    assert_eq!(last_sequence(&mut client).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn the_same_id_with_other_content_is_already_exists_and_stores_nothing() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    append(&mut client, vec![trade("a", "CHN", "KAZ", 2022, 5)])
        .await
        .unwrap();
    let err = append(
        &mut client,
        vec![
            trade("new", "CHN", "KGZ", 2022, 1),
            trade("a", "CHN", "KAZ", 2022, 6),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("\"a\""), "{}", err.message());
    assert_eq!(
        last_sequence(&mut client).await,
        1,
        "nothing of the batch is stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_that_repeats_an_id_stores_it_once_and_a_conflicting_repeat_rejects_the_batch() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let acks = append(
        &mut client,
        vec![
            trade("x", "CHN", "KAZ", 2022, 5),
            trade("x", "CN", "KZ", 2022, 5),
        ],
    )
    .await
    .unwrap();
    assert_eq!((acks[0].sequence, acks[0].duplicate), (1, false));
    assert_eq!((acks[1].sequence, acks[1].duplicate), (1, true));

    let err = append(
        &mut client,
        vec![
            trade("y", "CHN", "KAZ", 2021, 5),
            trade("y", "CHN", "KAZ", 2021, 9),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(last_sequence(&mut client).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn bad_fields_are_invalid_argument_with_every_violation_and_nothing_is_stored() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let good = trade("good", "CHN", "KAZ", 2022, 5);
    let mut bad_country = trade("b1", "XXX", "KAZ", 2022, 5);
    let mut same_country = trade("b2", "KAZ", "KZ", 2022, 5);
    let mut bad_period = trade("b3", "CHN", "KAZ", 2022, 5);
    let mut bad_money = trade("b4", "CHN", "KAZ", 2022, -5);
    let mut euro = trade("b5", "CHN", "KAZ", 2022, 5);
    let mut missing = trade("", "CHN", "KAZ", 2022, 5);
    record_mut(&mut bad_country).partner = "C5".into();
    record_mut(&mut same_country).note = "same".into();
    record_mut(&mut bad_period).period = Some(pb::Period {
        year: 2022,
        frequency: pb::Frequency::Quarterly as i32,
        number: 5,
    });
    record_mut(&mut euro).value.as_mut().unwrap().currency_code = "EUR".into();
    record_mut(&mut bad_money).flow = 0;
    let r = record_mut(&mut missing);
    r.value = None;
    r.commodity = None;
    let no_payload = pb::Event {
        event_id: "b7".into(),
        feed: "f".into(),
        occurred_at: None,
        payload: None,
    };
    let err = append(
        &mut client,
        vec![
            good,
            bad_country,
            same_country,
            bad_period,
            bad_money,
            euro,
            missing,
            no_payload,
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "events[1].trade_record.reporter",
            "events[1].trade_record.partner",
            "events[2].trade_record.partner",
            "events[3].trade_record.period.number",
            "events[4].trade_record.flow",
            "events[4].trade_record.value.units",
            "events[5].trade_record.value.currency_code",
            "events[6].event_id",
            "events[6].trade_record.commodity",
            "events[6].trade_record.value",
            "events[7].payload",
        ]
    );
    // The message names the first three; the details every one.
    assert!(err.message().contains("and 8 more"), "{}", err.message());
    let details = tonic_types::StatusExt::get_details_bad_request(&err).expect("details");
    assert!(details
        .field_violations
        .iter()
        .any(|v| v.description.contains("only USD is supported")));
    assert_eq!(
        last_sequence(&mut client).await,
        0,
        "the good event was not stored either"
    );
    app.stop().await;
}

#[tokio::test]
async fn agreements_are_amended_and_status_changes_need_a_known_agreement() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let err = append(&mut client, vec![status_change("s0", "xian-2023")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("xian-2023"));

    // The agreement and its status change in one batch.
    let acks = append(
        &mut client,
        vec![
            agreement("a1", "xian-2023"),
            status_change("s1", "xian-2023"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(acks.iter().map(|a| a.sequence).collect::<Vec<_>>(), [1, 2]);
    // An amendment keeps the current status (IN_FORCE since s1)…
    let stale = agreement("a2-stale", "xian-2023");
    let err = append(&mut client, vec![stale]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // …and is a new event of the same agreement id.
    let mut amended = agreement("a2", "xian-2023");
    if let Some(pb::event::Payload::Agreement(a)) = &mut amended.payload {
        a.note = "amended".into();
        a.status = pb::AgreementStatus::InForce as i32;
    }
    assert_eq!(
        append(&mut client, vec![amended]).await.unwrap()[0].sequence,
        3
    );

    let mut one_party = agreement("a3", "solo");
    if let Some(pb::event::Payload::Agreement(a)) = &mut one_party.payload {
        a.parties = vec!["CHN".into(), "CN".into()];
        a.sectors.clear();
    }
    let err = append(&mut client, vec![one_party]).await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["events[0].agreement.parties", "events[0].agreement.sectors"]
    );
    app.stop().await;
}

#[tokio::test]
async fn oversized_and_empty_requests_are_refused() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let mut big = trade("big", "CHN", "KAZ", 2022, 1);
    record_mut(&mut big).note = "x".repeat(2048);
    record_mut(&mut big).source = "y".repeat(512);
    if let Some(pb::event::Payload::TradeRecord(r)) = &mut big.payload {
        r.quantity = Some(pb::Quantity {
            whole: 1,
            nanos: 0,
            unit: "z".repeat(2000),
        });
    }
    let err = append(&mut client, vec![big]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["events[0]"]);

    let err = append(&mut client, vec![]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["events"]);
    let too_many: Vec<_> = (0..10_001)
        .map(|i| trade(&i.to_string(), "CN", "KZ", 2022, 1))
        .collect();
    let err = append(&mut client, too_many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(last_sequence(&mut client).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_answers_every_event_in_order_and_a_bad_event_does_not_end_it() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let mut bad = trade("bad", "CHN", "ZZ", 2022, 1);
    record_mut(&mut bad).note = "bad partner".into();
    let events = vec![
        trade("s1", "CHN", "KAZ", 2022, 1),
        bad,
        trade("s2", "CHN", "KGZ", 2022, 2),
        trade("s1", "CN", "KZ", 2022, 1),     // duplicate
        trade("s2", "CHN", "KGZ", 2022, 999), // conflict
        status_change("s3", "unknown"),
        trade("s4", "CHN", "TJK", 2022, 4),
    ];
    let requests: Vec<_> = events
        .into_iter()
        .map(|e| pb::AppendStreamRequest { event: Some(e) })
        .collect();
    let mut answers = client
        .append_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.next().await {
        got.push(a.expect("no stream error"));
    }
    assert_eq!(got.len(), 7);
    for (i, a) in got.iter().enumerate() {
        assert_eq!(a.index, i as u64);
    }
    use pb::append_stream_response::Result as R;
    let summary: Vec<String> = got
        .iter()
        .map(|a| match a.result.as_ref().unwrap() {
            R::Ack(k) => format!("ack {} {}", k.sequence, k.duplicate),
            R::Rejection(r) => format!(
                "reject {} {}",
                r.code,
                r.field_violations
                    .iter()
                    .map(|v| v.field.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ack 1 false",
            "reject 3 event.trade_record.partner",
            "ack 2 false",
            "ack 1 true",
            "reject 6 ",
            "reject 9 ",
            "ack 3 false",
        ]
    );
    assert_eq!(last_sequence(&mut client).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn many_concurrent_streams_get_distinct_gapless_sequences() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for feed in 0..4 {
        let mut client = app.ingest().await;
        tasks.push(tokio::spawn(async move {
            let requests: Vec<_> = (0..2_000)
                .map(|i| pb::AppendStreamRequest {
                    event: Some(trade(
                        &format!("f{feed}-{i}"),
                        "CHN",
                        "KAZ",
                        1900 + (i % 200),
                        i as i64,
                    )),
                })
                .collect();
            let mut answers = client
                .append_stream(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let mut seqs = Vec::new();
            while let Some(a) = answers.next().await {
                match a.unwrap().result.unwrap() {
                    pb::append_stream_response::Result::Ack(k) => seqs.push(k.sequence),
                    other => panic!("{other:?}"),
                }
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a stream's sequences increase"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=8_000).collect::<Vec<u64>>());
    app.stop().await;
}

#[tokio::test]
async fn lookup_validates_its_request_and_an_empty_one_tells_the_newest_sequence() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    append(&mut client, vec![trade("n1", "CN", "KZ", 2020, 1)])
        .await
        .unwrap();
    let newest = client
        .lookup_events(pb::LookupEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newest.last_sequence, 1);
    assert!(newest.events.is_empty() && newest.missing_sequences.is_empty());
    let err = client
        .lookup_events(pb::LookupEventsRequest {
            event_ids: vec![String::new()],
            sequences: vec![],
            feed: "test-feed".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["event_ids[0]"]);
    app.stop().await;
}
