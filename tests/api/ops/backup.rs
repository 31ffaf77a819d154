//! Online backup while four feeds ingest, restore into a new directory, and
//! the restored server answering exactly as the original did at the
//! backup's sequence; an incremental backup on top; damaged backups refused.
//! Backup, restore and verify through the real binary.

use super::*;
use std::path::Path;
use tokio::process::Command;

/// Runs the binary; (exit code, stdout, stderr).
pub async fn caravan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn manifest_last(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["last_sequence"].as_u64().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What a server answers at `as_of`: the log's digest, and the views'.
async fn answers(app: &TestApp, as_of: u64) -> (u64, (usize, u64, u64)) {
    let mut ingest = app.ingest().await;
    (
        log_digest(&mut ingest, as_of).await,
        views_digest(app.channel().await, as_of).await,
    )
}

/// Starts a server on a restored store in `root/store`.
async fn serve_restored(root: tempfile::TempDir) -> TestApp {
    spawn_app_in(root, |_| {}).await
}

#[tokio::test]
async fn a_backup_taken_while_four_feeds_ingest_restores_to_the_same_answers() {
    let app = spawn_app().await;
    let url = app.url();
    let backups = tempfile::tempdir().unwrap();
    let full = backups.path().join("full");
    let incremental = backups.path().join("incremental");

    // Four feeds, 40 batches of 50 each, all at once.
    let mut feeds = Vec::new();
    for feed in ["feed-a", "feed-b", "feed-c", "feed-d"] {
        let mut client = app.ingest().await;
        feeds.push(tokio::spawn(async move {
            for batch in 0..40 {
                append(&mut client, feed_events(feed, batch * 50, 50))
                    .await
                    .expect("append");
            }
        }));
    }
    // The backup starts once some events are in, while the rest arrive.
    let mut probe = app.ingest().await;
    let began = std::time::Instant::now();
    while last_sequence(&mut probe).await < 1500 {
        assert!(began.elapsed().as_secs() < 30, "ingest under way");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (code, out, err) = caravan(&["backup", "--server", &url, "--out", path(&full)]).await;
    assert_eq!(code, 0, "{out}{err}");
    for f in feeds {
        f.await.unwrap();
    }
    let snapshot = manifest_last(&full);
    let total = last_sequence(&mut probe).await;
    assert_eq!(total, 8000);
    assert!(snapshot >= 1500 && snapshot <= total, "{snapshot}");
    println!("backup at {snapshot} of {total} events");

    // Restored: every answer equals the original's at the backup's sequence.
    let restored_root = tempfile::tempdir().unwrap();
    let restored = restored_root.path().join("store");
    let (code, out, err) = caravan(&[
        "restore",
        "--from",
        path(&full),
        "--data-dir",
        path(&restored),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let copy = serve_restored(restored_root).await;
    assert_eq!(last_sequence(&mut copy.ingest().await).await, snapshot);
    let original = answers(&app, snapshot).await;
    assert!(original.1 .0 > 100, "{original:?}");
    assert_eq!(answers(&copy, snapshot).await, original);
    assert_eq!(
        views_digest(copy.channel().await, 0).await,
        original.1,
        "the newest answers of the copy"
    );
    copy.stop().await;

    // An incremental backup on top holds only what is newer, and the chain
    // restores to the original's answers at its later sequence.
    let (code, out, err) = caravan(&[
        "backup",
        "--server",
        &url,
        "--since",
        path(&full),
        "--out",
        path(&incremental),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(manifest_last(&incremental), total);
    let files: u64 = std::fs::read_dir(&incremental)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let full_bytes: u64 = std::fs::read_dir(&full)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let per_event = full_bytes as f64 / snapshot as f64;
    assert!(
        (files as f64 - per_event * (total - snapshot) as f64).abs() < per_event * 200.0,
        "the incremental backup holds only the newer events: {files} bytes"
    );
    let (code, out, _) = caravan(&["verify", "--data-dir", path(&incremental)]).await;
    assert_eq!(code, 0, "{out}");
    let later_root = tempfile::tempdir().unwrap();
    let later = later_root.path().join("store");
    let (code, out, err) = caravan(&[
        "restore",
        "--from",
        path(&incremental),
        "--data-dir",
        path(&later),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let copy = serve_restored(later_root).await;
    assert_eq!(answers(&copy, total).await, answers(&app, total).await);
    // And it takes appends where the original would: sequences go on.
    let acks = append(&mut copy.ingest().await, feed_events("feed-e", 0, 3))
        .await
        .unwrap();
    assert_eq!(acks[0].sequence, total + 1);
    copy.stop().await;

    // The chain moves whole: the base is named relative to the increment.
    let moved = tempfile::tempdir().unwrap();
    let moved_chain = moved.path().join("chain");
    std::fs::rename(backups.path(), &moved_chain).unwrap();
    let backups_path = moved_chain.clone();
    let (code, out, _) = caravan(&[
        "verify",
        "--data-dir",
        path(&moved_chain.join("incremental")),
    ])
    .await;
    assert_eq!(code, 0, "the moved chain verifies: {out}");
    std::fs::rename(&moved_chain, backups.path()).unwrap();
    drop(backups_path);

    // An empty incremental backup is a valid one.
    let none = backups.path().join("nothing-new");
    let (code, out, err) = caravan(&[
        "backup",
        "--server",
        &url,
        "--since",
        path(&incremental),
        "--out",
        path(&none),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(0 events"), "{out}");
    app.stop().await;
}

#[tokio::test]
async fn a_damaged_backup_is_refused_by_restore_and_by_verify() {
    let app = spawn_app().await;
    append(&mut app.ingest().await, feed_events("feed-a", 0, 300))
        .await
        .unwrap();
    let backups = tempfile::tempdir().unwrap();
    let good = backups.path().join("good");
    let (code, out, err) = caravan(&["backup", "--server", &app.url(), "--out", path(&good)]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = caravan(&["verify", "--data-dir", path(&good)]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("events 1..300"), "{out}");
    app.stop().await;

    let segment = std::fs::read_dir(&good)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".log"))
        .unwrap();
    // A flipped byte in the events, in the middle of a record; then one in
    // the manifest.
    for (file, at) in [(segment.as_str(), 5000usize), ("manifest.json", 40)] {
        let bad = backups.path().join(format!("bad-{file}"));
        std::fs::create_dir(&bad).unwrap();
        for e in std::fs::read_dir(&good).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
        }
        let mut bytes = std::fs::read(bad.join(file)).unwrap();
        bytes[at] ^= 0x10;
        std::fs::write(bad.join(file), bytes).unwrap();

        let (code, out, err) = caravan(&["verify", "--data-dir", path(&bad)]).await;
        assert_eq!(code, 1, "verify of a flip in {file}: {out}{err}");
        assert!(out.contains("PROBLEM") && out.contains("damaged"), "{out}");
        let target = backups.path().join(format!("restored-{file}"));
        let (code, out, err) =
            caravan(&["restore", "--from", path(&bad), "--data-dir", path(&target)]).await;
        assert_ne!(code, 0, "restore of a flip in {file}: {out}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("damaged"), "{err}");
        assert!(!target.join("db").exists(), "nothing restored");
    }
}

/// The Backup RPC: messages within --max-message-bytes, consecutive
/// sequences up to the snapshot, one backup at a time, OUT_OF_RANGE beyond
/// the log, and the admin scope.
#[tokio::test]
async fn the_backup_rpc_streams_bounded_messages_one_backup_at_a_time() {
    use crate::identities::{auth_file, authed, write, Who};
    use caravan::proto::v1::operations_service_client::OperationsServiceClient;
    let admin = Who::token("ops", &["admin"], &[]);
    let reader = Who::token("analyst", &["read"], &[]);
    let writer = Who::token("feed", &["ingest"], &["feed-a"]);
    let files = tempfile::tempdir().unwrap();
    let auth = write(
        files.path(),
        "auth.toml",
        &auth_file(&[&admin, &reader, &writer]),
    );
    let limit = 64 * 1024;
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.max_message_bytes = limit;
        c.auth_file = Some(auth);
    })
    .await;
    let mut ingest = app.ingest().await;
    // 30,000 events: far more than the stream's buffer and HTTP/2's
    // windows hold, so a backup that is not read stays open.
    for b in 0..60 {
        ingest
            .append(authed(
                pb::AppendRequest::new(feed_events("feed-a", b * 500, 500)),
                writer.token.as_deref(),
            ))
            .await
            .unwrap();
    }
    let mut ops = OperationsServiceClient::new(app.channel().await);
    for who in [None, Some(&reader), Some(&writer)] {
        let token = who.and_then(|w| w.token.as_deref());
        let code = match ops
            .backup(authed(pb::BackupRequest::default(), token))
            .await
        {
            Err(s) => s.code(),
            Ok(_) => tonic::Code::Ok,
        };
        let expected = if who.is_none() {
            tonic::Code::Unauthenticated
        } else {
            tonic::Code::PermissionDenied
        };
        assert_eq!(code, expected);
        let code = ops
            .verify(authed(pb::VerifyRequest {}, token))
            .await
            .unwrap_err()
            .code();
        assert_eq!(code, expected);
    }
    let token = admin.token.as_deref();
    let e = ops
        .backup(authed(
            pb::BackupRequest {
                after_sequence: 30_001,
            },
            token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);

    let mut first = ops
        .backup(authed(
            pb::BackupRequest {
                after_sequence: 1000,
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    // While the first is open (and unread), a second is refused.
    let e = ops
        .backup(authed(pb::BackupRequest::default(), token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    let mut next = 1001;
    let mut snapshot = None;
    let mut messages = 0;
    while let Some(m) = first.message().await.unwrap() {
        assert!(
            prost::Message::encoded_len(&m) <= limit,
            "a message within the limit"
        );
        match m.part.unwrap() {
            pb::backup_response::Part::Header(h) => snapshot = Some(h.snapshot_sequence),
            pb::backup_response::Part::Events(e) => {
                assert_eq!(e.first_sequence, next);
                for bytes in &e.stored_events {
                    let stored: pb::StoredEvent = prost::Message::decode(bytes.as_slice()).unwrap();
                    assert_eq!(stored.sequence, next);
                    assert_eq!(stored.written_by, "feed");
                    next += 1;
                }
                messages += 1;
            }
        }
    }
    assert_eq!(snapshot, Some(30_000));
    assert_eq!(next, 30_001);
    assert!(messages > 3, "{messages} messages");
    // Once it has ended, another may run.
    let again = ops
        .backup(authed(
            pb::BackupRequest {
                after_sequence: 30_000,
            },
            token,
        ))
        .await;
    assert!(again.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn a_backup_that_fails_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("never");
    let (code, _, err) = caravan(&[
        "backup",
        "--server",
        "http://127.0.0.1:1",
        "--timeout-secs",
        "2",
        "--out",
        path(&out),
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach"), "{err}");
    assert!(!out.exists(), "the directory it made is gone again");
    // A directory that held something is left as it was.
    let used = root.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("notes.txt"), "mine").unwrap();
    let (code, _, err) = caravan(&[
        "backup",
        "--server",
        "http://127.0.0.1:1",
        "--out",
        path(&used),
    ])
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    assert!(used.join("notes.txt").exists());
}
