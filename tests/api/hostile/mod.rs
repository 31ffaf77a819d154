//! Hostile input, against the real server: every case gets its expected code
//! (and field violation, where there is one), the server keeps answering, and
//! the store is unchanged (newest sequence and a digest of the whole log).

mod connections;
mod cursors;
mod events;
mod filters;
mod framing;
mod lifecycle;
mod random;
mod sums;

use crate::helpers::*;
use caravan::proto::v1 as pb;
pub use caravan::tools::raw::Raw;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Every caravan method whose request is one message, by path.
pub const UNARY_REQUEST_METHODS: [&str; 8] = [
    "/caravan.v1.IngestService/Append",
    "/caravan.v1.IngestService/LookupEvents",
    "/caravan.v1.QueryService/StreamTradeRecords",
    "/caravan.v1.QueryService/StreamCountryCooperation",
    "/caravan.v1.QueryService/StreamSectorCooperation",
    "/caravan.v1.QueryService/StreamAgreements",
    "/caravan.v1.QueryService/Aggregate",
    "/caravan.v1.SubscriptionService/Subscribe",
];

pub const APPEND_STREAM: &str = "/caravan.v1.IngestService/AppendStream";

/// Calls `path` with the request messages `messages` as raw bytes and returns
/// the first answer: a message or the status the call ended with.
pub async fn call_raw(
    channel: &Channel,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(path);
    let request = tonic::Request::new(tokio_stream::iter(messages));
    let mut answers = grpc.streaming(request, path, Raw).await?.into_inner();
    match answers.message().await? {
        Some(m) => Ok(m),
        None => Err(Status::ok("the call ended without a message")),
    }
}

/// The newest sequence and a digest of every stored event.
pub async fn store_state(app: &TestApp) -> (u64, u64) {
    let mut ingest = app.ingest().await;
    let last = last_sequence(&mut ingest).await;
    (last, log_digest(&mut ingest, last).await)
}

/// A server with a little of everything stored: agreements and figures.
pub async fn seeded_app() -> TestApp {
    let app = spawn_app().await;
    load_seed(&app).await;
    app
}

/// Asserts `status` has `code` and, when `field` is given, a field violation
/// of that field.
#[track_caller]
pub fn assert_refused(status: &Status, code: Code, field: Option<&str>, case: &str) {
    assert_eq!(status.code(), code, "{case}: {status:?}");
    if let Some(field) = field {
        let fields = violated_fields(status);
        assert!(
            fields.iter().any(|f| f == field),
            "{case}: no violation of {field:?} in {fields:?} ({})",
            status.message()
        );
    }
}

/// The server still answers a plain request.
pub async fn still_serving(app: &TestApp) {
    let mut ingest = app.ingest().await;
    last_sequence(&mut ingest).await;
}
