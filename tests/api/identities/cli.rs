//! The command line against a server with TLS and identities: `caravan auth`
//! makes a token and its hash, `caravan ingest | query | subscribe` reach
//! the server over https:// with `--ca-cert` and the token from
//! CARAVAN_TOKEN, and a refused token ends a command at once.

use super::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Runs a `caravan` command with `stdin`, in the environment `env`.
async fn caravan(args: &[&str], env: &[(&str, &str)], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(args)
        .env_remove("CARAVAN_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command ends")
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn the_clients_reach_a_tls_server_with_a_token_made_by_caravan_auth() {
    // An operator makes a token and the hash for the auth file.
    let made = caravan(&["auth", "token"], &[], "").await;
    assert!(made.status.success(), "{}", text(&made));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64);
    let hashed = caravan(&["auth", "hash"], &[], &format!("{token}\n")).await;
    assert!(hashed.status.success(), "{}", text(&hashed));
    let hash = String::from_utf8(hashed.stdout).unwrap().trim().to_owned();
    assert_eq!(hash, TokenHash::of(&token).to_hex());
    let weak = caravan(&["auth", "hash"], &[], "secret\n").await;
    assert!(!weak.status.success());
    assert!(text(&weak).contains("at least 32"), "{}", text(&weak));

    let auth = format!(
        "[[identity]]\nname = \"mofcom-loader\"\ntoken_sha256 = \"{hash}\"\n\
         scopes = [\"ingest\", \"read\"]\nfeeds = [\"mofcom\"]\n"
    );
    let secure = secure_app(&auth, None, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &secure.ca.pem.cert);
    let ca = ca.to_str().unwrap();
    let url = format!("https://127.0.0.1:{}", secure.app.addr.port());
    let jsonl = write(
        dir.path(),
        "events.jsonl",
        &format!(
            "{}\n",
            caravan::tools::jsonl::message_to_json(
                &trade_of("mofcom", "cli-1", "CN", "KZ", 31_200),
                "caravan.v1.Event"
            )
            .unwrap()
        ),
    );
    let jsonl = jsonl.to_str().unwrap();
    let server = [("CARAVAN_SERVER", url.as_str()), ("CARAVAN_CA_CERT", ca)];
    let with_token = [server[0], server[1], ("CARAVAN_TOKEN", token.as_str())];

    // Without the token: refused at once, not retried for a minute.
    let started = std::time::Instant::now();
    let refused = caravan(&["ingest", jsonl], &server, "").await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("the server refused"),
        "{}",
        text(&refused)
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    let loaded = caravan(&["ingest", jsonl], &with_token, "").await;
    assert!(loaded.status.success(), "{}", text(&loaded));
    assert!(text(&loaded).contains("stored 1"), "{}", text(&loaded));

    let records = caravan(
        &[
            "query",
            "records",
            "--reporters",
            "CN",
            "--provenance",
            "--output",
            "json",
        ],
        &with_token,
        "",
    )
    .await;
    assert!(records.status.success(), "{}", text(&records));
    let json = String::from_utf8_lossy(&records.stdout);
    assert!(
        json.contains("\"writtenBy\":\"mofcom-loader\"") && json.contains("\"eventId\":\"cli-1\""),
        "{json}"
    );

    // A subscription over TLS delivers the event with its author.
    let mut sub = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["subscribe", "--from-beginning", "--output", "json"])
        .envs(with_token.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(sub.stdout.take().unwrap())
            .lines()
            .next_line(),
    )
    .await
    .expect("an event")
    .unwrap()
    .expect("a line");
    assert!(line.contains("\"writtenBy\":\"mofcom-loader\""), "{line}");
    sub.start_kill().unwrap();

    // Without the server's CA, the certificate is not trusted.
    let untrusted = caravan(
        &["query", "agreements"],
        &[server[0], ("CARAVAN_TOKEN", token.as_str())],
        "",
    )
    .await;
    assert!(!untrusted.status.success());
    assert!(
        text(&untrusted).contains("cannot reach"),
        "{}",
        text(&untrusted)
    );
    secure.app.stop().await;
}
