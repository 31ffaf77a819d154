//! `caravan ingest` of real files through the real binary: every input form
//! (JSON Lines and Comtrade CSV; plain and gzip; from a file and from
//! standard input; several inputs of different forms in one command), line
//! numbers across CSV records that span lines, and several connections with
//! one dropped mid-run: nothing lost, nothing doubled, every figure's
//! revisions applied in file order, and an exact summary.

use crate::cli::cutting_proxy;
use crate::helpers::*;
use caravan::proto::v1 as pb;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `caravan ingest ARGS`, with `stdin` on standard input when given.
async fn ingest(server: &str, args: &[&str], stdin: Option<Vec<u8>>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .arg("ingest")
        .args(args)
        .env("CARAVAN_SERVER", server)
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("caravan runs");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(&bytes).await.expect("write stdin");
        drop(pipe);
    }
    child.wait_with_output().await.expect("caravan ends")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (stored, duplicates, rejected) from the summary's first line.
fn counts(o: &std::process::Output) -> (u64, u64, u64) {
    let out = String::from_utf8_lossy(&o.stdout);
    let first = out.lines().next().unwrap_or_default();
    let n: Vec<u64> = first
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .take(3)
        .collect();
    assert_eq!(n.len(), 3, "no summary in {}", text(o));
    (n[0], n[1], n[2])
}

/// `caravan gen` into `dir/name`.
async fn gen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .arg("gen")
        .args(args)
        .arg("--out")
        .arg(&path)
        .output()
        .await
        .expect("caravan gen");
    assert!(out.status.success(), "{}", text(&out));
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A digest of the stored events' content (not their sequence, time or
/// writer), in any order, and how many there are.
async fn content_digest(app: &TestApp) -> (u64, u64) {
    let mut client = app.ingest().await;
    let last = last_sequence(&mut client).await;
    let mut hashes = Vec::new();
    let mut next = 1;
    while next <= last {
        let upto = (next + 999).min(last);
        let found = client
            .lookup_events(pb::LookupEventsRequest {
                sequences: (next..=upto).collect(),
                ..Default::default()
            })
            .await
            .expect("lookup")
            .into_inner();
        assert!(found.missing_sequences.is_empty());
        for e in found.events {
            let event = e.event.expect("an event");
            hashes.push(xxhash_rust::xxh3::xxh3_64(&prost::Message::encode_to_vec(
                &event,
            )));
        }
        next = upto + 1;
    }
    hashes.sort_unstable();
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    for h in hashes {
        digest.update(&h.to_le_bytes());
    }
    (last, digest.digest())
}

/// A digest of every HS-4 figure's current value and revision number,
/// annual and monthly.
async fn figures_digest(app: &TestApp) -> (usize, u64) {
    use pb::query_service_client::QueryServiceClient;
    let mut q = QueryServiceClient::new(app.channel().await);
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    let mut n = 0;
    for frequency in [pb::Frequency::Annual, pb::Frequency::Monthly] {
        let request = pb::StreamTradeRecordsRequest {
            filter: Some(pb::FigureFilter {
                level: pb::CommodityLevel::Hs4 as i32,
                periods: Some(pb::PeriodRange {
                    frequency: frequency as i32,
                    from: None,
                    to: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stream = q.stream_trade_records(request).await.unwrap().into_inner();
        for message in drain(stream).await.unwrap() {
            for mut r in message.records {
                // Where the figure's last version landed depends on how the
                // connections interleaved; its value and revision do not.
                r.sequence = 0;
                n += 1;
                digest.update(&prost::Message::encode_to_vec(&r));
            }
        }
    }
    (n, digest.digest())
}

#[tokio::test]
async fn every_input_form_stores_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let gen_args = ["--records", "3000", "--seed", "5", "--agreements", "10"];
    let jsonl = gen(dir.path(), "gen.jsonl", &gen_args).await;
    let csv = gen(
        dir.path(),
        "gen.csv",
        &["--records", "3000", "--seed", "5", "--format", "comtrade"],
    )
    .await;
    let jsonl_bytes = std::fs::read(&jsonl).unwrap();
    let csv_bytes = std::fs::read(&csv).unwrap();
    // gzip under names that do not say so: recognised by content.
    let jsonl_gz = dir.path().join("events.data");
    std::fs::write(&jsonl_gz, gzip(&jsonl_bytes)).unwrap();
    let csv_gz = dir.path().join("comtrade.txt");
    // Two gzip members one after the other read as one text.
    let half = csv_bytes.len() / 2;
    let cut = half + csv_bytes[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut two_members = gzip(&csv_bytes[..cut]);
    two_members.extend(gzip(&csv_bytes[cut..]));
    std::fs::write(&csv_gz, &two_members).unwrap();
    let lines = |b: &[u8]| b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count() as u64;
    let (jsonl_lines, csv_rows) = (lines(&jsonl_bytes), lines(&csv_bytes) - 1);

    let path = |p: &Path| p.to_str().unwrap().to_owned();
    // (name, arguments, standard input, lines that are events)
    type Form<'a> = (&'a str, Vec<String>, Option<Vec<u8>>, u64);
    let forms: Vec<Form> = vec![
        ("JSON Lines file", vec![path(&jsonl)], None, jsonl_lines),
        (
            "JSON Lines gzip file",
            vec![path(&jsonl_gz)],
            None,
            jsonl_lines,
        ),
        (
            "JSON Lines on stdin",
            vec!["-".into()],
            Some(jsonl_bytes.clone()),
            jsonl_lines,
        ),
        (
            "JSON Lines gzip on stdin",
            vec!["-".into()],
            Some(gzip(&jsonl_bytes)),
            jsonl_lines,
        ),
        ("Comtrade CSV file", vec![path(&csv)], None, csv_rows),
        (
            "Comtrade CSV gzip file, two members",
            vec![path(&csv_gz)],
            None,
            csv_rows,
        ),
        (
            "Comtrade CSV gzip on stdin",
            vec!["-".into()],
            Some(two_members.clone()),
            csv_rows,
        ),
    ];
    let mut expected: std::collections::HashMap<bool, (u64, u64)> = Default::default();
    let mut stored_once = std::collections::HashMap::new();
    for (name, files, stdin, records) in forms {
        let app = spawn_app().await;
        let args: Vec<&str> = files.iter().map(String::as_str).collect();
        let out = ingest(&app.url(), &args, stdin).await;
        assert!(out.status.success(), "{name}: {}", text(&out));
        let (stored, duplicates, rejected) = counts(&out);
        assert_eq!(rejected, 0, "{name}");
        assert_eq!(
            stored + duplicates,
            records,
            "{name}: every line answered once"
        );
        let digest = content_digest(&app).await;
        assert_eq!(digest.0, stored, "{name}: one sequence per stored event");
        let is_csv = name.starts_with("Comtrade");
        let first = *expected.entry(is_csv).or_insert(digest);
        assert_eq!(digest, first, "{name}: the same events as the plain file");
        stored_once.insert(is_csv, stored);
        app.stop().await;
    }

    // Both forms in one command, each recognised on its own, twice: the
    // second run stores nothing new.
    let app = spawn_app().await;
    let both = [path(&csv_gz), path(&jsonl)];
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    let out = ingest(&app.url(), &both, None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(counts(&out).0, stored_once[&true] + stored_once[&false]);
    let again = ingest(&app.url(), &both, None).await;
    assert_eq!(
        counts(&again),
        (0, jsonl_lines + csv_rows, 0),
        "{}",
        text(&again)
    );
    app.stop().await;
}

#[tokio::test]
async fn csv_records_across_lines_keep_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let header = "typeCode,freqCode,refPeriodId,refYear,refMonth,period,reporterCode,reporterISO,reporterDesc,flowCode,flowDesc,partnerCode,partnerISO,partnerDesc,cmdCode,cmdDesc,qtyUnitAbbr,qty,netWgt,cifvalue,fobvalue,primaryValue";
    let rows = [
        // line 2: a description over three lines (lines 2-4)
        "C,A,2022,2022,52,2022,156,CHN,China,X,Export,398,KAZ,Kazakhstan,2711,\"Petroleum gases,\nliquefied\n\"\"LNG\"\"\",kg,5,,,,100",
        // line 5
        "C,A,2022,2022,52,2022,156,CHN,China,X,Export,0,W00,World,TOTAL,,,,,,,999",
        // line 6
        "",
        // line 7
        "C,A,2022,2022,52,2022,156,CHN,China,Q,Other,398,KAZ,Kazakhstan,TOTAL,,,,,,,5",
        // line 8
        "C,A,2022,2022,52,2022,156,CHN,China,M,Import,860,UZB,Uzbekistan,TOTAL,,,,,,,8",
    ];
    let text_lf = format!("\u{feff}{header}\n{}\n", rows.join("\n"));
    let file = dir.path().join("multi.csv");
    std::fs::write(&file, text_lf.replace('\n', "\r\n")).unwrap();
    let app = spawn_app().await;
    let out = ingest(&app.url(), &[file.to_str().unwrap()], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(counts(&out), (2, 0, 2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("multi.csv:5: partner W00"), "{stdout}");
    assert!(stdout.contains("multi.csv:7: flowCode \"Q\""), "{stdout}");
    // The same from standard input, gzip.
    let app2 = spawn_app().await;
    let out = ingest(
        &app2.url(),
        &["-"],
        Some(gzip(&std::fs::read(&file).unwrap())),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("<stdin>:5: partner W00"), "{stdout}");
    assert!(stdout.contains("<stdin>:7: flowCode"), "{stdout}");
    app.stop().await;
    app2.stop().await;
}

#[tokio::test]
async fn several_connections_with_one_dropped_lose_nothing_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The mixed profile revises and repeats figures later in the file.
    let file = gen(
        dir.path(),
        "gen.jsonl",
        &["--records", "40000", "--seed", "11", "--agreements", "50"],
    )
    .await;
    let file = file.to_str().unwrap();
    let lines = std::fs::read_to_string(file).unwrap().lines().count() as u64;

    // The reference: one connection, nothing dropped.
    let reference = spawn_app().await;
    let out = ingest(&reference.url(), &[file, "--connections", "1"], None).await;
    assert!(out.status.success(), "{}", text(&out));
    let expected = counts(&out);
    assert_eq!(expected.0 + expected.1, lines);
    let expected_figures = figures_digest(&reference).await;
    let expected_content = content_digest(&reference).await;
    reference.stop().await;

    // Four connections through a proxy that cuts the second connection it
    // accepts (the first sender's: the first connection only asks for the
    // last sequence) after 200 KB, mid-run.
    let app = spawn_app().await;
    let proxy = cutting_proxy(app.addr, 200_000, 1).await;
    let url = format!("http://{proxy}");
    let out = ingest(&url, &[file, "--connections", "4", "--batch", "250"], None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reconnecting"),
        "the drop was noticed: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 connections"),
        "{}",
        text(&out)
    );
    // The summary is exact although a batch was sent twice.
    assert_eq!(counts(&out), expected, "{}", text(&out));
    // Nothing lost or doubled: the same events, each at one sequence.
    assert_eq!(content_digest(&app).await, expected_content);
    // Revisions applied in file order: the same current figures.
    assert_eq!(figures_digest(&app).await, expected_figures);
    assert!(expected_figures.0 > 1000, "{expected_figures:?}");
    app.stop().await;
}
