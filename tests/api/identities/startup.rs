//! The real binary: what refuses a start (an address beyond loopback
//! without TLS or credentials, a key that cannot be read, an auth file with
//! a mistake), each as one clear line and a non-zero exit; and SIGHUP, which
//! rotates the certificates and revokes identities without a restart.

use super::*;
use crate::damage::stop;
use crate::helpers::signal;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::Code;

/// Runs `caravan serve` with these flags until it exits (it must, at once):
/// its exit code and stderr.
async fn refused(data: &Path, flags: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(flags)
        .env_remove("CARAVAN_INSECURE")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("refused at once")
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "{out:?}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `caravan serve` with these flags; returns it and its port.
async fn serving(data: &Path, flags: &[&str]) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("announces its address")
    .unwrap()
    .expect("a line");
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, port)
}

struct Files {
    dir: tempfile::TempDir,
    ca: Ca,
    cert: String,
    key: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("startup CA");
    let server = ca.server();
    let cert = write(dir.path(), "server.pem", &server.cert);
    let key = write(dir.path(), "server.key", &server.key);
    Files {
        ca,
        cert: cert.to_str().unwrap().to_owned(),
        key: key.to_str().unwrap().to_owned(),
        dir,
    }
}

#[tokio::test]
async fn a_start_that_cannot_be_safe_or_read_its_files_is_refused_in_one_line() {
    let f = files();
    let data = f.dir.path().join("store");
    let reader = Who::token("reader", &["read"], &[]);
    let auth = write(f.dir.path(), "auth.toml", &auth_file(&[&reader]));
    let auth = auth.to_str().unwrap();
    let one_line = |stderr: &str| {
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    };

    // Beyond loopback: neither, TLS without credentials, credentials without TLS.
    for (flags, missing) in [
        (
            vec!["--listen", "0.0.0.0:0"],
            "TLS (--tls-cert and --tls-key) and credentials (--auth-file)",
        ),
        (
            vec![
                "--listen",
                "0.0.0.0:0",
                "--tls-cert",
                &f.cert,
                "--tls-key",
                &f.key,
            ],
            "credentials (--auth-file)",
        ),
        (
            vec!["--listen", "0.0.0.0:0", "--auth-file", auth],
            "TLS (--tls-cert and --tls-key)",
        ),
    ] {
        let (code, stderr) = refused(&data, &flags).await;
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("refusing to listen on 0.0.0.0:0") && stderr.contains(missing),
            "{stderr}"
        );
        one_line(&stderr);
    }
    assert!(!data.exists(), "no store is created before a refusal");

    // A key that cannot be read.
    let missing_key = f.dir.path().join("nowhere.key");
    let (code, stderr) = refused(
        &data,
        &[
            "--tls-cert",
            &f.cert,
            "--tls-key",
            missing_key.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-key") && stderr.contains("nowhere.key"),
        "{stderr}"
    );
    one_line(&stderr);
    // A key that does not belong to the certificate.
    let other = f.ca.server();
    let wrong = write(f.dir.path(), "wrong.key", &other.key);
    let (code, stderr) = refused(
        &data,
        &["--tls-cert", &f.cert, "--tls-key", wrong.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used together"), "{stderr}");

    // An auth file with a syntax error, and one with a mistake in it.
    let broken = write(f.dir.path(), "broken.toml", "[[identity]\nname = \"x\"\n");
    let (code, stderr) = refused(&data, &["--auth-file", broken.to_str().unwrap()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("broken.toml is not valid") && stderr.contains("line 1"),
        "{stderr}"
    );
    let mistaken = write(
        f.dir.path(),
        "mistaken.toml",
        "[[identity]]\nname = \"x\"\nscopes = [\"read\"]\n",
    );
    let (code, stderr) = refused(&data, &["--auth-file", mistaken.to_str().unwrap()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("token_sha256 or a cert_subject"),
        "{stderr}"
    );

    // With --insecure it is served as it is (and reached over loopback).
    let (child, port) = serving(&data, &["--insecure", "--listen", "0.0.0.0:0"]).await;
    let mut client = IngestServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    append(&mut client, vec![trade("t1", "CN", "KZ", 2000, 1)])
        .await
        .unwrap();
    stop(child).await;

    // With TLS and credentials, an address beyond loopback is served.
    let (child, port) = serving(
        &data,
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &f.cert,
            "--tls-key",
            &f.key,
            "--auth-file",
            auth,
        ],
    )
    .await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let ch = tls_channel(addr, &f.ca.pem.cert, None).await.unwrap();
    let denied = caravan::proto::v1::query_service_client::QueryServiceClient::new(ch)
        .stream_agreements(authed(pb::StreamAgreementsRequest::default(), None))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    stop(child).await;
}

/// The code of a LookupEvents with `token` over a new connection to `port`
/// trusting `ca`; `None` when no TLS connection could be made.
async fn lookup_code(port: u16, ca: &str, token: &str) -> Option<Code> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let ch = tls_channel(addr, ca, None).await.ok()?;
    let r = IngestServiceClient::new(ch)
        .lookup_events(authed(pb::LookupEventsRequest::default(), Some(token)))
        .await;
    Some(r.map_or_else(|s| s.code(), |_| Code::Ok))
}

#[tokio::test]
async fn sighup_rotates_certificates_and_revokes_identities_without_a_restart() {
    let f = files();
    let data = f.dir.path().join("store");
    let keep = Who::token("keep", &["ingest"], &["feed-a"]);
    let gone = Who::token("gone", &["ingest"], &["feed-a"]);
    let auth = write(f.dir.path(), "auth.toml", &auth_file(&[&keep, &gone]));
    let (child, port) = serving(
        &data,
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &f.cert,
            "--tls-key",
            &f.key,
            "--auth-file",
            auth.to_str().unwrap(),
        ],
    )
    .await;
    let (keep_t, gone_t) = (keep.token.clone().unwrap(), gone.token.clone().unwrap());
    let old_ca = f.ca.pem.cert.clone();
    assert_eq!(lookup_code(port, &old_ca, &gone_t).await, Some(Code::Ok));

    // A broken auth file on SIGHUP keeps the identities there were.
    std::fs::write(&auth, "[[identity]\n").unwrap();
    signal(&child, "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lookup_code(port, &old_ca, &gone_t).await, Some(Code::Ok));

    // New certificates from a new CA, and "gone" revoked.
    let new_ca = Ca::new("rotated CA");
    let server = new_ca.server();
    std::fs::write(&f.cert, &server.cert).unwrap();
    std::fs::write(&f.key, &server.key).unwrap();
    std::fs::write(&auth, auth_file(&[&keep])).unwrap();
    signal(&child, "-HUP");
    let mut rotated = false;
    for _ in 0..100 {
        if lookup_code(port, &new_ca.pem.cert, &keep_t).await == Some(Code::Ok) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new certificate is served after SIGHUP");
    assert_eq!(
        lookup_code(port, &new_ca.pem.cert, &gone_t).await,
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        lookup_code(port, &old_ca, &keep_t).await,
        None,
        "the old certificate is no longer served"
    );
    stop(child).await;
}
