//! The audit trail: every stored event records the identity that wrote it,
//! and LookupEvents, subscriptions and StreamTradeRecords (with
//! `include_provenance`) show it.

use super::*;
use caravan::proto::v1::query_service_client::QueryServiceClient;
use caravan::proto::v1::subscription_service_client::SubscriptionServiceClient;

fn records(provenance: bool) -> pb::StreamTradeRecordsRequest {
    pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            periods: Some(pb::PeriodRange {
                frequency: pb::Frequency::Annual as i32,
                from: None,
                to: None,
            }),
            ..Default::default()
        }),
        include_provenance: provenance,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_event_names_who_wrote_it_wherever_it_is_read() {
    let mofcom = Who::token("mofcom-loader", &["ingest"], &["mofcom"]);
    let stat = Who::token("kz-stat", &["ingest"], &["kz-stat"]);
    let reader = Who::token("analyst", &["read", "ingest"], &["*"]);
    let secure = secure_app(&auth_file(&[&mofcom, &stat, &reader]), None, |_| {}).await;
    let ch = secure.channel(None).await.unwrap();
    let reader_t = reader.token.as_deref().unwrap();
    append_as(
        &ch,
        mofcom.token.as_deref().unwrap(),
        vec![trade_of("mofcom", "m-1", "CN", "KZ", 31_200)],
    )
    .await
    .unwrap();
    append_as(
        &ch,
        stat.token.as_deref().unwrap(),
        vec![trade_of("kz-stat", "k-1", "KZ", "CN", 29_000)],
    )
    .await
    .unwrap();
    let who = |feed: &str| match feed {
        "mofcom" => "mofcom-loader",
        _ => "kz-stat",
    };

    let found = IngestServiceClient::new(ch.clone())
        .lookup_events(authed(
            pb::LookupEventsRequest {
                sequences: vec![1, 2],
                ..Default::default()
            },
            Some(reader_t),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.events.len(), 2);
    for e in &found.events {
        let feed = &e.event.as_ref().unwrap().feed;
        assert_eq!(e.written_by, who(feed), "{e:?}");
    }

    let mut sub = SubscriptionServiceClient::new(ch.clone())
        .subscribe(authed(
            pb::SubscribeRequest {
                start: Some(pb::subscribe_request::Start::FromBeginning(
                    pb::FromBeginning {},
                )),
                ..Default::default()
            },
            Some(reader_t),
        ))
        .await
        .unwrap()
        .into_inner();
    let message = sub.message().await.unwrap().unwrap();
    assert_eq!(message.events.len(), 2);
    for e in &message.events {
        assert_eq!(e.written_by, who(&e.event.as_ref().unwrap().feed));
    }

    let mut plain = QueryServiceClient::new(ch.clone())
        .stream_trade_records(authed(records(false), Some(reader_t)))
        .await
        .unwrap()
        .into_inner();
    let m = plain.message().await.unwrap().unwrap();
    assert!(m.records.iter().all(|r| r.provenance.is_none()));
    let mut with = QueryServiceClient::new(ch.clone())
        .stream_trade_records(authed(records(true), Some(reader_t)))
        .await
        .unwrap()
        .into_inner();
    let m = with.message().await.unwrap().unwrap();
    assert_eq!(m.records.len(), 2);
    for r in &m.records {
        let p = r.provenance.as_ref().expect("provenance");
        assert_eq!(p.written_by, who(&p.feed));
        assert!(p.event_id == "m-1" || p.event_id == "k-1", "{p:?}");
        assert!(p.ingested_at.is_some());
    }
    secure.app.stop().await;
}

#[tokio::test]
async fn a_server_without_identities_records_no_author() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    append(&mut client, vec![trade("open-1", "CN", "KZ", 2022, 1)])
        .await
        .unwrap();
    let found = client
        .lookup_events(pb::LookupEventsRequest {
            sequences: vec![1],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.events[0].written_by, "");
    app.stop().await;
}
