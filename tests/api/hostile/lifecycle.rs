//! The agreement lifecycle and retractions: what would be stored for ever
//! from a mistaken feed is refused with FAILED_PRECONDITION naming the rule.

use super::*;
use tonic_types::StatusExt;

fn status_of(name: &str) -> pb::AgreementStatus {
    match name {
        "SIGNED" => pb::AgreementStatus::Signed,
        "IN_FORCE" => pb::AgreementStatus::InForce,
        "EXPIRED" => pb::AgreementStatus::Expired,
        _ => pb::AgreementStatus::Terminated,
    }
}

fn change(id: &str, agreement: &str, status: &str, (y, m, d): (i32, i32, i32)) -> pb::Event {
    let mut e = status_change(id, agreement);
    if let Some(pb::event::Payload::AgreementStatusChanged(c)) = &mut e.payload {
        c.status = status_of(status) as i32;
        c.effective_on = Some(pb::Date {
            year: y,
            month: m,
            day: d,
        });
    }
    e
}

/// The precondition rule a status names.
fn rule(status: &Status) -> (String, String) {
    let f = status
        .get_details_precondition_failure()
        .expect("a PreconditionFailure");
    let v = &f.violations[0];
    (v.r#type.clone(), v.subject.clone())
}

#[tokio::test]
async fn every_status_change_follows_the_lifecycle_or_names_the_rule_it_breaks() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    let statuses = ["SIGNED", "IN_FORCE", "EXPIRED", "TERMINATED"];
    // How to bring a fresh agreement (signed 2023-05-19) to each status.
    let path_to = |s: &str| -> Vec<(&'static str, (i32, i32, i32))> {
        match s {
            "SIGNED" => vec![],
            "IN_FORCE" => vec![("IN_FORCE", (2024, 1, 1))],
            "EXPIRED" => vec![("IN_FORCE", (2024, 1, 1)), ("EXPIRED", (2025, 1, 1))],
            _ => vec![("TERMINATED", (2024, 1, 1))],
        }
    };
    let mut cases = 0;
    for (i, from) in statuses.iter().enumerate() {
        for (j, to) in statuses.iter().enumerate() {
            let id = format!("life-{i}-{j}");
            append(&mut ingest, vec![agreement(&format!("{id}-a"), &id)])
                .await
                .unwrap();
            for (k, (s, date)) in path_to(from).into_iter().enumerate() {
                append(
                    &mut ingest,
                    vec![change(&format!("{id}-p{k}"), &id, s, date)],
                )
                .await
                .unwrap();
            }
            let before = store_state(&app).await;
            let attempt = change(&format!("{id}-x"), &id, to, (2026, 1, 1));
            let got = append(&mut ingest, vec![attempt]).await;
            let allowed = matches!(
                (*from, *to),
                ("SIGNED", "IN_FORCE")
                    | ("SIGNED", "TERMINATED")
                    | ("IN_FORCE", "EXPIRED")
                    | ("IN_FORCE", "TERMINATED")
            );
            match got {
                Ok(_) => assert!(allowed, "{from} → {to} was accepted"),
                Err(status) => {
                    assert!(!allowed, "{from} → {to} was refused: {status:?}");
                    assert_refused(&status, Code::FailedPrecondition, None, &id);
                    let (rule, subject) = rule(&status);
                    let final_from = matches!(*from, "EXPIRED" | "TERMINATED");
                    let expected = if final_from {
                        "AGREEMENT_FINAL_STATUS"
                    } else {
                        "AGREEMENT_STATUS_TRANSITION"
                    };
                    assert_eq!(rule, expected, "{from} → {to}");
                    assert_eq!(subject, "events[0].agreement_status_changed.status");
                    assert_eq!(store_state(&app).await, before, "{from} → {to} stored");
                }
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 16);
}

#[tokio::test]
async fn dates_stay_in_order_and_amendments_keep_the_status() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    append(&mut ingest, vec![agreement("d-a", "dated")])
        .await
        .unwrap();
    let before = store_state(&app).await;
    // Effective before the signing (2023-05-19).
    let err = append(
        &mut ingest,
        vec![change("d-1", "dated", "IN_FORCE", (2020, 1, 1))],
    )
    .await
    .unwrap_err();
    assert_eq!(
        rule(&err),
        (
            "AGREEMENT_DATE_ORDER".into(),
            "events[0].agreement_status_changed.effective_on".into()
        )
    );
    assert_eq!(store_state(&app).await, before);
    append(
        &mut ingest,
        vec![change("d-2", "dated", "IN_FORCE", (2024, 6, 1))],
    )
    .await
    .unwrap();
    // Expired before it entered into force.
    let err = append(
        &mut ingest,
        vec![change("d-3", "dated", "EXPIRED", (2024, 5, 1))],
    )
    .await
    .unwrap_err();
    assert_eq!(rule(&err).0, "AGREEMENT_DATE_ORDER");
    // An amendment that changes the status, and one that moves the signing
    // after the first status change.
    let mut terminated = agreement("d-4", "dated");
    if let Some(pb::event::Payload::Agreement(a)) = &mut terminated.payload {
        a.status = pb::AgreementStatus::Terminated as i32;
    }
    let err = append(&mut ingest, vec![terminated]).await.unwrap_err();
    assert_eq!(
        rule(&err),
        (
            "AGREEMENT_AMENDMENT_STATUS".into(),
            "events[0].agreement.status".into()
        )
    );
    let mut late = agreement("d-5", "dated");
    if let Some(pb::event::Payload::Agreement(a)) = &mut late.payload {
        a.status = pb::AgreementStatus::InForce as i32;
        a.signed_on = Some(pb::Date {
            year: 2025,
            month: 1,
            day: 1,
        });
    }
    let err = append(&mut ingest, vec![late]).await.unwrap_err();
    assert_eq!(
        rule(&err),
        (
            "AGREEMENT_DATE_ORDER".into(),
            "events[0].agreement.signed_on".into()
        )
    );
    // A correction of the signing date within the rules updates the history's
    // first entry.
    let mut corrected = agreement("d-6", "dated");
    if let Some(pb::event::Payload::Agreement(a)) = &mut corrected.payload {
        a.status = pb::AgreementStatus::InForce as i32;
        a.signed_on = Some(pb::Date {
            year: 2023,
            month: 5,
            day: 18,
        });
    }
    append(&mut ingest, vec![corrected]).await.unwrap();
    let views = drain(
        query(&app)
            .await
            .stream_agreements(pb::StreamAgreementsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let view = views[0].agreement.as_ref().unwrap();
    let first = view.history[0].effective_on.as_ref().unwrap();
    assert_eq!((first.year, first.month, first.day), (2023, 5, 18));
    assert_eq!(view.history.len(), 2);
    assert!(view.history.windows(2).all(|w| (w[0]
        .effective_on
        .as_ref()
        .map(|d| (d.year, d.month, d.day)))
        <= (w[1].effective_on.as_ref().map(|d| (d.year, d.month, d.day)))));
}

#[tokio::test]
async fn a_batch_checks_its_events_in_order_and_a_rule_broken_late_stores_nothing() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    let before = store_state(&app).await;
    // Signed, in force, expired, then in force again: the last breaks it.
    let batch = vec![
        agreement("b-a", "batch"),
        change("b-1", "batch", "IN_FORCE", (2024, 1, 1)),
        change("b-2", "batch", "EXPIRED", (2025, 1, 1)),
        change("b-3", "batch", "IN_FORCE", (2026, 1, 1)),
    ];
    let err = append(&mut ingest, batch).await.unwrap_err();
    assert_eq!(
        rule(&err),
        (
            "AGREEMENT_FINAL_STATUS".into(),
            "events[3].agreement_status_changed.status".into()
        )
    );
    assert_eq!(store_state(&app).await, before);
}

#[tokio::test]
async fn a_retraction_needs_a_current_figure_and_a_resent_one_is_a_duplicate() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    let retract =
        |id: &str, year: i32| retraction(id, ("CN", "KZ"), pb::Flow::Export, year, "typo");
    let before = store_state(&app).await;
    // Never stored.
    let err = append(&mut ingest, vec![retract("r-0", 2022)])
        .await
        .unwrap_err();
    assert_eq!(
        rule(&err),
        (
            "RETRACTION_OF_NO_FIGURE".into(),
            "events[0].trade_record_retracted.key".into()
        )
    );
    assert_eq!(store_state(&app).await, before);
    // Stored, then retracted: fine; retracted again under a new id: refused;
    // the same retraction re-sent: an idempotent duplicate.
    append(&mut ingest, vec![trade("f-1", "CN", "KZ", 2022, 5)])
        .await
        .unwrap();
    let first = append(&mut ingest, vec![retract("r-1", 2022)])
        .await
        .unwrap();
    let again = append(&mut ingest, vec![retract("r-1", 2022)])
        .await
        .unwrap();
    assert!(again[0].duplicate && again[0].sequence == first[0].sequence);
    let err = append(&mut ingest, vec![retract("r-2", 2022)])
        .await
        .unwrap_err();
    assert_eq!(rule(&err).0, "RETRACTION_OF_NO_FIGURE");
    // Within one batch, a figure and its retraction, then a second
    // retraction: the second breaks the batch.
    let err = append(
        &mut ingest,
        vec![
            trade("f-2", "CN", "KZ", 2023, 5),
            retract("r-3", 2023),
            retract("r-4", 2023),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        rule(&err).1,
        "events[2].trade_record_retracted.key".to_string()
    );
    append(
        &mut ingest,
        vec![trade("f-3", "CN", "KZ", 2023, 5), retract("r-5", 2023)],
    )
    .await
    .unwrap();
}
