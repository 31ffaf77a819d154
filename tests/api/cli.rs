//! The command line against real servers: ingest (Comtrade CSV with
//! ISO-8859-1 text and decimals, JSON Lines, bad rows, a dropped connection),
//! query output in both forms, subscribe, gen, and an unreachable server.

use crate::helpers::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn caravan(args: &[&str], server: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(args)
        .env("CARAVAN_SERVER", server)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("caravan runs")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const HEADER: &str = "typeCode,freqCode,refPeriodId,refYear,refMonth,period,reporterCode,reporterISO,reporterDesc,flowCode,flowDesc,partnerCode,partnerISO,partnerDesc,cmdCode,cmdDesc,qtyUnitAbbr,qty,netWgt,cifvalue,fobvalue,primaryValue";

fn write_latin1_csv(path: &Path, rows: &[&str]) {
    let mut bytes = Vec::new();
    for line in std::iter::once(HEADER).chain(rows.iter().copied()) {
        // ISO-8859-1: every char below U+0100 is one byte.
        bytes.extend(
            line.chars()
                .map(|c| u8::try_from(u32::from(c)).expect("latin-1")),
        );
        bytes.extend_from_slice(b"\r\n");
    }
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_comtrade_csv_in_iso_8859_1_loads_exactly_and_twice_stores_nothing_new() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("comtrade.csv");
    write_latin1_csv(
        &csv,
        &[
            "C,A,20220101,2022,52,2022,156,CHN,China,X,Export,384,CIV,Côte d'Ivoire,TOTAL,All Commodities,,,,,1234567.89,1234567.89",
            "C,M,20220301,2022,3,202203,156,CHN,China,M,Import,398,KAZ,Kazakhstan,2711,\"Petroleum gases, liquefied\",kg,1500.5,,,98765.4,98765.4",
        ],
    );
    let path = csv.to_str().unwrap();
    let first = caravan(&["ingest", path], &app.url()).await;
    assert!(
        first.status.success(),
        "{}{}",
        stdout(&first),
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout(&first).starts_with("stored 2, duplicates 0, rejected 0"),
        "{}",
        stdout(&first)
    );
    let again = caravan(&["ingest", path], &app.url()).await;
    assert!(
        stdout(&again).starts_with("stored 0, duplicates 2, rejected 0"),
        "{}",
        stdout(&again)
    );

    let json = caravan(
        &[
            "query",
            "records",
            "--level",
            "all",
            "--reporters",
            "CN",
            "--output",
            "json",
        ],
        &app.url(),
    )
    .await;
    assert!(json.status.success());
    let lines: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let record = &lines[0]["records"][0]["record"];
    assert_eq!(record["partner"], "CI");
    assert_eq!(record["value"]["units"], "1234567");
    assert_eq!(record["value"]["nanos"], 890000000);
    let monthly = caravan(
        &[
            "query",
            "records",
            "--level",
            "hs4",
            "--frequency",
            "monthly",
            "--output",
            "json",
        ],
        &app.url(),
    )
    .await;
    let m: serde_json::Value =
        serde_json::from_str(stdout(&monthly).lines().next().unwrap()).unwrap();
    let r = &m["records"][0]["record"];
    assert_eq!(
        (r["flow"].as_str(), r["period"]["number"].as_i64()),
        (Some("FLOW_IMPORT"), Some(3))
    );
    assert_eq!(r["quantity"]["unit"], "kg");
    assert_eq!(r["quantity"]["nanos"], 500000000);
    app.stop().await;
}

#[tokio::test]
async fn bad_rows_are_listed_with_their_line_and_good_rows_are_stored() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    write_latin1_csv(
        &csv,
        &[
            "C,A,20220101,2022,52,2022,156,CHN,China,X,Export,398,KAZ,Kazakhstan,TOTAL,,,,,,,100.5",
            "C,A,20220101,2022,52,2022,156,CHN,China,X,Export,0,W00,World,TOTAL,,,,,,,999",
            "C,A,20220101,2022,52,2022,156,CHN,China,Q,Other,398,KAZ,Kazakhstan,TOTAL,,,,,,,5",
            "C,A,20220101,2022,52,2022,156,CHN,China,M,Import,398,KAZ,Kazakhstan,TOTAL,,,,,,,-7",
            "C,A,20220101,2022,52,2022,156,CHN,China,M,Import,398,KAZ,Kazakhstan,123,,,,,,,7",
            "C,A,20220101,2022,52,2022,156,CHN,China,M,Import,860,UZB,Uzbekistan,TOTAL,,,,,,,8",
        ],
    );
    let out = caravan(&["ingest", csv.to_str().unwrap()], &app.url()).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("stored 2, duplicates 0, rejected 4"),
        "{text}"
    );
    for expected in [
        "bad.csv:3: partner W00 (World) is not a country",
        "bad.csv:4: flowCode \"Q\"",
        "bad.csv:5: primaryValue",
        "bad.csv:6: ",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert_eq!(last_sequence(&mut app.ingest().await).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn json_lines_load_and_query_output_comes_as_tables_or_json() {
    let app = spawn_app().await;
    let out = caravan(
        &[
            "ingest",
            "data/seed/agreements.jsonl",
            "data/seed/trade.jsonl",
            "data/seed/sectors.jsonl",
        ],
        &app.url(),
    )
    .await;
    assert!(
        stdout(&out).starts_with("stored 85, duplicates 0, rejected 0"),
        "{}",
        stdout(&out)
    );
    let again = caravan(
        &[
            "ingest",
            "data/seed/sectors.jsonl",
            "data/seed/trade.jsonl",
            "data/seed/agreements.jsonl",
        ],
        &app.url(),
    )
    .await;
    assert!(
        stdout(&again).starts_with("stored 0, duplicates 85, rejected 0"),
        "{}",
        stdout(&again)
    );

    let args = [
        "query",
        "aggregate",
        "--reporters",
        "CN",
        "--partners",
        "KZ,KG,TJ,TM,UZ",
        "--from",
        "2022",
        "--to",
        "2022",
    ];
    let table = caravan(&args, &app.url()).await;
    assert!(table.status.success());
    assert!(stdout(&table).contains("70.07 bn"), "{}", stdout(&table));
    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let json = caravan(&json_args, &app.url()).await;
    let v: serde_json::Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(v["group"]["totals"]["total"]["units"], "70071660000");

    let mirror = caravan(&["query", "mirror", "KAZ", "--partners", "CN"], &app.url()).await;
    assert!(
        stdout(&mirror).contains("24.10 bn") && stdout(&mirror).contains("31.20 bn"),
        "{}",
        stdout(&mirror)
    );
    let country = caravan(&["query", "country", "CN", "--from", "2021"], &app.url()).await;
    assert!(stdout(&country).contains("+23.6 %"), "{}", stdout(&country));
    let sector = caravan(&["query", "sector", "energy", "--level", "hs4"], &app.url()).await;
    assert!(stdout(&sector).contains("1.07 bn"), "{}", stdout(&sector));
    let agreements = caravan(
        &[
            "query",
            "agreements",
            "--sectors",
            "mining-metals",
            "--output",
            "json",
        ],
        &app.url(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(stdout(&agreements).trim()).unwrap();
    assert_eq!(
        v["agreement"]["agreement"]["agreementId"],
        "astana-2025-mou-green-minerals"
    );
    app.stop().await;
}

#[tokio::test]
async fn subscribe_prints_events_as_they_arrive() {
    let app = spawn_app().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args([
            "subscribe",
            "--from-beginning",
            "--countries",
            "KZ",
            "--output",
            "json",
            "--server",
            &app.url(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    caravan(
        &[
            "ingest",
            "data/seed/agreements.jsonl",
            "data/seed/trade.jsonl",
        ],
        &app.url(),
    )
    .await;
    let mut seen = Vec::new();
    // Kazakhstan: all 16 agreements name it; 10 trade figures involve it.
    while seen.len() < 26 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("an event line")
            .unwrap()
            .expect("subscribe keeps running");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(v["sequence"].as_str().unwrap().parse::<u64>().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    child.start_kill().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_one_clear_line() {
    let out = caravan(
        &["query", "records", "--timeout-secs", "2"],
        "http://127.0.0.1:1",
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach the caravan server at http://127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test]
async fn the_world_profile_loads_whole_and_covers_every_reporter_in_its_first_round() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("world.jsonl");
    let file = file.to_str().unwrap();
    let g = caravan(
        &[
            "gen",
            "--profile",
            "world",
            "--records",
            "60000",
            "--out",
            file,
        ],
        "",
    )
    .await;
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let text = std::fs::read_to_string(file).unwrap();
    let mut reporters = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let r = &v["tradeRecord"];
        assert_eq!(r["period"]["frequency"], "FREQUENCY_ANNUAL");
        assert_eq!(r["commodity"]["hsCode"].as_str().unwrap().len(), 6);
        reporters.insert(r["reporter"].as_str().unwrap().to_owned());
        assert!(keys.insert((
            r["reporter"].to_string(),
            r["partner"].to_string(),
            r["flow"].to_string(),
            r["commodity"]["hsCode"].to_string(),
        )));
    }
    assert_eq!(reporters.len(), 220);
    let app = spawn_app().await;
    let out = caravan(&["ingest", file], &app.url()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut client = app.ingest().await;
    assert_eq!(
        last_sequence(&mut client).await,
        60_000,
        "every figure stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn gen_is_deterministic_and_ingest_survives_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gen.jsonl");
    let file = file.to_str().unwrap();
    let g = caravan(
        &[
            "gen",
            "--records",
            "30000",
            "--seed",
            "7",
            "--agreements",
            "20",
            "--out",
            file,
        ],
        "",
    )
    .await;
    assert!(g.status.success());
    let again = caravan(
        &[
            "gen",
            "--records",
            "30000",
            "--seed",
            "7",
            "--agreements",
            "20",
        ],
        "",
    )
    .await;
    assert_eq!(
        stdout(&again).as_bytes(),
        std::fs::read(file).unwrap(),
        "deterministic for a seed"
    );
    let ids: std::collections::BTreeSet<String> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["eventId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();

    // The second connection through this proxy (the first that sends
    // events: the first asks for the last sequence) is cut after 300 KB from
    // the client: mid-ingest, whatever the machine's speed. Later ones pass.
    let app = spawn_app().await;
    let proxy = cutting_proxy(app.addr, 300_000, 1).await;
    let url = format!("http://{proxy}");
    let out = caravan(&["ingest", file, "--batch", "256"], &url).await;
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reconnecting"),
        "the drop was noticed"
    );

    // Every distinct event is stored exactly once.
    let mut client =
        caravan::proto::v1::ingest_service_client::IngestServiceClient::connect(url.clone())
            .await
            .unwrap();
    assert_eq!(last_sequence(&mut client).await, ids.len() as u64);
    let ids: Vec<String> = ids.into_iter().collect();
    for chunk in ids.chunks(1_000) {
        let found = client
            .lookup_events(caravan::proto::v1::LookupEventsRequest {
                event_ids: chunk.to_vec(),
                sequences: vec![],
                feed: "gen".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(found.missing_event_ids.is_empty());
    }
    app.stop().await;
}

/// A TCP proxy to `target` that closes its `nth` connection (from 0) once
/// `limit` bytes have gone from the client to the server; the others pass.
pub(crate) async fn cutting_proxy(
    target: std::net::SocketAddr,
    limit: usize,
    nth: usize,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((inbound, _)) = listener.accept().await {
            let cut_after = (accepted == nth).then_some(limit);
            accepted += 1;
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let upstream = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0;
                    loop {
                        let n = ri.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || wo.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                        if cut_after.is_some_and(|l| sent >= l) {
                            return;
                        }
                    }
                };
                let downstream = tokio::io::copy(&mut ro, &mut wi);
                tokio::select! {
                    _ = upstream => {}
                    _ = downstream => {}
                }
                // Dropping both halves of both sockets closes the connection.
            });
        }
    });
    addr
}
