//! Operations: metrics scraped over HTTP, online backup and restore, verify,
//! a full disk, the config file.

pub mod backup;
mod config;
mod disk;
mod metrics;
mod verify;

use crate::helpers::*;
use caravan::proto::v1 as pb;
use std::collections::HashMap;
use std::net::SocketAddr;

/// GETs `path` from the metrics port with a real HTTP/1.1 client: the
/// status and the body.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = sender
        .send_request(
            request
                .body(http_body_util::Empty::<prost::bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).expect("utf-8"))
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `n` trade records of `feed` over a few pairs and years, with ids
/// `{feed}-{from + i}`; every fifth one revises an earlier figure.
pub fn feed_events(feed: &str, from: usize, n: usize) -> Vec<pb::Event> {
    const PAIRS: [(&str, &str); 4] = [("CN", "KZ"), ("KZ", "CN"), ("CN", "UZ"), ("UZ", "KG")];
    (from..from + n)
        .map(|i| {
            let (r, p) = PAIRS[i % PAIRS.len()];
            // A fifth of them revise the figure of the record five before.
            let key = if i % 5 == 4 { i - 4 } else { i };
            let mut e = trade(
                &format!("{feed}-{i}"),
                r,
                p,
                1990 + (key / PAIRS.len() % 30) as i32,
                1_000 + i as i64,
            );
            e.feed = feed.into();
            // Each feed writes its own commodity level, so that no feed
            // revises another's figure.
            record_mut(&mut e).commodity = Some(pb::CommodityScope {
                scope: Some(pb::commodity_scope::Scope::HsCode(
                    ["27", "26", "71", "87"][usize::from(feed.bytes().last().unwrap_or(0)) % 4]
                        .into(),
                )),
            });
            e
        })
        .collect()
}

/// Every HS-2 figure of every annual period, as of `as_of` (0: newest).
pub fn hs2_records(as_of: u64) -> pb::StreamTradeRecordsRequest {
    pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            level: pb::CommodityLevel::Hs2 as i32,
            periods: Some(pb::PeriodRange {
                frequency: pb::Frequency::Annual as i32,
                from: None,
                to: None,
            }),
            ..Default::default()
        }),
        as_of_sequence: as_of,
        include_provenance: true,
        ..Default::default()
    }
}

/// (How many, a digest of) the records of [`hs2_records`] at `as_of`, with
/// their provenance; and the totals by reporter, partner and year.
pub async fn views_digest(channel: tonic::transport::Channel, as_of: u64) -> (usize, u64, u64) {
    use caravan::proto::v1::query_service_client::QueryServiceClient;
    let mut q = QueryServiceClient::new(channel);
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    let mut n = 0;
    for message in drain(
        q.stream_trade_records(hs2_records(as_of))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap()
    {
        for r in message.records {
            n += 1;
            digest.update(&prost::Message::encode_to_vec(&r));
        }
    }
    let mut totals = xxhash_rust::xxh3::Xxh3::new();
    let aggregate = pb::AggregateRequest {
        filter: hs2_records(as_of).filter,
        group_by: vec![
            pb::GroupBy::Reporter as i32,
            pb::GroupBy::Partner as i32,
            pb::GroupBy::Period as i32,
        ],
        as_of_sequence: as_of,
        ..Default::default()
    };
    for message in drain(q.aggregate(aggregate).await.unwrap().into_inner())
        .await
        .unwrap()
    {
        if let Some(g) = message.group {
            totals.update(&prost::Message::encode_to_vec(&g));
        }
    }
    (n, digest.digest(), totals.digest())
}
