//! Durability at the storage boundary (fsync before acknowledgement, nothing
//! visible before it), restart, the blob-file guard and the format version.

use crate::helpers::*;
use caravan::convert::parse_event;
use caravan::error::Error;
use caravan::storage::{Author, NoProjection, Prepared, Store, StoreConfig, Syncer};
use std::io;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A syncer that reports each call and waits for permission to finish.
struct GatedSyncer {
    calls: mpsc::Sender<()>,
    permits: Arc<Mutex<mpsc::Receiver<io::Result<()>>>>,
}

impl Syncer for GatedSyncer {
    fn sync(&mut self) -> io::Result<()> {
        let _ = self.calls.send(());
        self.permits
            .lock()
            .expect("lock")
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("test ended")))
    }
}

struct Gate {
    calls: mpsc::Receiver<()>,
    permits: mpsc::Sender<io::Result<()>>,
}

fn gated_store(dir: &std::path::Path) -> (Store, Gate) {
    let (calls_tx, calls) = mpsc::channel();
    let (permits, permits_rx) = mpsc::channel();
    let permits_rx = Arc::new(Mutex::new(permits_rx));
    let store = std::thread::scope(|s| {
        let opened = s.spawn(|| {
            Store::open_with(dir, StoreConfig::default(), Arc::new(NoProjection), |_| {
                Ok(Box::new(GatedSyncer {
                    calls: calls_tx,
                    permits: permits_rx,
                }) as Box<dyn Syncer>)
            })
        });
        // Opening a new store fsyncs once (the format version).
        calls
            .recv_timeout(Duration::from_secs(10))
            .expect("open syncs");
        permits.send(Ok(())).expect("permit");
        opened.join().expect("open thread").expect("store opens")
    });
    (store, Gate { calls, permits })
}

fn event(id: &str) -> Prepared {
    Prepared::new(parse_event(&trade(id, "CHN", "KAZ", 2022, 1)).expect("valid"))
}

#[tokio::test]
async fn an_append_is_acknowledged_only_after_its_fsync_returns_and_is_invisible_before() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate) = gated_store(dir.path());
    let handle = store.handle();
    let pending = tokio::spawn({
        let handle = handle.clone();
        async move { handle.append(vec![event("e1")], Author::anonymous()).await }
    });
    // The writer has written and flushed, and is now inside fsync.
    let gate = tokio::task::spawn_blocking(move || {
        gate.calls
            .recv_timeout(Duration::from_secs(10))
            .expect("fsync is called");
        gate
    })
    .await
    .unwrap();
    // While fsync has not returned: no acknowledgement, nothing visible.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "acknowledged before fsync returned");
    assert_eq!(handle.last_sequence(), 0);
    let id = caravan::domain::EventId::parse("e1").unwrap();
    let feed = caravan::domain::FeedName::parse("test-feed").unwrap();
    assert!(handle.event_by_id(&feed, &id).unwrap().is_none());
    assert!(handle.event_at(1).unwrap().is_none());

    gate.permits.send(Ok(())).unwrap();
    let outcomes = pending.await.unwrap().expect("acknowledged after fsync");
    assert_eq!(outcomes[0].sequence, 1);
    assert_eq!(handle.last_sequence(), 1);
    assert!(handle.event_by_id(&feed, &id).unwrap().is_some());
    // Let the final fsync of close() through.
    gate.permits.send(Ok(())).unwrap();
    drop(handle);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_fsync_acknowledges_nothing_and_stops_further_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate) = gated_store(dir.path());
    let handle = store.handle();
    gate.permits
        .send(Err(io::Error::other("disk on fire")))
        .unwrap();
    let err = handle
        .append(vec![event("e1")], Author::anonymous())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(handle.last_sequence(), 0);
    let err = handle
        .append(vec![event("e2")], Author::anonymous())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("restart"), "{err}");
    assert!(
        matches!(handle.write_state(), caravan::storage::WriteState::Stopped(ref c) if c.contains("disk on fire")),
        "the store says it stopped writing, and why"
    );
    gate.permits.send(Ok(())).unwrap();
    drop(handle);
    // Closing says the store stopped writing: `caravan serve` exits non-zero.
    let closed = store.close().await.unwrap_err().to_string();
    assert!(
        closed.contains("stopped writing") && closed.contains("disk on fire"),
        "{closed}"
    );
}

#[tokio::test]
async fn concurrent_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate) = gated_store(dir.path());
    let handle = store.handle();
    // Hold the first group inside its fsync while 50 more requests queue.
    let first = tokio::spawn({
        let h = handle.clone();
        async move { h.append(vec![event("first")], Author::anonymous()).await }
    });
    let gate = tokio::task::spawn_blocking(move || {
        gate.calls.recv_timeout(Duration::from_secs(10)).unwrap();
        gate
    })
    .await
    .unwrap();
    let mut rest = Vec::new();
    for i in 0..50 {
        let h = handle.clone();
        rest.push(tokio::spawn(async move {
            h.append(vec![event(&format!("e{i}"))], Author::anonymous())
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.permits.send(Ok(())).unwrap();
    first.await.unwrap().unwrap();
    // The 50 queued requests are committed by one more fsync.
    let gate = tokio::task::spawn_blocking(move || {
        gate.calls.recv_timeout(Duration::from_secs(10)).unwrap();
        gate.permits.send(Ok(())).unwrap();
        gate
    })
    .await
    .unwrap();
    for r in rest {
        r.await.unwrap().unwrap();
    }
    assert_eq!(handle.last_sequence(), 51);
    assert!(
        gate.calls.try_recv().is_err(),
        "more than one fsync for the queued group"
    );
    gate.permits.send(Ok(())).unwrap();
    drop(handle);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_restart_keeps_every_acknowledged_event_and_sequences_continue() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let acks = append(
        &mut client,
        (0..1_500)
            .map(|i| trade(&format!("r{i}"), "CN", "KZ", 1900 + i % 200, i as i64))
            .collect(),
    )
    .await
    .unwrap();
    append(&mut client, vec![agreement("ag", "xian")])
        .await
        .unwrap();
    drop(client);
    let app = app.restart().await;
    let mut client = app.ingest().await;
    assert_eq!(last_sequence(&mut client).await, 1_501);
    // Ids are remembered across restarts, agreements too.
    let again = append(
        &mut client,
        vec![
            trade("r10", "CN", "KZ", 1910, 10),
            status_change("st", "xian"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        (again[0].sequence, again[0].duplicate),
        (acks[10].sequence, true)
    );
    assert_eq!((again[1].sequence, again[1].duplicate), (1_502, false));
    let found = client
        .lookup_events(caravan::proto::v1::LookupEventsRequest {
            event_ids: (0..1_000).map(|i| format!("r{i}")).collect(),
            sequences: vec![],
            feed: "test-feed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.missing_event_ids.is_empty());
    assert_eq!(found.events.len(), 1_000);
    drop(client);
    let dir = app.stop().await;
    // Values stay small enough that sled never writes an un-fsynced blob file.
    let blobs = store_path(dir.path()).join("blobs");
    let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "sled wrote blob files");
}

#[tokio::test]
async fn the_largest_events_never_reach_sled_blob_files() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let events: Vec<_> = (0..200)
        .map(|i| {
            let mut e = trade(&format!("big{i}"), "CN", "KZ", 1900 + i, 1);
            let r = record_mut(&mut e);
            r.note = "n".repeat(2048);
            r.source = "s".repeat(512);
            r.quantity = Some(caravan::proto::v1::Quantity {
                whole: 1,
                nanos: 0,
                unit: "u".repeat(32),
            });
            e
        })
        .collect();
    append(&mut client, events).await.unwrap();
    drop(client);
    let dir = app.stop().await;
    let blobs = store_path(dir.path()).join("blobs");
    let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "sled wrote blob files");
}

#[tokio::test]
async fn a_store_of_an_unknown_format_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"\x00format", &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = match Store::open(dir.path(), StoreConfig::default(), Arc::new(NoProjection)) {
        Ok(_) => panic!("opened a store of format 99"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("format version 99"), "{err}");
    assert!(
        err.to_string().contains("reads versions 1 to 3 only"),
        "{err}"
    );
}

#[tokio::test]
async fn lost_derived_keys_are_rebuilt_from_the_log() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let events = (0..3_000)
        .map(|i| trade(&format!("d{i}"), "CN", "KZ", 1900 + i % 200, i as i64))
        .collect();
    append(&mut client, events).await.unwrap();
    append(&mut client, vec![agreement("ag", "astana-2025")])
        .await
        .unwrap();
    drop(client);
    let dir = app.stop().await;
    {
        // Remove every derived key (fingerprints 'I', agreements 'A', pair feeds 'O').
        let db = open_sled(&store_path(dir.path()));
        let tree = db.open_tree("caravan").unwrap();
        let derived: Vec<_> = tree
            .iter()
            .keys()
            .map(|k| k.unwrap())
            .filter(|k| k[0] == b'I' || k[0] == b'A' || k[0] == b'O')
            .collect();
        assert!(
            derived.len() > 1,
            "the layout changed: {} derived keys",
            derived.len()
        );
        for k in derived {
            tree.remove(k).unwrap();
        }
        db.flush().unwrap();
    }
    let app = spawn_app_in(dir, |_| {}).await;
    let mut client = app.ingest().await;
    assert_eq!(last_sequence(&mut client).await, 3_001);
    let again = append(
        &mut client,
        vec![
            trade("d5", "CN", "KZ", 1905, 5),
            status_change("st", "astana-2025"),
        ],
    )
    .await
    .unwrap();
    assert_eq!((again[0].sequence, again[0].duplicate), (6, true));
    assert_eq!((again[1].sequence, again[1].duplicate), (3_002, false));
    app.stop().await;
}
