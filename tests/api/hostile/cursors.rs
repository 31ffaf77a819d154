//! Cursors are client input: every altered, cut, extended or foreign cursor
//! of every query RPC is INVALID_ARGUMENT on `resume_after`.

use super::*;
use prost::Message;

/// A request of each query RPC that has an answer on the seed data, encoded
/// with a cursor.
/// A method and how to build its request around a cursor.
type WithCursor = (&'static str, fn(Vec<u8>) -> Vec<u8>);

fn requests() -> Vec<WithCursor> {
    vec![
        ("/caravan.v1.QueryService/StreamTradeRecords", |c| {
            pb::StreamTradeRecordsRequest {
                filter: Some(pb::FigureFilter {
                    periods: Some(annual_range(2000, 2030)),
                    ..Default::default()
                }),
                resume_after: c,
                ..Default::default()
            }
            .encode_to_vec()
        }),
        ("/caravan.v1.QueryService/StreamCountryCooperation", |c| {
            pb::StreamCountryCooperationRequest {
                country: "CN".into(),
                periods: Some(annual_range(2000, 2030)),
                resume_after: c,
                ..Default::default()
            }
            .encode_to_vec()
        }),
        ("/caravan.v1.QueryService/StreamSectorCooperation", |c| {
            pb::StreamSectorCooperationRequest {
                sector: pb::Sector::Energy as i32,
                level: pb::CommodityLevel::Hs4 as i32,
                periods: Some(annual_range(2000, 2030)),
                resume_after: c,
                ..Default::default()
            }
            .encode_to_vec()
        }),
        ("/caravan.v1.QueryService/StreamAgreements", |c| {
            pb::StreamAgreementsRequest {
                resume_after: c,
                ..Default::default()
            }
            .encode_to_vec()
        }),
        ("/caravan.v1.QueryService/Aggregate", |c| {
            pb::AggregateRequest {
                filter: Some(pb::FigureFilter {
                    periods: Some(annual_range(2000, 2030)),
                    ..Default::default()
                }),
                group_by: vec![pb::GroupBy::Reporter as i32],
                resume_after: c,
                ..Default::default()
            }
            .encode_to_vec()
        }),
    ]
}

/// The cursor of a query answer message (field 2 of every response).
fn cursor_of(message: &[u8]) -> Vec<u8> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct WithCursor {
        #[prost(bytes = "vec", tag = "2")]
        cursor: Vec<u8>,
    }
    WithCursor::decode(message).expect("a response").cursor
}

#[tokio::test]
async fn every_altered_or_foreign_cursor_of_every_query_is_refused() {
    let app = seeded_app().await;
    let channel = app.channel().await;
    let mut cursors = Vec::new();
    for (path, build) in requests() {
        let first = call_raw(&channel, path, vec![build(vec![])])
            .await
            .unwrap_or_else(|s| panic!("{path}: {s:?}"));
        let cursor = cursor_of(&first);
        assert!(!cursor.is_empty(), "{path}");
        // The cursor as issued resumes.
        let resumed = call_raw(&channel, path, vec![build(cursor.clone())]).await;
        assert!(
            resumed.is_ok() || resumed.as_ref().err().map(|s| s.code()) == Some(Code::Ok),
            "{path}: {resumed:?}"
        );
        cursors.push((path, build, cursor));
    }
    let mut cases = 0;
    for (path, build, cursor) in &cursors {
        let mut bad: Vec<Vec<u8>> = Vec::new();
        for i in 0..cursor.len() {
            let mut c = cursor.clone();
            c[i] ^= 0x01;
            bad.push(c);
        }
        for len in [0, 1, cursor.len() / 2, cursor.len() - 1] {
            if len > 0 {
                bad.push(cursor[..len].to_vec());
            }
        }
        let mut longer = cursor.clone();
        longer.push(0);
        bad.push(longer);
        bad.push(vec![0xff; 40]);
        bad.push(b"not a cursor at all".to_vec());
        // Every other RPC's cursor.
        for (other, _, c) in &cursors {
            if other != path {
                bad.push(c.clone());
            }
        }
        for c in bad {
            let status = call_raw(&channel, path, vec![build(c.clone())])
                .await
                .expect_err("refused");
            assert_refused(
                &status,
                Code::InvalidArgument,
                Some("resume_after"),
                &format!("{path} {c:?}"),
            );
            cases += 1;
        }
    }
    eprintln!("{cases} bad cursors refused");
    assert!(cases > 150, "{cases}");
    still_serving(&app).await;
}
