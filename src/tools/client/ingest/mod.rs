//! `caravan ingest FILE...`: loads JSON Lines and UN Comtrade CSV files
//! (plain or gzip, or standard input) at the server's speed, and ends with an
//! exact summary. A pipeline of bounded stages, each on its own thread(s):
//!
//! 1. `input` (one thread): reads the inputs in order, cut into chunks of
//!    whole lines or records;
//! 2. `parse` (`--parse-threads`): each chunk becomes events, each encoded
//!    once into the Append batch of the connection its figure or agreement
//!    belongs to;
//! 3. `run` hands every chunk's batches on in input order, so that the
//!    events of one figure keep their file order;
//! 4. `send` (`--connections`, one task each): one Append at a time per
//!    connection, re-sent after a dropped connection.
//!
//! Depends on the generated client and messages and the two file parsers;
//! never on the server's internals.

mod input;
mod parse;
mod progress;
mod send;

use super::{CliError, ConnectArgs};
use crate::proto::v1 as pb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Detect from the first line: `{` is JSON Lines, a Comtrade header is CSV.
    Auto,
    Comtrade,
    Jsonl,
}

/// The largest Append batch the server takes by default.
const MAX_BATCH: usize = 10_000;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Files to ingest (plain or gzip, recognised by content); `-` reads
    /// standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Feed name for events that carry none (and part of derived event ids).
    #[arg(long, default_value = "cli")]
    pub feed: String,
    /// Connections to the server, each sending its own share of the
    /// figures (default: twice the CPUs, 2 to 8).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Events per Append call (1 to 10,000); one call is in flight per
    /// connection.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Threads parsing the input (default: half the CPUs, 1 to 8).
    #[arg(long)]
    pub parse_threads: Option<usize>,
    /// Rejected lines listed at the end (all are counted).
    #[arg(long, default_value_t = 10_000)]
    pub list_rejections: usize,
    /// Give up after this many seconds without an answer from the server.
    #[arg(long, default_value_t = 60)]
    pub retry_secs: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Events of one input, encoded as the body of an `AppendRequest`, with
/// the line each came from.
pub(crate) struct Batch {
    file: u32,
    lines: Vec<u64>,
    body: bytes::Bytes,
}

impl Batch {
    fn new(file: u32) -> Self {
        Batch {
            file,
            lines: Vec::new(),
            body: bytes::Bytes::new(),
        }
    }
}

/// A line that was not stored, and why.
pub(crate) struct Rejection {
    file: u32,
    line: u64,
    reason: String,
}

/// What every stage counts, read by the progress bar and the summary.
#[derive(Default)]
pub(crate) struct Tally {
    stored: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    bytes_read: AtomicU64,
    /// The first `listed_limit` rejections, listed at the end.
    listed: Mutex<Vec<Rejection>>,
    listed_limit: usize,
}

impl Tally {
    fn stored(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    fn reject(&self, r: Rejection) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only loses the listing, never the count.
        if let Ok(mut listed) = self.listed.lock() {
            if listed.len() < self.listed_limit {
                listed.push(r);
            }
        }
    }

    fn counts(&self) -> (u64, u64, u64) {
        (
            self.stored.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    fn progress_text(&self, elapsed: Duration) -> String {
        let (stored, duplicates, rejected) = self.counts();
        let done = stored + duplicates + rejected;
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        format!("{done} events ({rate:.0}/s): {stored} stored, {duplicates} duplicates, {rejected} rejected")
    }
}

/// This process's CPU time so far (user and system), from /proc (Linux).
pub(crate) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// This process's CPU time and peak resident memory in MiB.
fn own_usage() -> Option<(Duration, f64)> {
    let (_, peak) = crate::tools::bench::rss_mib(std::process::id());
    Some((cpu_time()?, peak))
}

/// The most connections or parser threads one command opens.
const MAX_PARALLEL: usize = 64;

/// A count given on the command line (1 to `MAX_PARALLEL`), or `per_cpu`
/// times the machine's CPUs within `min..=max`.
fn count_or_default(
    flag: &str,
    given: Option<usize>,
    per_cpu: usize,
    halve: bool,
    (min, max): (usize, usize),
) -> Result<usize, CliError> {
    match given {
        Some(n) if (1..=MAX_PARALLEL).contains(&n) => Ok(n),
        Some(n) => Err(format!("{flag} {n}: 1 to {MAX_PARALLEL}").into()),
        None => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let n = cpus * per_cpu;
            Ok(if halve { n / 2 } else { n }.clamp(min, max))
        }
    }
}

/// The server's last sequence before this run (for an exact count of what a
/// re-send stored), waiting for the server up to the retry time.
async fn start_sequence(connect: &ConnectArgs, retry: Duration) -> Result<u64, CliError> {
    use crate::proto::v1::ingest_service_client::IngestServiceClient;
    let since = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let error = match connect.connect().await {
            Ok(c) => match IngestServiceClient::new(c)
                .lookup_events(pb::LookupEventsRequest::default())
                .await
            {
                Ok(r) => return Ok(r.into_inner().last_sequence),
                // Unknown: never count a re-sent duplicate as stored.
                Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(u64::MAX),
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                    ) =>
                {
                    return Err(format!("the server refused: {}", s.message()).into())
                }
                Err(s) => s.message().to_owned(),
            },
            Err(e) => e.to_string(),
        };
        if since.elapsed() + backoff > retry {
            return Err(error.into());
        }
        eprintln!("caravan ingest: {error}; retrying in {backoff:?}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs the command; returns the process exit code.
pub async fn run(args: IngestArgs) -> Result<u8, CliError> {
    let started = Instant::now();
    if !(1..=MAX_BATCH).contains(&args.batch) {
        return Err(format!("--batch {}: 1 to {MAX_BATCH}", args.batch).into());
    }
    let connections = count_or_default("--connections", args.connections, 2, false, (2, 8))?;
    let parsers = count_or_default("--parse-threads", args.parse_threads, 1, true, (1, 8))?;
    check_inputs(&args.files)?;
    let retry = Duration::from_secs(args.retry_secs);
    let start_sequence = start_sequence(&args.connect, retry).await?;
    let tally = Arc::new(Tally {
        listed_limit: args.list_rejections,
        ..Tally::default()
    });

    // Chunks to the parser threads. Bounded: the reader waits while every
    // parser is busy and one chunk each is queued.
    let (jobs_tx, jobs_rx) =
        std::sync::mpsc::sync_channel::<(input::Chunk, oneshot::Sender<parse::Parsed>)>(parsers);
    // Each chunk's parse result, in input order. Bounded: how far parsing
    // may run ahead of sending (chunks held at once, with the above).
    let (order_tx, mut order_rx) =
        mpsc::channel::<oneshot::Receiver<parse::Parsed>>(2 * parsers + 2);
    let chunk_records = args.batch * connections;
    let reader = {
        let (files, format, tally) = (args.files.clone(), args.format, Arc::clone(&tally));
        std::thread::spawn(move || {
            input::read_all(&files, format, chunk_records, &tally, |chunk| {
                let (tx, rx) = oneshot::channel();
                jobs_tx.send((chunk, tx)).map_err(|_| ())?;
                order_tx.blocking_send(rx).map_err(|_| ())
            })
        })
    };
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let parser_threads: Vec<_> = (0..parsers)
        .map(|_| {
            let (jobs, feed) = (Arc::clone(&jobs_rx), args.feed.clone());
            std::thread::spawn(move || loop {
                let job = match jobs.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((chunk, answer)) = job else { return };
                let _ = answer.send(parse::parse(chunk, &feed, connections));
            })
        })
        .collect();

    // Batches to each connection. Bounded to one waiting batch: the
    // connection holds one more in flight.
    let connect = Arc::new(args.connect.clone());
    let mut queues = Vec::new();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (tx, rx) = mpsc::channel::<Batch>(1);
        queues.push(tx);
        let sender = send::Sender {
            connect: Arc::clone(&connect),
            tally: Arc::clone(&tally),
            retry,
            high: start_sequence,
        };
        senders.spawn(sender.run(rx));
    }
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let total_bytes = input::total_bytes(&args.files);
    let progress = tokio::spawn(progress::show(Arc::clone(&tally), total_bytes, done_rx));

    let mut failure: Option<CliError> = None;
    'dispatch: while let Some(next) = order_rx.recv().await {
        let Ok(parsed) = next.await else {
            failure = Some("a parser thread stopped".into());
            break;
        };
        for r in parsed.rejected {
            tally.reject(r);
        }
        for (queue, batch) in queues.iter().zip(parsed.batches) {
            if !batch.lines.is_empty() && queue.send(batch).await.is_err() {
                break 'dispatch; // that connection failed: its error is below
            }
        }
    }
    drop(order_rx);
    drop(queues);
    while let Some(result) = senders.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(format!("a connection task: {e}").into())),
        }
    }
    let _ = done_tx.send(true);
    let _ = progress.await;
    let read = reader.join().map_err(|_| "the reader thread panicked")?;
    for t in parser_threads {
        let _ = t.join();
    }
    // What was stored is reported even when the run could not finish.
    let code = summary(&args, &tally, started.elapsed(), connections);
    if let Some(e) = failure {
        return Err(e);
    }
    read?;
    Ok(code)
}

/// Every input can be opened, and standard input is named at most once:
/// checked before anything is sent.
fn check_inputs(files: &[String]) -> Result<(), CliError> {
    if files.iter().filter(|f| *f == "-").count() > 1 {
        return Err("standard input (-) can be read only once".into());
    }
    for path in files.iter().filter(|f| *f != "-") {
        std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// Prints the summary; the exit code is 0 only if nothing was rejected.
fn summary(args: &IngestArgs, tally: &Tally, elapsed: Duration, connections: usize) -> u8 {
    use std::io::Write;
    // A closed standard output (`| head`) ends the listing, not the process.
    let mut out = std::io::stdout().lock();
    let (stored, duplicates, rejected) = tally.counts();
    let total = stored + duplicates + rejected;
    let seconds = elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "stored {stored}, duplicates {duplicates}, rejected {rejected} in {seconds:.2} s ({:.0} events/s)",
        total as f64 / seconds.max(1e-9)
    );
    if let Some((cpu, peak)) = own_usage() {
        let _ = writeln!(
            out,
            "client: {:.2} s CPU ({:.2} µs per event), peak RSS {peak:.0} MiB, {connections} connections",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / total.max(1) as f64
        );
    }
    let mut listed = tally
        .listed
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    listed.sort_by_key(|r| (r.file, r.line));
    for r in &listed {
        let name = match args.files.get(r.file as usize).map(String::as_str) {
            Some("-") | None => "<stdin>",
            Some(path) => path,
        };
        let _ = writeln!(out, "rejected {name}:{}: {}", r.line, r.reason);
    }
    if rejected > listed.len() as u64 {
        let _ = writeln!(
            out,
            "{} more rejections not listed (--list-rejections {})",
            rejected - listed.len() as u64,
            args.list_rejections
        );
    }
    u8::from(rejected > 0)
}

/// Every event of one input exactly as `caravan ingest` would send it (ids
/// derived, feed filled in), read on this thread: for the bench's
/// server-only pass over the same events.
pub(crate) fn read_events(path: &str, feed: &str) -> Result<Vec<pb::Event>, String> {
    let tally = Arc::new(Tally::default());
    let mut events = Vec::new();
    let mut failed = None;
    input::read_all(&[path.to_owned()], Format::Auto, 4096, &tally, |chunk| {
        for batch in parse::parse(chunk, feed, 1).batches {
            match pb::AppendRequest::received(batch.body).into_events() {
                Ok(mut e) => events.append(&mut e),
                Err(e) => {
                    failed = Some(e.to_string());
                    return Err(());
                }
            }
        }
        Ok(())
    })?;
    failed.map_or(Ok(events), Err)
}
