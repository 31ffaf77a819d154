//! A damaged store is served exactly as acknowledged or refused with a
//! message, never served short: byte flips, zeroed pages and truncations of
//! sled's data file, on stores stopped cleanly and by SIGKILL; a damaged or
//! missing acknowledgement mark; what a power cut leaves torn (an unfinished
//! snapshot file, a torn `conf`); and a format-1 store made by the previous
//! build, upgraded in place and answering as it did. All through the real
//! binary.

use crate::helpers::*;
use caravan::proto::v1 as pb;
use caravan::proto::v1::ingest_service_client::IngestServiceClient;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// How a start of the binary on a store ended.
pub(crate) enum Start {
    Serving(Child, String),
    /// It exited: its status and what it wrote on stderr.
    Refused(std::process::ExitStatus, String),
}

async fn start(data: &Path) -> Start {
    start_with(data, &[]).await
}

/// Starts the binary on `data` with more flags.
pub(crate) async fn start_with(data: &Path, flags: &[&str]) -> Start {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the server either announces its address or exits")
        .expect("read stdout");
    match line.and_then(|l| l.strip_prefix("caravan listening on ").map(str::to_owned)) {
        Some(addr) => {
            // Keep draining stderr so that the server never blocks on it.
            let mut stderr = child.stderr.take().expect("stderr");
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = stderr.read_to_end(&mut sink).await;
            });
            Start::Serving(child, format!("http://{addr}"))
        }
        None => {
            let status = child.wait().await.expect("exit status");
            let mut err = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .await
                .unwrap();
            Start::Refused(status, err)
        }
    }
}

async fn serving(data: &Path) -> (Child, String) {
    match start(data).await {
        Start::Serving(child, url) => (child, url),
        Start::Refused(status, err) => panic!("refused ({status}): {err}"),
    }
}

/// Stops the binary with SIGTERM and waits for its clean exit.
pub(crate) async fn terminate(mut child: Child) {
    signal(&child, "-TERM");
    assert!(child.wait().await.unwrap().success());
}

pub(crate) async fn stop(mut child: Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// What a store acknowledged: the events' ids and sequences.
struct Acknowledged {
    acks: Vec<pb::Ack>,
    last: u64,
}

/// Appends 30 batches of 100 events and stops the server cleanly (SIGTERM)
/// or by SIGKILL right after the last acknowledgement.
async fn build_store(data: &Path, sigkill: bool) -> Acknowledged {
    let (child, url) = serving(data).await;
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    let mut acks = Vec::new();
    for batch in 0..30 {
        let events = (0..100)
            .map(|i| trade(&format!("d-{batch}-{i}"), "CN", "KZ", 1900 + i, batch + 1))
            .collect();
        acks.extend(append(&mut client, events).await.unwrap());
    }
    if sigkill {
        stop(child).await;
    } else {
        terminate(child).await;
    }
    let last = acks.iter().map(|a| a.sequence).max().unwrap();
    Acknowledged { acks, last }
}

/// Checks that a server serves exactly what was acknowledged: every event
/// up to the last acknowledged sequence, the same bytes, every id where it
/// was acknowledged, and new events after the log's end.
async fn assert_serves(url: &str, acked: &Acknowledged, expected: u64, case: &str) {
    let mut client = IngestServiceClient::connect(url.to_owned()).await.unwrap();
    let last = last_sequence(&mut client).await;
    assert!(last >= acked.last, "{case}: serves {last} < {}", acked.last);
    assert_eq!(
        log_digest(&mut client, acked.last).await,
        expected,
        "{case}: other bytes"
    );
    let ids = client
        .lookup_events(pb::LookupEventsRequest {
            event_ids: acked
                .acks
                .iter()
                .step_by(97)
                .map(|a| a.event_id.clone())
                .collect(),
            sequences: vec![],
            feed: "test-feed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        ids.missing_event_ids.is_empty(),
        "{case}: {:?}",
        ids.missing_event_ids
    );
    let next = append(
        &mut client,
        vec![trade(&format!("after {case}"), "CN", "KZ", 2001, 1)],
    )
    .await
    .unwrap();
    assert_eq!(next[0].sequence, last + 1, "{case}");
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A damage done to a copy of a store.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Invert the byte at this offset of `db` (from its start; negative:
    /// from its end).
    Flip(i64),
    /// Zero 4 KiB of `db` from this offset.
    ZeroPage(i64),
    /// Cut `db` to this many bytes (negative: this many fewer).
    Truncate(i64),
}

fn offset(len: u64, at: i64) -> u64 {
    if at < 0 {
        len.saturating_sub(at.unsigned_abs())
    } else {
        (at as u64).min(len.saturating_sub(1))
    }
}

fn damage(store: &Path, damage: Damage) {
    use std::os::unix::fs::FileExt;
    let db = store.join("db");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&db)
        .unwrap();
    let len = file.metadata().unwrap().len();
    match damage {
        Damage::Flip(at) => {
            let at = offset(len, at);
            let mut b = [0u8];
            file.read_exact_at(&mut b, at).unwrap();
            file.write_all_at(&[!b[0]], at).unwrap();
        }
        Damage::ZeroPage(at) => {
            let at = offset(len, at);
            let n = 4096.min(len - at) as usize;
            file.write_all_at(&vec![0u8; n], at).unwrap();
        }
        Damage::Truncate(to) => file.set_len(offset(len + 1, to)).unwrap(),
    }
}

/// Every damaged copy of a store either serves exactly what was
/// acknowledged or refuses to start with one line saying why.
async fn damaged_copies_are_served_whole_or_refused(sigkill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    let acked = build_store(&data, sigkill).await;
    let (child, url) = serving(&data).await;
    let mut client = IngestServiceClient::connect(url.clone()).await.unwrap();
    let expected = log_digest(&mut client, acked.last).await;
    stop(child).await;
    let len = std::fs::metadata(data.join("db")).unwrap().len() as i64;
    let cases = [
        Damage::Flip(-100),
        Damage::Flip(-1_000),
        Damage::Flip(-5_000),
        Damage::Flip(-30_000),
        Damage::Flip(len / 2),
        Damage::Flip(len / 4),
        Damage::Flip(4_000),
        Damage::Flip(20),
        Damage::ZeroPage(-4_096),
        Damage::ZeroPage(len / 2),
        Damage::ZeroPage(0),
        Damage::Truncate(0),
        Damage::Truncate(len / 2),
        Damage::Truncate(-1_000),
    ];
    let (mut served, mut refused) = (0, 0);
    for (i, case) in cases.into_iter().enumerate() {
        let copy = dir.path().join(format!("copy-{i}"));
        copy_dir(&data, &copy);
        damage(&copy, case);
        let name = format!("{case:?} of {len} bytes, sigkill {sigkill}");
        match start(&copy).await {
            Start::Serving(child, url) => {
                assert_serves(&url, &acked, expected, &name).await;
                stop(child).await;
                served += 1;
            }
            Start::Refused(status, err) => {
                assert!(!status.success(), "{name}: {status}");
                assert!(!err.contains("panicked"), "{name}: {err}");
                let last = err.lines().last().unwrap_or_default();
                assert!(last.starts_with("caravan: "), "{name}: {err}");
                eprintln!("{name}: refused: {last}");
                refused += 1;
            }
        }
    }
    eprintln!("sigkill {sigkill}: {served} damaged copies served whole, {refused} refused");
}

#[tokio::test]
async fn damaged_copies_of_a_cleanly_stopped_store_are_served_whole_or_refused() {
    damaged_copies_are_served_whole_or_refused(false).await;
}

#[tokio::test]
async fn damaged_copies_of_a_killed_store_are_served_whole_or_refused() {
    damaged_copies_are_served_whole_or_refused(true).await;
}

#[tokio::test]
async fn an_emptied_or_shortened_log_is_refused_naming_the_missing_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    let acked = build_store(&data, false).await;
    // The data file emptied: sled would open an empty store.
    let copy = dir.path().join("emptied");
    copy_dir(&data, &copy);
    damage(&copy, Damage::Truncate(0));
    let Start::Refused(status, err) = start(&copy).await else {
        panic!("an emptied data file was served");
    };
    assert!(!status.success());
    assert!(
        err.contains(&format!("events 1..={} are missing", acked.last)),
        "{err}"
    );
    // The whole store replaced by an empty one: the mark still tells.
    let copy = dir.path().join("replaced");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(data.join("acknowledged"), copy.join("acknowledged")).unwrap();
    let Start::Refused(_, err) = start(&copy).await else {
        panic!("an empty store with a mark was served");
    };
    assert!(err.contains("are missing"), "{err}");
}

#[tokio::test]
async fn a_damaged_mark_is_refused_and_a_deleted_one_is_rewritten_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let acked = build_store(&data, false).await;
    let mark = data.join("acknowledged");
    let good = std::fs::read(&mark).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 1;
    std::fs::write(&mark, &bad).unwrap();
    let Start::Refused(_, err) = start(&data).await else {
        panic!("a damaged mark was served");
    };
    assert!(
        err.contains("acknowledgement mark") && err.contains("delete the file"),
        "{err}"
    );
    std::fs::remove_file(&mark).unwrap();
    let (child, url) = serving(&data).await;
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    assert_eq!(last_sequence(&mut client).await, acked.last);
    stop(child).await;
    assert_eq!(
        std::fs::read(&mark).unwrap(),
        good,
        "rewritten from the log"
    );
}

#[tokio::test]
async fn what_a_power_cut_leaves_torn_is_repaired_and_everything_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("original");
    let acked = build_store(&data, true).await;
    let (child, url) = serving(&data).await;
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    let expected = log_digest(&mut client, acked.last).await;
    stop(child).await;
    let conf = std::fs::read(data.join("conf")).unwrap();
    let torn: [(&str, Tear); 4] = [
        (
            "an empty unfinished snapshot",
            Box::new(|d: &Path| {
                std::fs::write(d.join("snap.00000000FFFFFFFF.generating"), b"").unwrap()
            }),
        ),
        (
            "conf without its CRC",
            Box::new(move |d: &Path| {
                std::fs::write(d.join("conf"), &conf[..conf.len() - 4]).unwrap()
            }),
        ),
        (
            "conf of zeros",
            Box::new(|d: &Path| std::fs::write(d.join("conf"), [0u8; 62]).unwrap()),
        ),
        (
            "conf cut in its text",
            Box::new(|d: &Path| {
                let c = std::fs::read(d.join("conf")).unwrap();
                std::fs::write(d.join("conf"), &c[..25]).unwrap()
            }),
        ),
    ];
    for (i, (name, tear)) in torn.iter().enumerate() {
        let copy = dir.path().join(format!("torn-{i}"));
        copy_dir(&data, &copy);
        tear(&copy);
        let (child, url) = serving(&copy).await;
        assert_serves(&url, &acked, expected, name).await;
        stop(child).await;
    }
}

/// Runs `caravan ingest FILE` against `url`; returns what it printed.
async fn ingest_file(file: &Path, url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .arg("ingest")
        .arg(file)
        .args(["--server", url])
        .output()
        .await
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    printed
}

/// A way to tear a copy of a store.
type Tear = Box<dyn Fn(&Path)>;

/// Runs a `caravan` client subcommand against `url` and returns its stdout.
async fn client_output(args: &[&str], url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(args)
        .args(["--server", url, "--output", "json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The whole log as `caravan subscribe --from-beginning` prints it.
async fn subscribed(url: &str, events: usize) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args([
            "subscribe",
            "--from-beginning",
            "--output",
            "json",
            "--server",
            url,
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    while out.len() < events {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("events flow")
            .unwrap()
            .expect("a line");
        out.push(line);
    }
    stop(child).await;
    out
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[tokio::test]
async fn a_format_1_store_is_upgraded_in_place_and_answers_as_it_did() {
    upgraded_answers_as_it_did("format1-store", "format1-store-answers", &[]).await;
}

/// A store of format 2, whose event ids were global, is upgraded in place
/// (fingerprints of feed and id, the feeds of each pair) and answers as the
/// format-2 build did; ids are then unique per feed.
#[tokio::test]
async fn a_format_2_store_is_upgraded_in_place_and_ids_become_unique_per_feed() {
    let (_dir, data) = upgraded_answers_as_it_did(
        "format2-store",
        "format2-store-answers",
        &[(
            &["query", "records", "--reporters", "CN", "--level", "all"][..],
            "records-CN.json",
        )],
    )
    .await;
    // The first event again: a duplicate of sequence 1; the same id under
    // another feed: another event.
    let line = std::fs::read_to_string(fixture("format2-store-answers").join("events.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let stored: serde_json::Value = serde_json::from_str(&line).unwrap();
    let mut event = stored["event"].clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("again.jsonl");
    let (child, url) = serving(&data).await;
    std::fs::write(&file, format!("{event}\n")).unwrap();
    let summary = ingest_file(&file, &url).await;
    assert!(summary.contains("stored 0, duplicates 1"), "{summary}");
    let mut client = IngestServiceClient::connect(url.clone()).await.unwrap();
    let last = last_sequence(&mut client).await;
    event["feed"] = "another-feed".into();
    std::fs::write(&file, format!("{event}\n")).unwrap();
    let summary = ingest_file(&file, &url).await;
    assert!(summary.contains("stored 1, duplicates 0"), "{summary}");
    assert_eq!(last_sequence(&mut client).await, last + 1);
    let found = client
        .lookup_events(pb::LookupEventsRequest {
            event_ids: vec![event["eventId"].as_str().unwrap().to_owned()],
            sequences: vec![],
            feed: "gen".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.events[0].sequence, 1, "the original, by its feed");
    stop(child).await;
}

/// Copies a store written by an older build, starts the current build on
/// it twice (the start that upgrades, and a start of the upgraded store) and
/// checks that it answers as that build did: the whole log, and the
/// queries whose answers the fixture keeps. Returns the upgraded store.
async fn upgraded_answers_as_it_did(
    store: &str,
    answers: &str,
    more: &[(&[&str], &str)],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    copy_dir(&fixture(store), &data);
    let answers = fixture(answers);
    let expected_events: Vec<String> = std::fs::read_to_string(answers.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let queries: Vec<(&[&str], &str)> = [
        (
            &["query", "country", "CN", "--from", "2015", "--to", "2024"][..],
            "country-CN.json",
        ),
        (&["query", "agreements"][..], "agreements.json"),
        (
            &[
                "query",
                "aggregate",
                "--from",
                "2015",
                "--to",
                "2024",
                "--group-by",
                "reporter,flow",
            ][..],
            "aggregate.json",
        ),
    ]
    .into_iter()
    .chain(more.iter().copied())
    .collect();
    for round in 0u64..2 {
        let (child, url) = serving(&data).await;
        assert_eq!(
            subscribed(&url, expected_events.len()).await,
            expected_events,
            "round {round}"
        );
        for (args, file) in &queries {
            let expected = std::fs::read_to_string(answers.join(file)).unwrap();
            assert_eq!(
                client_output(args, &url).await,
                expected,
                "round {round}: {file}"
            );
        }
        if round == 1 {
            // Sequences go on after the upgraded log.
            let mut client = IngestServiceClient::connect(url).await.unwrap();
            let next = append(&mut client, vec![trade("upgraded", "CN", "KZ", 2001, 1)])
                .await
                .unwrap();
            assert_eq!(next[0].sequence, expected_events.len() as u64 + 1);
        }
        stop(child).await;
    }
    (dir, data)
}
