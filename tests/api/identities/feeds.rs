//! Feeds own their data: an identity writes only its feeds; event ids are
//! unique per feed, so no feed can take another's ids; a figure or an
//! agreement that one feed stored first is changed by another only with the
//! curate scope.

use super::*;
use tonic::Code;
use tonic_types::StatusExt;

/// The reason of a status's google.rpc.ErrorInfo.
fn reason(s: &tonic::Status) -> String {
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

struct Feeds {
    secure: Secure,
    ch: Channel,
    a: String,
    b: String,
    both: String,
    curator: String,
    observer: String,
}

async fn feeds() -> Feeds {
    let a = Who::token("ingest-a", &["ingest"], &["feed-a"]);
    let b = Who::token("ingest-b", &["ingest"], &["feed-b"]);
    let both = Who::token("ingest-ab", &["ingest"], &["feed-a", "feed-b"]);
    let curator = Who::token("curator", &["ingest", "curate"], &["curation"]);
    let observer = Who::token("observer", &["ingest", "read"], &["*"]);
    let secure = secure_app(
        &auth_file(&[&a, &b, &both, &curator, &observer]),
        None,
        |_| {},
    )
    .await;
    let ch = secure.channel(None).await.unwrap();
    let t = |w: &Who| w.token.clone().unwrap();
    Feeds {
        ch,
        a: t(&a),
        b: t(&b),
        both: t(&both),
        curator: t(&curator),
        observer: t(&observer),
        secure,
    }
}

#[tokio::test]
async fn an_identity_writes_only_its_own_feeds() {
    let f = feeds().await;
    let last = last_as(&f.ch, &f.observer).await;
    let mixed = vec![
        trade_of("feed-b", "b1", "KZ", "CN", 1),
        trade_of("feed-a", "a1", "KZ", "CN", 2),
    ];
    let refused = append_as(&f.ch, &f.b, mixed).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused), "FEED_NOT_ALLOWED");
    assert!(refused.message().contains("feed-a"), "{refused:?}");
    assert_eq!(last_as(&f.ch, &f.observer).await, last, "all or nothing");

    // On a stream the one event is refused, and the stream goes on.
    let requests = tokio_stream::iter(vec![
        pb::AppendStreamRequest {
            event: Some(trade_of("feed-a", "a2", "KZ", "CN", 3)),
        },
        pb::AppendStreamRequest {
            event: Some(trade_of("feed-b", "b2", "KZ", "CN", 4)),
        },
    ]);
    let mut answers = IngestServiceClient::new(f.ch.clone())
        .append_stream(authed(requests, Some(&f.b)))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    match first.result {
        Some(pb::append_stream_response::Result::Rejection(r)) => {
            assert_eq!(r.code, Code::PermissionDenied as i32, "{r:?}")
        }
        other => panic!("{other:?}"),
    }
    let second = answers.message().await.unwrap().unwrap();
    assert!(matches!(
        second.result,
        Some(pb::append_stream_response::Result::Ack(_))
    ));
    assert_eq!(last_as(&f.ch, &f.observer).await, last + 1);

    // Looking up another feed's events needs the read scope.
    let other = IngestServiceClient::new(f.ch.clone())
        .lookup_events(authed(
            pb::LookupEventsRequest {
                event_ids: vec!["b2".into()],
                feed: "feed-b".into(),
                ..Default::default()
            },
            Some(&f.a),
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    let by_sequence = IngestServiceClient::new(f.ch.clone())
        .lookup_events(authed(
            pb::LookupEventsRequest {
                sequences: vec![last + 1],
                ..Default::default()
            },
            Some(&f.a),
        ))
        .await
        .unwrap_err();
    assert_eq!(by_sequence.code(), Code::PermissionDenied);
    f.secure.app.stop().await;
}

#[tokio::test]
async fn event_ids_are_unique_per_feed_so_no_feed_can_take_anothers() {
    let f = feeds().await;
    // B stores the id A's loader will derive for its row first.
    let squat = append_as(
        &f.ch,
        &f.b,
        vec![trade_of("feed-b", "shared-id", "KZ", "CN", 9)],
    )
    .await
    .unwrap();
    let mine = append_as(
        &f.ch,
        &f.a,
        vec![trade_of("feed-a", "shared-id", "CN", "KZ", 7)],
    )
    .await
    .unwrap();
    assert!(
        !mine[0].duplicate,
        "A's event is stored, not B's taken for it"
    );
    assert_ne!(mine[0].sequence, squat[0].sequence);
    // Each re-send is a duplicate of its own feed's event.
    let again = append_as(
        &f.ch,
        &f.a,
        vec![trade_of("feed-a", "shared-id", "CN", "KZ", 7)],
    )
    .await
    .unwrap();
    assert_eq!(
        (again[0].sequence, again[0].duplicate),
        (mine[0].sequence, true)
    );
    let conflict = append_as(
        &f.ch,
        &f.b,
        vec![trade_of("feed-b", "shared-id", "KZ", "CN", 10)],
    )
    .await
    .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    for (feed, token, expected) in [
        ("feed-a", &f.a, mine[0].sequence),
        ("feed-b", &f.b, squat[0].sequence),
    ] {
        let found = IngestServiceClient::new(f.ch.clone())
            .lookup_events(authed(
                pb::LookupEventsRequest {
                    event_ids: vec!["shared-id".into()],
                    feed: feed.into(),
                    ..Default::default()
                },
                Some(token),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.events[0].sequence, expected, "{feed}");
    }
    f.secure.app.stop().await;
}

fn agreement_of(feed: &str, id: &str, agreement_id: &str) -> pb::Event {
    let mut e = agreement(id, agreement_id);
    e.feed = feed.into();
    e
}

fn status_of(feed: &str, id: &str, agreement_id: &str) -> pb::Event {
    let mut e = status_change(id, agreement_id);
    e.feed = feed.into();
    e
}

fn retraction_of(feed: &str, id: &str, reporter: &str, partner: &str) -> pb::Event {
    let mut e = retraction(id, (reporter, partner), pb::Flow::Export, 2022, "withdrawn");
    e.feed = feed.into();
    e
}

#[tokio::test]
async fn a_feed_cannot_overwrite_or_retract_anothers_figures_but_a_curator_can() {
    let f = feeds().await;
    append_as(
        &f.ch,
        &f.a,
        vec![trade_of("feed-a", "a-1", "CN", "KZ", 100)],
    )
    .await
    .unwrap();
    let last = last_as(&f.ch, &f.observer).await;
    // B revises A's figure, then retracts it: both refused.
    for event in [
        trade_of("feed-b", "b-rev", "CN", "KZ", 1),
        retraction_of("feed-b", "b-ret", "CN", "KZ"),
    ] {
        let refused = append_as(&f.ch, &f.b, vec![event]).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert_eq!(reason(&refused), "OWNED_BY_ANOTHER_FEED");
        assert!(refused.message().contains("\"feed-a\""), "{refused:?}");
    }
    assert_eq!(last_as(&f.ch, &f.observer).await, last);
    // A new figure of the same pair is B's own; A cannot revise it either.
    append_as(
        &f.ch,
        &f.b,
        vec![trade_of("feed-b", "b-new", "CN", "UZ", 5)],
    )
    .await
    .unwrap();
    let mut b_figure = trade_of("feed-b", "b-new-2", "CN", "KZ", 5);
    record_mut(&mut b_figure).flow = pb::Flow::Import as i32;
    append_as(&f.ch, &f.b, vec![b_figure.clone()])
        .await
        .unwrap();
    let mut a_revises = b_figure.clone();
    a_revises.feed = "feed-a".into();
    a_revises.event_id = "a-on-b".into();
    let refused = append_as(&f.ch, &f.a, vec![a_revises]).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The owner revises its own; the curator revises and retracts anyone's.
    append_as(
        &f.ch,
        &f.a,
        vec![trade_of("feed-a", "a-2", "CN", "KZ", 110)],
    )
    .await
    .unwrap();
    append_as(
        &f.ch,
        &f.curator,
        vec![trade_of("curation", "c-1", "CN", "KZ", 111)],
    )
    .await
    .unwrap();
    append_as(
        &f.ch,
        &f.curator,
        vec![retraction_of("curation", "c-2", "CN", "KZ")],
    )
    .await
    .unwrap();
    // Owned for ever by its first feed: after the curator's revision, A
    // still revises it, B still does not.
    append_as(
        &f.ch,
        &f.a,
        vec![trade_of("feed-a", "a-3", "CN", "KZ", 120)],
    )
    .await
    .unwrap();
    assert_eq!(
        append_as(
            &f.ch,
            &f.b,
            vec![trade_of("feed-b", "b-late", "CN", "KZ", 1)]
        )
        .await
        .unwrap_err()
        .code(),
        Code::PermissionDenied
    );
    // Within one batch: the first feed to record a new figure owns it.
    let batch = vec![
        trade_of("feed-a", "ab-1", "CN", "TM", 1),
        trade_of("feed-b", "ab-2", "CN", "TM", 2),
    ];
    let refused = append_as(&f.ch, &f.both, batch).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    f.secure.app.stop().await;
}

#[tokio::test]
async fn a_feed_cannot_amend_or_move_anothers_agreement_but_a_curator_can() {
    let f = feeds().await;
    append_as(
        &f.ch,
        &f.a,
        vec![agreement_of("feed-a", "ag-1", "xian-2023")],
    )
    .await
    .unwrap();
    let last = last_as(&f.ch, &f.observer).await;
    let mut amended = agreement_of("feed-b", "ag-b", "xian-2023");
    if let Some(pb::event::Payload::Agreement(a)) = &mut amended.payload {
        a.title = "Something else".into();
    }
    for event in [amended, status_of("feed-b", "st-b", "xian-2023")] {
        let refused = append_as(&f.ch, &f.b, vec![event]).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert_eq!(reason(&refused), "OWNED_BY_ANOTHER_FEED");
    }
    assert_eq!(last_as(&f.ch, &f.observer).await, last);
    append_as(
        &f.ch,
        &f.curator,
        vec![status_of("curation", "st-c", "xian-2023")],
    )
    .await
    .unwrap();
    assert_eq!(last_as(&f.ch, &f.observer).await, last + 1);
    f.secure.app.stop().await;
}

/// A projection whose `apply` waits for a permit: the writer goes on while
/// the views (here, what this keeps) do not have the group yet.
struct SlowViews {
    entered: std::sync::mpsc::Sender<()>,
    permits: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    applied: std::sync::Mutex<Vec<caravan::domain::StoredEvent>>,
}

impl caravan::storage::Projection for SlowViews {
    fn apply(&self, events: Vec<caravan::domain::StoredEvent>) {
        if events.is_empty() {
            return; // opening replays an empty log
        }
        let _ = self.entered.send(());
        let _ = self.permits.lock().unwrap().recv();
        self.applied.lock().unwrap().extend(events);
    }

    fn figure_first_record(
        &self,
        key: &caravan::domain::TradeFigureKey,
    ) -> Result<Option<u64>, caravan::error::Error> {
        Ok(self
            .applied
            .lock()
            .unwrap()
            .iter()
            .find_map(|e| match &e.event.payload {
                caravan::domain::Payload::TradeRecord(r) if r.key == *key => Some(e.sequence),
                _ => None,
            }))
    }
}

/// The owner of a figure whose first record the writer has written but the
/// views have not applied yet is still known: the second feed is refused.
#[tokio::test]
async fn a_figure_is_owned_from_its_first_record_on_even_before_the_views_have_it() {
    use caravan::storage::{Author, Prepared, Store, StoreConfig};
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (permits, permits_rx) = std::sync::mpsc::channel();
    let views = std::sync::Arc::new(SlowViews {
        entered: entered_tx,
        permits: std::sync::Mutex::new(permits_rx),
        applied: std::sync::Mutex::new(Vec::new()),
    });
    let store = Store::open(dir.path(), StoreConfig::default(), views.clone()).unwrap();
    let handle = store.handle();
    let feed = |name: &str, id: &str| {
        let e = caravan::convert::parse_event(&trade_of(name, id, "CN", "KZ", 1)).unwrap();
        vec![Prepared::new(e)]
    };
    let author = |name: &str| Author {
        name: Some(caravan::domain::IdentityName::parse(name).unwrap()),
        curates: false,
    };
    let first = handle
        .submit(feed("feed-a", "a-1"), author("loader-a"))
        .await
        .unwrap();
    // Feed A's group is written; the publisher waits inside `apply`.
    entered
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the first group reaches the views");
    let second = handle
        .submit(feed("feed-b", "b-1"), author("loader-b"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Let every group through.
    for _ in 0..4 {
        let _ = permits.send(());
    }
    let first = first.await.unwrap().expect("feed A's record is stored");
    assert_eq!(first[0].sequence, 1);
    let refused = second.await.unwrap().expect_err("feed B may not revise it");
    assert!(
        matches!(refused, caravan::error::Error::NotOwner { ref owner, .. } if owner == "feed-a"),
        "{refused:?}"
    );
    drop(handle);
    store.close().await.unwrap();
}
