//! `caravan verify` finds each kind of damage that can be injected into a
//! stopped store (a corrupted log chunk, a missing event-id, agreement or
//! pair-feed key, a lost view page, a checkpoint that claims the wrong
//! sequence, a flipped checkpoint value) and nothing on a healthy one; the
//! Verify RPC does the same on a running server.

use super::backup::caravan;
use super::*;
use crate::damage::copy_dir;
use caravan::proto::v1::operations_service_client::OperationsServiceClient;
use std::path::Path;

/// Seed of the checksum of checkpoint values (docs/ARCHITECTURE.md).
const DERIVED_CHECKSUM_SEED: u64 = 0x6361_7261_7676_6965;

fn sealed(payload: &[u8]) -> Vec<u8> {
    let mut v = payload.to_vec();
    v.extend_from_slice(
        &xxhash_rust::xxh3::xxh3_64_with_seed(payload, DERIVED_CHECKSUM_SEED).to_be_bytes(),
    );
    v
}

/// A stopped store of 2,000 figures of two feeds, two agreements and a
/// status change, checkpointed.
async fn healthy_store() -> tempfile::TempDir {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    for batch in 0..10 {
        append(&mut ingest, feed_events("feed-a", batch * 100, 100))
            .await
            .unwrap();
        append(&mut ingest, feed_events("feed-b", batch * 100, 100))
            .await
            .unwrap();
    }
    append(
        &mut ingest,
        vec![
            agreement("ag-1", "xian-2023"),
            agreement("ag-2", "astana-2024"),
            status_change("ag-3", "xian-2023"),
        ],
    )
    .await
    .unwrap();
    app.stop().await
}

/// `caravan verify` of a store: (exit code, stdout).
async fn verify(store: &Path) -> (i32, String) {
    let (code, out, err) = caravan(&["verify", "--data-dir", store.to_str().unwrap()]).await;
    (code, format!("{out}{err}"))
}

/// A copy of `healthy` with `damage` done to its sled tree.
async fn damaged(healthy: &Path, damage: impl FnOnce(&sled::Tree)) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(healthy, copy.path());
    {
        let db = open_sled(copy.path());
        let tree = db.open_tree("caravan").unwrap();
        damage(&tree);
        db.flush().unwrap();
    }
    copy
}

fn nth_key(tree: &sled::Tree, prefix: u8, n: usize) -> sled::IVec {
    tree.scan_prefix([prefix])
        .nth(n)
        .expect("such a key")
        .unwrap()
        .0
}

#[tokio::test]
async fn verify_finds_each_kind_of_damage_and_nothing_on_a_healthy_store() {
    let root = healthy_store().await;
    let healthy = store_path(root.path());
    let (code, out) = verify(&healthy).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no problems found at sequence 2003"), "{out}");
    assert!(out.contains("checked views"), "{out}");

    type Damage = Box<dyn FnOnce(&sled::Tree)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a corrupted log chunk",
            Box::new(|t| {
                let k = nth_key(t, b'E', 10);
                let mut v = t.get(&k).unwrap().unwrap().to_vec();
                let at = v.len() / 2;
                v[at] ^= 0x01;
                t.insert(k, v).unwrap();
            }),
            "in a chunk that does not read: log chunk fails its checksum",
        ),
        (
            "a missing event-id chunk",
            Box::new(|t| {
                t.remove(nth_key(t, b'I', 1)).unwrap();
            }),
            "PROBLEM event-ids: sequences",
        ),
        (
            "a missing agreement key",
            Box::new(|t| {
                t.remove(b"Axian-2023").unwrap().expect("the key");
            }),
            "PROBLEM agreements: sequence 2003: agreement \"xian-2023\" has no agreement key",
        ),
        (
            "a missing pair-feed key",
            Box::new(|t| {
                t.remove(nth_key(t, b'O', 0)).unwrap();
            }),
            "PROBLEM pair-feeds:",
        ),
        (
            "a lost view page",
            Box::new(|t| {
                t.remove(nth_key(t, b'P', 3)).unwrap();
            }),
            "PROBLEM views:",
        ),
        (
            "a checkpoint that claims less than its pages hold",
            Box::new(|t| {
                t.insert(b"C", sealed(&1500u64.to_be_bytes())).unwrap();
            }),
            "PROBLEM views:",
        ),
        (
            "a checkpoint beyond the log",
            Box::new(|t| {
                t.insert(b"C", sealed(&9999u64.to_be_bytes())).unwrap();
            }),
            "PROBLEM checkpoint: sequences 2004..9999",
        ),
        (
            "a flipped checkpoint value",
            Box::new(|t| {
                let k = nth_key(t, b'R', 0);
                let mut v = t.get(&k).unwrap().unwrap().to_vec();
                v[0] ^= 0x20;
                t.insert(k, v).unwrap();
            }),
            "PROBLEM checkpoint: view key fails its checksum",
        ),
    ];
    for (what, damage, expected) in cases {
        let copy = damaged(&healthy, damage).await;
        let (code, out) = verify(copy.path()).await;
        assert_eq!(code, 1, "{what}: {out}");
        assert!(
            out.contains(expected),
            "{what}: expected {expected:?} in\n{out}"
        );
        println!(
            "{what}:\n{}",
            out.lines()
                .filter(|l| l.starts_with("PROBLEM"))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn the_verify_rpc_checks_a_running_server() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    append(&mut ingest, feed_events("feed-a", 0, 500))
        .await
        .unwrap();
    append(&mut ingest, vec![agreement("ag-1", "xian-2023")])
        .await
        .unwrap();
    let mut ops = OperationsServiceClient::new(app.channel().await);
    let answer = ops.verify(pb::VerifyRequest {}).await.unwrap().into_inner();
    assert_eq!(answer.sequence, 501);
    assert!(answer.findings.is_empty(), "{:?}", answer.findings);
    assert!(
        answer.checked.iter().any(|c| c.starts_with("views:")),
        "{:?}",
        answer.checked
    );
    // While it ingests, too.
    let busy = tokio::spawn(async move {
        for b in 1..20 {
            append(&mut ingest, feed_events("feed-a", b * 500, 500))
                .await
                .unwrap();
        }
    });
    let answer = ops.verify(pb::VerifyRequest {}).await.unwrap().into_inner();
    assert!(answer.findings.is_empty(), "{:?}", answer.findings);
    busy.await.unwrap();
    // And from the command line.
    let (code, out, err) = caravan(&["verify", "--server", &app.url()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no problems found"), "{out}");
    app.stop().await;
}
