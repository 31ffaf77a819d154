//! `caravan ingest FILE...`: reads Comtrade CSV or JSON Lines files (or
//! standard input), streams the events over `AppendStream` with a bounded
//! window of unacknowledged events, reconnects with backoff when the
//! connection drops and re-sends what was not acknowledged (ingestion is
//! idempotent), and ends with a summary. Exit status 0 only if nothing was
//! rejected.

use super::comtrade::{self, Columns};
use super::{CliError, ConnectArgs};
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_client::IngestServiceClient;
use crate::tools::jsonl;
use prost::Message;
use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Detect from the first line: `{` is JSON Lines, a Comtrade header is CSV.
    Auto,
    Comtrade,
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Files to ingest; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Feed name for events that carry none (and part of derived event ids).
    #[arg(long, default_value = "cli")]
    pub feed: String,
    /// Most events sent and not yet acknowledged.
    #[arg(long, default_value_t = 1024)]
    pub window: usize,
    /// Give up after this many seconds without reaching the server.
    #[arg(long, default_value_t = 60)]
    pub retry_secs: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where an event came from.
#[derive(Clone, Debug)]
struct Origin {
    file: Arc<str>,
    line: u64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

struct Item {
    origin: Origin,
    event: pb::Event,
}

/// What the reader thread produces.
enum Parsed {
    Event(Box<Item>),
    Rejected(Origin, String),
}

/// A deterministic event id from the event's content and the feed name:
/// the same record read twice gets the same id; nothing depends on time.
fn derive_id(event: &pb::Event, feed: &str) -> String {
    let mut bytes = feed.as_bytes().to_vec();
    bytes.push(0);
    event.encode(&mut bytes).unwrap_or_default();
    format!("{feed}:{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
}

fn finish(mut event: pb::Event, feed: &str) -> pb::Event {
    if event.feed.is_empty() {
        event.feed = feed.to_owned();
    }
    if event.event_id.is_empty() {
        event.event_id = derive_id(&event, &event.feed.clone());
    }
    event
}

fn open(path: &str) -> Result<Box<dyn BufRead + Send>, String> {
    if path == "-" {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    std::fs::File::open(path)
        .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn BufRead + Send>)
        .map_err(|e| format!("{path}: {e}"))
}

/// Reads every file in order, sending events and local rejections.
fn read_files(
    files: Vec<String>,
    format: Format,
    feed: String,
    tx: mpsc::Sender<Parsed>,
) -> Result<(), String> {
    for path in files {
        let file: Arc<str> = Arc::from(if path == "-" {
            "<stdin>"
        } else {
            path.as_str()
        });
        let mut reader = open(&path)?;
        let first = reader.fill_buf().map_err(|e| format!("{file}: {e}"))?;
        let looks_json = first.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let format = match format {
            Format::Auto if looks_json => Format::Jsonl,
            Format::Auto => Format::Comtrade,
            f => f,
        };
        let send = |r: Parsed| {
            tx.blocking_send(r)
                .map_err(|_| "the sender stopped".to_owned())
        };
        match format {
            Format::Jsonl | Format::Auto => {
                for (index, line) in reader.split(b'\n').enumerate() {
                    let line_no = index as u64 + 1;
                    let line = line.map_err(|e| format!("{file}: {e}"))?;
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    let origin = Origin {
                        file: Arc::clone(&file),
                        line: line_no,
                    };
                    match jsonl::parse_event_line(text.trim()) {
                        Ok(event) => send(Parsed::Event(Box::new(Item {
                            origin,
                            event: finish(event, &feed),
                        })))?,
                        Err(e) => send(Parsed::Rejected(origin, format!("not an event: {e}")))?,
                    }
                }
            }
            Format::Comtrade => {
                let mut csv = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(reader.by_ref());
                let mut records = csv.byte_records();
                let header: Vec<String> = match records.next() {
                    Some(Ok(h)) => h.iter().map(comtrade::text).collect(),
                    Some(Err(e)) => return Err(format!("{file}: {e}")),
                    None => continue,
                };
                if !comtrade::is_comtrade_header(&header) {
                    return Err(format!(
                        "{file}: neither JSON Lines nor a UN Comtrade CSV header (use --format)"
                    ));
                }
                let columns = Columns::from_header(&header).map_err(|e| format!("{file}: {e}"))?;
                for record in records {
                    let record = record.map_err(|e| format!("{file}: {e}"))?;
                    let origin = Origin {
                        file: Arc::clone(&file),
                        // csv counts the lines before the record; files count from 1.
                        line: record.position().map_or(0, |p| p.line() + 1),
                    };
                    let row: Vec<String> = record.iter().map(comtrade::text).collect();
                    match comtrade::row_to_event(&columns, &row, &feed) {
                        Ok(event) => send(Parsed::Event(Box::new(Item {
                            origin,
                            event: finish(event, &feed),
                        })))?,
                        Err(reason) => send(Parsed::Rejected(origin, reason))?,
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Summary {
    stored: u64,
    duplicates: u64,
    rejected: Vec<(Origin, String)>,
}

/// Progress on standard error: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn show(&mut self, s: &Summary) {
        let done = s.stored + s.duplicates + s.rejected.len() as u64;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let text = format!(
            "{done} events: {} stored, {} duplicates, {} rejected ({rate:.0}/s)",
            s.stored,
            s.duplicates,
            s.rejected.len()
        );
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None if self.last_line.elapsed() >= Duration::from_secs(2) => {
                eprintln!("caravan ingest: {text}");
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn rejection_text(r: &pb::Rejection) -> String {
    if r.field_violations.is_empty() {
        return r.message.clone();
    }
    r.field_violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs the command; returns the process exit code.
/// How long to wait before reconnecting after `status`: the server's
/// `google.rpc.RetryInfo` when it sends one (a quota), else `backoff`. A
/// status that no retry can cure (credentials, permissions, a method the
/// server lacks) ends the command with its message.
fn retry_after(status: &tonic::Status, backoff: Duration) -> Result<Duration, CliError> {
    use tonic::Code;
    use tonic_types::StatusExt;
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => {
            Err(format!("the server refused: {}", status.message()).into())
        }
        Code::ResourceExhausted => Ok(status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .unwrap_or(backoff)),
        _ => Ok(backoff),
    }
}

pub async fn run(args: IngestArgs) -> Result<u8, CliError> {
    let started = Instant::now();
    let window = args.window.max(1);
    // Parsed events from the reader thread, at most a window of them: the
    // reader waits when the sender is a window ahead (the server is slow).
    let (source_tx, mut source) = mpsc::channel::<Parsed>(window);
    let (files, format, feed) = (args.files.clone(), args.format, args.feed.clone());
    let reader = tokio::task::spawn_blocking(move || read_files(files, format, feed, source_tx));

    let mut summary = Summary::default();
    let mut progress = Progress::new();
    let mut inflight: VecDeque<Item> = VecDeque::new();
    let mut source_done = false;
    let mut backoff = Duration::from_millis(100);
    let mut last_progress = Instant::now();

    'connect: while !(source_done && inflight.is_empty()) {
        if last_progress.elapsed() > Duration::from_secs(args.retry_secs) {
            progress.finish();
            return Err(format!(
                "gave up after {} s without reaching the server at {}",
                args.retry_secs, args.connect.server
            )
            .into());
        }
        let channel = match args.connect.connect().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("caravan ingest: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // The connection's outgoing requests, at most a window of them; the
        // loop below never puts more than a window in flight, so `try_send`
        // of the re-sent events cannot fail for lack of room.
        let (tx, rx) = mpsc::channel::<pb::AppendStreamRequest>(window);
        let mut client = IngestServiceClient::new(channel);
        // Re-send what the last connection did not acknowledge, in order.
        for item in &inflight {
            let _ = tx.try_send(pb::AppendStreamRequest {
                event: Some(item.event.clone()),
            });
        }
        let mut tx = Some(tx);
        if source_done {
            tx = None; // nothing more to send: close the request stream
        }
        let mut responses = match client.append_stream(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let wait = retry_after(&status, backoff)?;
                eprintln!("caravan ingest: {}; retrying in {wait:?}", status.message());
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let can_send = tx.is_some() && inflight.len() < window;
            tokio::select! {
                next = source.recv(), if can_send => match next {
                    Some(Parsed::Event(item)) => {
                        let item = *item;
                        let request = pb::AppendStreamRequest { event: Some(item.event.clone()) };
                        inflight.push_back(item);
                        if let Some(t) = &tx {
                            if t.send(request).await.is_err() {
                                eprintln!(
                                    "caravan ingest: connection lost; reconnecting, {} events to re-send",
                                    inflight.len()
                                );
                                continue 'connect;
                            }
                        }
                    }
                    Some(Parsed::Rejected(origin, reason)) => summary.rejected.push((origin, reason)),
                    None => {
                        source_done = true;
                        tx = None;
                        if inflight.is_empty() {
                            break 'connect;
                        }
                    }
                },
                answer = responses.message() => match answer {
                    Ok(Some(r)) => {
                        let Some(item) = inflight.pop_front() else {
                            return Err("the server answered more events than were sent".into());
                        };
                        match r.result {
                            Some(pb::append_stream_response::Result::Ack(a)) => {
                                if a.duplicate { summary.duplicates += 1 } else { summary.stored += 1 }
                            }
                            Some(pb::append_stream_response::Result::Rejection(rej)) => {
                                summary.rejected.push((item.origin, rejection_text(&rej)));
                            }
                            None => summary.rejected.push((item.origin, "no answer from the server".into())),
                        }
                        backoff = Duration::from_millis(100);
                        last_progress = Instant::now();
                        progress.show(&summary);
                        if source_done && inflight.is_empty() {
                            break 'connect;
                        }
                    }
                    Ok(None) => {
                        if source_done && inflight.is_empty() {
                            break 'connect;
                        }
                        eprintln!(
                            "caravan ingest: the server ended the stream early; reconnecting, {} events to re-send",
                            inflight.len()
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue 'connect;
                    }
                    Err(status) => {
                        let wait = retry_after(&status, backoff)?;
                        eprintln!(
                            "caravan ingest: connection lost ({}); reconnecting, {} events to re-send",
                            status.message(),
                            inflight.len()
                        );
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue 'connect;
                    }
                }
            }
        }
    }
    progress.finish();
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(format!("reader: {e}").into()),
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = summary.stored + summary.duplicates + summary.rejected.len() as u64;
    println!(
        "stored {}, duplicates {}, rejected {} in {elapsed:.2} s ({:.0} events/s)",
        summary.stored,
        summary.duplicates,
        summary.rejected.len(),
        total as f64 / elapsed.max(1e-9)
    );
    for (origin, reason) in &summary.rejected {
        println!("rejected {origin}: {reason}");
    }
    Ok(if summary.rejected.is_empty() { 0 } else { 1 })
}
