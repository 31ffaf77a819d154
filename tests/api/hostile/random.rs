//! Random bytes, and valid requests with random bytes changed, on every RPC
//! of the real server: whatever arrives is answered with a client error or
//! served, never INTERNAL or UNKNOWN, and the server keeps answering. (A
//! proptest in place of a fuzz target: cargo-fuzz needs a nightly toolchain.)

use super::*;
use proptest::prelude::*;
use prost::Message;

/// A valid request of each method, to mutate.
fn valid(path: &str) -> Vec<u8> {
    let filter = || pb::FigureFilter {
        reporters: vec!["CN".into()],
        periods: Some(annual_range(2020, 2023)),
        ..Default::default()
    };
    match path {
        "/caravan.v1.IngestService/Append" => pb::AppendRequest::new(vec![
            trade("rand", "CN", "KZ", 2022, 7),
            agreement("rand-a", "rand"),
        ])
        .encode_to_vec(),
        "/caravan.v1.IngestService/LookupEvents" => pb::LookupEventsRequest {
            event_ids: vec!["rand".into()],
            sequences: vec![1, 2],
            feed: "rand".into(),
        }
        .encode_to_vec(),
        "/caravan.v1.QueryService/StreamTradeRecords" => pb::StreamTradeRecordsRequest {
            filter: Some(filter()),
            ..Default::default()
        }
        .encode_to_vec(),
        "/caravan.v1.QueryService/StreamCountryCooperation" => {
            pb::StreamCountryCooperationRequest {
                country: "CN".into(),
                partners: vec!["KZ".into()],
                periods: Some(annual_range(2020, 2023)),
                ..Default::default()
            }
            .encode_to_vec()
        }
        "/caravan.v1.QueryService/StreamSectorCooperation" => pb::StreamSectorCooperationRequest {
            sector: pb::Sector::Energy as i32,
            periods: Some(annual_range(2020, 2023)),
            ..Default::default()
        }
        .encode_to_vec(),
        "/caravan.v1.QueryService/StreamAgreements" => pb::StreamAgreementsRequest {
            parties: vec!["KZ".into()],
            ..Default::default()
        }
        .encode_to_vec(),
        "/caravan.v1.QueryService/Aggregate" => pb::AggregateRequest {
            filter: Some(filter()),
            group_by: vec![pb::GroupBy::Partner as i32],
            ..Default::default()
        }
        .encode_to_vec(),
        "/caravan.v1.SubscriptionService/Subscribe" => pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::FromBeginning(
                pb::FromBeginning {},
            )),
            countries: vec!["KZ".into()],
            ..Default::default()
        }
        .encode_to_vec(),
        _ => pb::AppendStreamRequest {
            event: Some(trade("rand-s", "CN", "KZ", 2022, 7)),
        }
        .encode_to_vec(),
    }
}

/// Calls `path` with `bytes`. A subscription that starts after the newest
/// event (a mutation can make one: `from_now`, a high `after_sequence`)
/// rightly sends nothing until events come: served, once it has stayed
/// open for a while.
async fn call(channel: &Channel, path: &'static str, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
    let answer = call_raw(channel, path, vec![bytes]);
    if path != "/caravan.v1.SubscriptionService/Subscribe" {
        return answer.await;
    }
    match tokio::time::timeout(std::time::Duration::from_secs(3), answer).await {
        Ok(got) => got,
        Err(_) => Ok(Vec::new()),
    }
}

fn acceptable(result: &Result<Vec<u8>, Status>) -> bool {
    match result {
        Ok(_) => true,
        Err(s) => !matches!(s.code(), Code::Internal | Code::Unknown),
    }
}

#[test]
fn random_and_mutated_requests_never_get_internal_or_unknown() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, channel) = rt.block_on(async {
        let app = seeded_app().await;
        let channel = app.channel().await;
        (app, channel)
    });
    let paths: Vec<&'static str> = UNARY_REQUEST_METHODS
        .iter()
        .copied()
        .chain([APPEND_STREAM])
        .collect();
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // A fresh runner per property: one runner runs its cases once.
    let runner = || proptest::test_runner::TestRunner::new(config.clone());
    let answered = std::cell::Cell::new(0usize);
    for path in &paths {
        // Random bytes.
        runner()
            .run(&proptest::collection::vec(any::<u8>(), 0..256), |bytes| {
                let got = rt.block_on(call(&channel, path, bytes.clone()));
                answered.set(answered.get() + 1);
                prop_assert!(acceptable(&got), "{path} {bytes:?}: {got:?}");
                Ok(())
            })
            .unwrap();
        // A valid request with a few bytes changed, cut or extended.
        let base = valid(path);
        let edits = proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4);
        runner()
            .run(&(edits, 0..3usize), |(edits, how)| {
                let mut bytes = base.clone();
                for (at, b) in edits {
                    let i = at.index(bytes.len().max(1));
                    match how {
                        0 if !bytes.is_empty() => {
                            let last = bytes.len() - 1;
                            bytes[i.min(last)] = b;
                        }
                        1 => bytes.truncate(i),
                        _ => bytes.insert(i.min(bytes.len()), b),
                    }
                }
                let got = rt.block_on(call(&channel, path, bytes.clone()));
                answered.set(answered.get() + 1);
                prop_assert!(acceptable(&got), "{path} {bytes:?}: {got:?}");
                Ok(())
            })
            .unwrap();
    }
    let calls = answered.get();
    assert_eq!(calls, paths.len() * 2 * config.cases as usize);
    eprintln!("{calls} random requests answered without INTERNAL or UNKNOWN");
    rt.block_on(async {
        still_serving(&app).await;
        app.stop().await;
    });
}
