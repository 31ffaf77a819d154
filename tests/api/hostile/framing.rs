//! Framing and codes: bytes no generated client would send, on every RPC.

use super::*;
use prost::Message;
use std::time::Duration;
use tower::Service;

/// Bytes that are not a protobuf message of any caravan request type.
const GARBAGE: [&[u8]; 5] = [
    &[0x08, 0xff],             // a varint cut short
    &[0x0a, 0x05, 0x01],       // a length past the end
    &[0xff, 0xff, 0xff, 0xff], // a key cut short
    &[0x0b],                   // a group
    &[0x0a],                   // a length missing
];

/// Per method, a request whose one string field is not UTF-8 (`c3 28`).
const NOT_UTF8: [(&str, &[u8]); 8] = [
    (
        "/caravan.v1.IngestService/Append",
        &[0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28],
    ),
    (
        "/caravan.v1.IngestService/LookupEvents",
        &[0x0a, 0x02, 0xc3, 0x28],
    ),
    (
        "/caravan.v1.QueryService/StreamTradeRecords",
        &[0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28],
    ),
    (
        "/caravan.v1.QueryService/StreamCountryCooperation",
        &[0x0a, 0x02, 0xc3, 0x28],
    ),
    (
        "/caravan.v1.QueryService/StreamSectorCooperation",
        &[0x12, 0x02, 0xc3, 0x28],
    ),
    (
        "/caravan.v1.QueryService/StreamAgreements",
        &[0x0a, 0x02, 0xc3, 0x28],
    ),
    (
        "/caravan.v1.QueryService/Aggregate",
        &[0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28],
    ),
    (
        "/caravan.v1.SubscriptionService/Subscribe",
        &[0x2a, 0x02, 0xc3, 0x28],
    ),
];

#[tokio::test]
async fn undecodable_bytes_are_invalid_argument_on_every_rpc_and_store_nothing() {
    let app = seeded_app().await;
    let before = store_state(&app).await;
    let channel = app.channel().await;
    let mut cases = 0;
    for path in UNARY_REQUEST_METHODS.iter().chain([&APPEND_STREAM]) {
        for bytes in GARBAGE {
            let status = call_raw(&channel, path, vec![bytes.to_vec()])
                .await
                .expect_err("refused");
            assert_refused(
                &status,
                Code::InvalidArgument,
                None,
                &format!("{path} {bytes:?}"),
            );
            cases += 1;
        }
    }
    for (path, bytes) in NOT_UTF8 {
        let status = call_raw(&channel, path, vec![bytes.to_vec()])
            .await
            .expect_err("refused");
        assert_refused(
            &status,
            Code::InvalidArgument,
            None,
            &format!("{path} not UTF-8"),
        );
        cases += 1;
    }
    // Good events before and after an undecodable one (Append decodes its
    // events one at a time): nothing of the batch is stored.
    let mut batch =
        pb::AppendRequest::new(vec![trade("before-bad", "CN", "KZ", 2031, 1)]).encode_to_vec();
    batch.extend_from_slice(&[0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28]);
    batch.extend(
        pb::AppendRequest::new(vec![trade("after-bad", "CN", "KZ", 2031, 2)]).encode_to_vec(),
    );
    let status = call_raw(&channel, "/caravan.v1.IngestService/Append", vec![batch])
        .await
        .expect_err("refused");
    assert_refused(
        &status,
        Code::InvalidArgument,
        None,
        "a bad event among good ones",
    );
    assert!(
        status.message().contains("events[1]"),
        "{}",
        status.message()
    );
    cases += 1;
    assert_eq!(cases, 54);
    still_serving(&app).await;
    assert_eq!(store_state(&app).await, before);
}

#[tokio::test]
async fn a_unary_call_with_no_message_or_two_is_refused_not_served() {
    let app = seeded_app().await;
    let before = store_state(&app).await;
    let channel = app.channel().await;
    let append = pb::AppendRequest::new(vec![trade("twice", "CN", "KZ", 2030, 1)]).encode_to_vec();
    for path in UNARY_REQUEST_METHODS {
        let message = if path.ends_with("/Append") {
            append.clone()
        } else {
            Vec::new()
        };
        for messages in [vec![], vec![message.clone(), message.clone()]] {
            let n = messages.len();
            let status = call_raw(&channel, path, messages)
                .await
                .expect_err("refused");
            assert_refused(
                &status,
                Code::InvalidArgument,
                None,
                &format!("{path} × {n}"),
            );
        }
    }
    still_serving(&app).await;
    assert_eq!(
        store_state(&app).await,
        before,
        "the twice-sent event is not stored"
    );
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.max_message_bytes = 64 * 1024
    })
    .await;
    let channel = app.channel().await;
    let big = vec![0u8; 64 * 1024 + 1];
    for path in UNARY_REQUEST_METHODS.iter().chain([&APPEND_STREAM]) {
        let status = call_raw(&channel, path, vec![big.clone()])
            .await
            .expect_err("refused");
        assert_refused(&status, Code::ResourceExhausted, None, path);
    }
    still_serving(&app).await;
    assert_eq!(store_state(&app).await.0, 0);
}

#[tokio::test]
async fn a_request_that_is_not_grpc_is_refused_with_415() {
    let app = spawn_app().await;
    let mut channel = app.channel().await;
    for content_type in ["application/json", "text/plain", "application/grpc+json"] {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "{}/caravan.v1.IngestService/LookupEvents",
                app.url()
            ))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(tonic::body::Body::new(http_body_util::Full::new(
                prost::bytes::Bytes::from_static(b"{}"),
            )))
            .unwrap();
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .unwrap();
        let response = channel.call(request).await.expect("an HTTP answer");
        assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"3"[..]),
            "{content_type}"
        );
    }
    still_serving(&app).await;
}

/// Reads an AppendStream's answers to its end.
async fn stream_answers(
    channel: &Channel,
    messages: Vec<Vec<u8>>,
) -> (Vec<pb::AppendStreamResponse>, Option<Status>) {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(APPEND_STREAM);
    let request = tonic::Request::new(tokio_stream::iter(messages));
    let mut answers = match grpc.streaming(request, path, Raw).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (vec![], Some(status)),
    };
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), answers.message())
            .await
            .expect("the stream answers")
        {
            Ok(Some(m)) => got.push(pb::AppendStreamResponse::decode(m.as_slice()).unwrap()),
            Ok(None) => return (got, None),
            Err(status) => return (got, Some(status)),
        }
    }
}

#[tokio::test]
async fn append_stream_answers_what_it_read_then_ends_with_the_reason() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.max_message_bytes = 64 * 1024
    })
    .await;
    let channel = app.channel().await;
    let good = |id: &str| {
        pb::AppendStreamRequest {
            event: Some(trade(id, "CN", "KZ", 2031, 1)),
        }
        .encode_to_vec()
    };
    // Undecodable at once: no answer, INVALID_ARGUMENT (it ended with OK).
    let (got, end) = stream_answers(&channel, vec![vec![0x08, 0xff]]).await;
    assert!(got.is_empty());
    assert_refused(
        &end.expect("a status"),
        Code::InvalidArgument,
        None,
        "08 ff",
    );
    // One good event, then garbage: the event is acknowledged, then the end.
    let (got, end) = stream_answers(&channel, vec![good("s-1"), vec![0x0a, 0x05]]).await;
    assert_eq!(got.len(), 1);
    assert!(matches!(
        got[0].result,
        Some(pb::append_stream_response::Result::Ack(_))
    ));
    assert_refused(
        &end.expect("a status"),
        Code::InvalidArgument,
        None,
        "good, garbage",
    );
    // An oversized message after a good one.
    let (got, end) = stream_answers(&channel, vec![good("s-2"), vec![0; 64 * 1024 + 1]]).await;
    assert_eq!(got.len(), 1);
    assert_refused(
        &end.expect("a status"),
        Code::ResourceExhausted,
        None,
        "oversized",
    );
    // A list over its cap inside an event ends the stream before decoding.
    let many_parties = pb::AppendStreamRequest {
        event: Some(pb::Event {
            payload: Some(pb::event::Payload::Agreement(pb::Agreement {
                parties: vec!["CN".into(); 300],
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    let (got, end) = stream_answers(&channel, vec![many_parties.encode_to_vec()]).await;
    assert!(got.is_empty());
    assert_refused(
        &end.expect("a status"),
        Code::InvalidArgument,
        Some("event.agreement.parties"),
        "300 parties",
    );
    // Only the two good events were stored.
    assert_eq!(store_state(&app).await.0, 2);
}

#[tokio::test]
async fn repeated_fields_over_their_caps_are_refused_with_the_field() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.ingest.max_batch_events = 50;
        c.ingest.max_lookup = 20;
    })
    .await;
    let channel = app.channel().await;
    // 51 empty events; 4 MiB of them would be two million.
    let cases: Vec<(&'static str, Vec<u8>, &str)> = vec![
        (
            "/caravan.v1.IngestService/Append",
            [0x0a, 0x00].repeat(51),
            "events",
        ),
        (
            "/caravan.v1.IngestService/LookupEvents",
            pb::LookupEventsRequest {
                event_ids: vec!["x".into(); 21],
                sequences: vec![],
                feed: "x".into(),
            }
            .encode_to_vec(),
            "event_ids",
        ),
        (
            "/caravan.v1.IngestService/LookupEvents",
            pb::LookupEventsRequest {
                event_ids: vec![],
                sequences: (1..=21).collect(),
                feed: "x".into(),
            }
            .encode_to_vec(),
            "sequences",
        ),
    ];
    for (path, bytes, field) in cases {
        let status = call_raw(&channel, path, vec![bytes])
            .await
            .expect_err("refused");
        assert_refused(&status, Code::InvalidArgument, Some(field), path);
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn ten_thousand_bad_events_are_answered_with_the_first_hundred_violations() {
    let app = spawn_app().await;
    let events = vec![pb::Event::default(); 10_000];
    let status = append(&mut app.ingest().await, events).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = violated_fields(&status);
    assert_eq!(fields.len(), 101, "{fields:?}");
    assert_eq!(fields[0], "events[0].event_id");
    assert!(status.message().len() < 1_000, "{}", status.message().len());
    still_serving(&app).await;
}
