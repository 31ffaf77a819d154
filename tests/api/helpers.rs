//! Shared test helpers: a real server on 127.0.0.1:0 over a temporary store,
//! generated clients, and event builders.

use caravan::grpc::server::{self, RunningServer, ServerConfig};
use caravan::proto::v1 as pb;
use caravan::proto::v1::ingest_service_client::IngestServiceClient;
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub dir: TempDir,
    server: Option<RunningServer>,
}

/// Starts the real server on a random port over a new temporary store.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    spawn_app_in(dir, |_| {}).await
}

/// Starts the real server over `dir`, with settings adjusted by `tune`.
pub async fn spawn_app_in(dir: TempDir, tune: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let mut config =
        ServerConfig::new("127.0.0.1:0".parse().expect("addr"), store_path(dir.path()));
    tune(&mut config);
    let server = server::start(config).await.expect("server starts");
    TestApp {
        addr: server.addr(),
        dir,
        server: Some(server),
    }
}

pub fn store_path(dir: &Path) -> PathBuf {
    dir.join("store")
}

impl TestApp {
    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().and_then(|s| s.metrics_addr())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connects")
    }

    pub async fn ingest(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel().await)
    }

    /// Re-reads the server's certificate and auth files, as SIGHUP does.
    pub fn reload(&self) -> Result<(), caravan::error::Error> {
        self.server.as_ref().expect("running").reload()
    }

    /// Shuts the server down gracefully and returns its store directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        self.dir
    }

    /// Stops and starts the server again over the same store.
    pub async fn restart(self) -> TestApp {
        let dir = self.stop().await;
        spawn_app_in(dir, |_| {}).await
    }
}

/// Opens a stopped server's sled directly, waiting (up to 2 s) for the lock
/// that sled's background threads of the closed instance release a moment
/// after the close.
pub fn open_sled(path: &Path) -> sled::Db {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < give_up && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("open sled in {}: {e}", path.display()),
        }
    }
}

pub fn money(units: i64) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        units,
        nanos: 0,
    }
}

pub fn annual(year: i32) -> pb::Period {
    pb::Period {
        year,
        frequency: pb::Frequency::Annual as i32,
        number: 0,
    }
}

pub fn all_commodities() -> pb::CommodityScope {
    pb::CommodityScope {
        scope: Some(pb::commodity_scope::Scope::All(pb::AllCommodities {})),
    }
}

pub fn trade(id: &str, reporter: &str, partner: &str, year: i32, units: i64) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        feed: "test-feed".into(),
        occurred_at: None,
        payload: Some(pb::event::Payload::TradeRecord(pb::TradeRecord {
            reporter: reporter.into(),
            partner: partner.into(),
            flow: pb::Flow::Export as i32,
            period: Some(annual(year)),
            commodity: Some(all_commodities()),
            value: Some(money(units)),
            quantity: None,
            source: "test".into(),
            note: String::new(),
        })),
    }
}

pub fn agreement(id: &str, agreement_id: &str) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        feed: "test-feed".into(),
        occurred_at: None,
        payload: Some(pb::event::Payload::Agreement(pb::Agreement {
            agreement_id: agreement_id.into(),
            title: "Xi'an Declaration".into(),
            parties: vec!["CHN".into(), "KAZ".into(), "UZ".into()],
            signed_on: Some(pb::Date {
                year: 2023,
                month: 5,
                day: 19,
            }),
            venue: "Xi'an".into(),
            kind: pb::AgreementKind::Declaration as i32,
            sectors: vec![
                pb::Sector::Energy as i32,
                pb::Sector::TransportLogistics as i32,
            ],
            value: None,
            status: pb::AgreementStatus::Signed as i32,
            source: "A2".into(),
            note: String::new(),
        })),
    }
}

pub fn status_change(id: &str, agreement_id: &str) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        feed: "test-feed".into(),
        occurred_at: None,
        payload: Some(pb::event::Payload::AgreementStatusChanged(
            pb::AgreementStatusChanged {
                agreement_id: agreement_id.into(),
                status: pb::AgreementStatus::InForce as i32,
                effective_on: Some(pb::Date {
                    year: 2024,
                    month: 1,
                    day: 1,
                }),
                note: String::new(),
            },
        )),
    }
}

/// Mutable access to an event's trade record.
pub fn record_mut(e: &mut pb::Event) -> &mut pb::TradeRecord {
    match &mut e.payload {
        Some(pb::event::Payload::TradeRecord(r)) => r,
        _ => panic!("not a trade record"),
    }
}

pub async fn append(
    client: &mut IngestServiceClient<Channel>,
    events: Vec<pb::Event>,
) -> Result<Vec<pb::Ack>, tonic::Status> {
    client
        .append(pb::AppendRequest::new(events))
        .await
        .map(|r| r.into_inner().acks)
}

pub async fn last_sequence(client: &mut IngestServiceClient<Channel>) -> u64 {
    client
        .lookup_events(pb::LookupEventsRequest::default())
        .await
        .expect("lookup")
        .into_inner()
        .last_sequence
}

/// The fields named by a status's google.rpc.BadRequest, in order.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub async fn query(
    app: &TestApp,
) -> caravan::proto::v1::query_service_client::QueryServiceClient<Channel> {
    caravan::proto::v1::query_service_client::QueryServiceClient::new(app.channel().await)
}

/// The groups of an Aggregate call.
pub async fn aggregate(app: &TestApp, req: pb::AggregateRequest) -> Vec<pb::AggregateGroup> {
    let mut q = query(app).await;
    drain(q.aggregate(req).await.unwrap().into_inner())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.group)
        .collect()
}

/// Loads the curated seed data (agreements, trade records, then the figures
/// by product and sector).
pub async fn load_seed(app: &TestApp) -> u64 {
    let mut client = app.ingest().await;
    for text in [
        include_str!("../../data/seed/agreements.jsonl"),
        include_str!("../../data/seed/trade.jsonl"),
        include_str!("../../data/seed/sectors.jsonl"),
    ] {
        let events = caravan::tools::jsonl::parse_events(text).expect("seed parses");
        append(&mut client, events).await.expect("seed loads");
    }
    last_sequence(&mut client).await
}

pub fn annual_range(from: i32, to: i32) -> pb::PeriodRange {
    pb::PeriodRange {
        frequency: pb::Frequency::Annual as i32,
        from: Some(annual(from)),
        to: Some(annual(to)),
    }
}

/// Reads a server stream to its end.
pub async fn drain<T>(s: tonic::Streaming<T>) -> Result<Vec<T>, tonic::Status> {
    let mut s = s;
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// Whole US dollars of a money value (asserting there are no cents).
pub fn usd(m: Option<&pb::Money>) -> i64 {
    let m = m.expect("money present");
    assert_eq!(m.nanos, 0);
    m.units
}

/// A channel with small HTTP/2 windows: the server cannot push a client on it
/// a large answer, so a stream the client does not read stays in progress.
pub async fn small_window_channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap()
}

/// A retraction of the all-commodities annual figure `reporter → partner`
/// of `flow` in `year`.
pub fn retraction(
    id: &str,
    (reporter, partner): (&str, &str),
    flow: pb::Flow,
    year: i32,
    reason: &str,
) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        feed: "test-feed".into(),
        occurred_at: None,
        payload: Some(pb::event::Payload::TradeRecordRetracted(
            pb::TradeRecordRetracted {
                key: Some(pb::TradeFigureKey {
                    reporter: reporter.into(),
                    partner: partner.into(),
                    flow: flow as i32,
                    period: Some(annual(year)),
                    commodity: Some(all_commodities()),
                }),
                reason: reason.into(),
            },
        )),
    }
}

/// Calls `attempt` until it succeeds, for at most `within`.
pub async fn eventually<T, E, F, Fut>(within: std::time::Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    tokio::time::timeout(within, async {
        loop {
            match attempt().await {
                Ok(x) => break x,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .ok()
}

/// Reads a stream to its end and returns the status it ended with, which a
/// stream cut short must have (never OK).
pub async fn end_status<T>(mut s: tonic::Streaming<T>) -> tonic::Status {
    loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a stream cut short must not end with OK"),
            Err(status) => break status,
        }
    }
}

/// The digest of the stored events 1..=`last` as LookupEvents returns them
/// (every one of them must be there).
pub async fn log_digest(client: &mut IngestServiceClient<Channel>, last: u64) -> u64 {
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    let mut next = 1;
    while next <= last {
        let upto = (next + 999).min(last);
        let found = client
            .lookup_events(pb::LookupEventsRequest {
                event_ids: vec![],
                sequences: (next..=upto).collect(),
                feed: String::new(),
            })
            .await
            .expect("lookup")
            .into_inner();
        assert!(
            found.missing_sequences.is_empty(),
            "missing {:?}",
            found.missing_sequences
        );
        for e in found.events {
            digest.update(&prost::Message::encode_to_vec(&e));
        }
        next = upto + 1;
    }
    digest.digest()
}

/// Sends `signal` (`-TERM`, `-HUP`, …) to a running child process.
pub fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}
