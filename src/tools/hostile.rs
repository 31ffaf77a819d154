//! `caravan bench`'s hostile section: the resident memory of a separate
//! server process before, and at its peak during, 16 concurrent worst-case
//! requests of each RPC — messages just under `--max-message-bytes` that
//! repeat an empty element as often as the bytes allow, which prost would
//! turn into millions of structs if they were decoded. Each RPC gets a fresh
//! server, so that one's peak does not hide the next one's.
//!
//! Depends on the generated messages, tonic's client and the bench's server
//! helpers; never on the server's internals.

use super::bench::{rss_mib, spawn_server, stop_server};
use super::raw::Raw;
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Concurrent requests per RPC.
const CONCURRENT: usize = 16;

/// `element` repeated to fill just under `limit` bytes, wrapped in
/// `prefix` (outer fields whose length is the whole rest, outermost first).
fn filled(limit: usize, element: &[u8], prefix: &[u8]) -> Vec<u8> {
    let room = limit - 16 - prefix.len() * 6;
    let body = element.repeat(room / element.len());
    let mut message = body;
    for tag in prefix.iter().rev() {
        let mut outer = vec![*tag];
        prost::encoding::encode_varint(message.len() as u64, &mut outer);
        outer.extend_from_slice(&message);
        message = outer;
    }
    message
}

/// Each RPC's worst case: (name, path, the message, how many at once).
fn worst_cases(limit: usize) -> Vec<(&'static str, &'static str, Vec<u8>, usize)> {
    let country = [0x0a, 0x02, b'C', b'N'];
    let cases = vec![
        (
            // The control: what 16 calls cost, whatever they hold.
            "Append: one empty event (the cost of any call)",
            "/caravan.v1.IngestService/Append",
            vec![0x0a, 0x00],
        ),
        (
            "Append: empty events",
            "/caravan.v1.IngestService/Append",
            filled(limit, &[0x0a, 0x00], &[]),
        ),
        (
            "Append: 10,000 empty events (the most allowed)",
            "/caravan.v1.IngestService/Append",
            [0x0a, 0x00].repeat(10_000),
        ),
        (
            "AppendStream: an agreement of empty parties",
            "/caravan.v1.IngestService/AppendStream",
            // event (1) { agreement (12 = 0x62) { parties (3 = 0x1a): "" … } }
            filled(limit, &[0x1a, 0x00], &[0x0a, 0x62]),
        ),
        (
            "LookupEvents: one-byte ids",
            "/caravan.v1.IngestService/LookupEvents",
            filled(limit, &[0x0a, 0x01, b'x'], &[]),
        ),
        (
            "StreamTradeRecords: flows",
            "/caravan.v1.QueryService/StreamTradeRecords",
            // filter (1) { flows (3), unpacked varints }
            filled(limit, &[0x18, 0x01], &[0x0a]),
        ),
        (
            "StreamCountryCooperation: partners",
            "/caravan.v1.QueryService/StreamCountryCooperation",
            filled(limit, &[0x12, 0x02, b'K', b'Z'], &[]),
        ),
        (
            "StreamSectorCooperation: countries",
            "/caravan.v1.QueryService/StreamSectorCooperation",
            filled(limit, &[0x12, 0x02, b'K', b'Z'], &[]),
        ),
        (
            "StreamAgreements: parties",
            "/caravan.v1.QueryService/StreamAgreements",
            filled(limit, &country, &[]),
        ),
        (
            "Aggregate: group_by",
            "/caravan.v1.QueryService/Aggregate",
            filled(limit, &[0x10, 0x01], &[]),
        ),
        (
            "Subscribe: countries",
            "/caravan.v1.SubscriptionService/Subscribe",
            filled(limit, &[0x2a, 0x02, b'C', b'N'], &[]),
        ),
    ];
    let mut cases: Vec<_> = cases
        .into_iter()
        .map(|(name, path, message)| (name, path, message, CONCURRENT))
        .collect();
    // The decoding budget at work: four times as many of the request that
    // is charged most for what it is parsed into.
    cases.push((
        "Append: 10,000 empty events, 64 at once",
        "/caravan.v1.IngestService/Append",
        [0x0a, 0x00].repeat(10_000),
        4 * CONCURRENT,
    ));
    cases
}

/// Sends one request and waits for its answer (any answer).
async fn send(channel: tonic::transport::Channel, path: &'static str, message: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    if let Err(e) = grpc.ready().await {
        return Status::unavailable(e.to_string());
    }
    let path = http::uri::PathAndQuery::from_static(path);
    let request = tonic::Request::new(tokio_stream::iter([message]));
    match grpc.streaming(request, path, Raw).await {
        Err(status) => status,
        Ok(answer) => {
            let mut answer = answer.into_inner();
            loop {
                match answer.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return Status::ok(""),
                    Err(status) => return status,
                }
            }
        }
    }
}

/// The hostile section: prints a table and returns its figures.
pub(crate) async fn hostile() -> Result<serde_json::Value, Box<dyn Error>> {
    let limit = crate::grpc::defaults::DEFAULT_MAX_MESSAGE_BYTES;
    let mut table = super::terminal::table(&[
        "worst-case request (16 at once unless named)",
        "bytes each",
        "answer",
        "RSS before",
        "peak",
        "growth",
        "growth / bytes sent",
        "beyond the control / bytes sent",
    ]);
    let mut rows = Vec::new();
    // The growth per call of the first row (a two-byte request): what any
    // call costs, whatever it holds.
    let mut control_per_call: Option<f64> = None;
    for (name, path, message, at_once) in worst_cases(limit) {
        let dir = tempfile::tempdir()?;
        let (child, url) = spawn_server(&dir.path().join("store")).await?;
        let pid = child.id();
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .connect()
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (before, _) = rss_mib(pid);
        // Sample the resident memory while the requests run.
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut peak = 0f64;
                while !done.load(Ordering::Acquire) {
                    peak = peak.max(rss_mib(pid).0);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                peak.max(rss_mib(pid).0)
            })
        };
        let requests: Vec<_> = (0..at_once)
            .map(|_| tokio::spawn(send(channel.clone(), path, message.clone())))
            .collect();
        let mut codes = Vec::new();
        for r in requests {
            codes.push(r.await?.code());
        }
        done.store(true, Ordering::Release);
        let peak = sampler.await?;
        stop_server(child)?;
        let growth = (peak - before).max(0.0);
        let sent_mib = (at_once * message.len()) as f64 / (1024.0 * 1024.0);
        let per_call = *control_per_call.get_or_insert(growth / at_once as f64);
        let beyond = (growth - per_call * at_once as f64).max(0.0);
        codes.dedup();
        let answer = format!("{codes:?}");
        table.add_row([
            name.to_owned(),
            message.len().to_string(),
            answer.clone(),
            format!("{before:.0} MiB"),
            format!("{peak:.0} MiB"),
            format!("{growth:.1} MiB"),
            format!("{:.2}×", growth / sent_mib),
            format!("{:.2}×", beyond / sent_mib),
        ]);
        rows.push(serde_json::json!({
            "request": name,
            "bytes": message.len(),
            "at_once": at_once,
            "answer": answer,
            "rss_before_mib": before,
            "rss_peak_mib": peak,
            "growth_mib": growth,
            "growth_per_byte_sent": growth / sent_mib,
            "growth_beyond_control_per_byte_sent": beyond / sent_mib,
        }));
    }
    println!("hostile requests, {CONCURRENT} at once per row, each on a fresh server process:");
    println!("{table}");
    Ok(serde_json::json!(rows))
}
