//! Every domain rule of every event kind: one bad field at a time, through
//! Append (INVALID_ARGUMENT naming `events[0].<field>`) and through
//! AppendStream (a rejection naming `event.<field>`, the stream going on).
//! Nothing of it is stored.

use super::*;

type Mutation = Box<dyn Fn(&mut pb::Event)>;

fn tr(e: &mut pb::Event) -> &mut pb::TradeRecord {
    record_mut(e)
}

fn ag(e: &mut pb::Event) -> &mut pb::Agreement {
    match &mut e.payload {
        Some(pb::event::Payload::Agreement(a)) => a,
        _ => unreachable!(),
    }
}

fn sc(e: &mut pb::Event) -> &mut pb::AgreementStatusChanged {
    match &mut e.payload {
        Some(pb::event::Payload::AgreementStatusChanged(c)) => c,
        _ => unreachable!(),
    }
}

fn rt(e: &mut pb::Event) -> &mut pb::TradeRecordRetracted {
    match &mut e.payload {
        Some(pb::event::Payload::TradeRecordRetracted(r)) => r,
        _ => unreachable!(),
    }
}

fn retraction() -> pb::Event {
    super::retraction("bad", ("CN", "KZ"), pb::Flow::Export, 2022, "typo")
}

const BAD_COUNTRIES: [&str; 8] = ["", "XX", "C5", "KAZA", "é", "W00", "k z", "Z["];
const BAD_IDS: [&str; 8] = [
    "",
    "a\u{0}b",
    "evil\u{202e}gnp.exe",
    "zero\u{200b}width",
    "bom\u{feff}",
    "line\u{2028}break",
    "tag\u{e0041}",
    "\u{7f}",
];
const BAD_TEXT: [&str; 4] = ["admin\u{202e}txt", "a\u{7}b", "a\u{2029}b", "a\u{fdd0}"];

fn money(units: i64, nanos: i32, code: &str) -> pb::Money {
    pb::Money {
        currency_code: code.into(),
        units,
        nanos,
    }
}

/// (the base event, a mutation, the field it breaks).
fn cases() -> Vec<(pb::Event, Mutation, String)> {
    let mut out: Vec<(pb::Event, Mutation, String)> = Vec::new();
    let trade_base = || trade("bad", "CN", "KZ", 2022, 1);
    let agreement_base = || agreement("bad", "some-agreement");
    let change_base = || status_change("bad", "known-agreement");
    let mut add = |base: pb::Event, m: Mutation, field: &str| out.push((base, m, field.into()));

    // The envelope, on every kind.
    for base in [trade_base(), agreement_base(), change_base(), retraction()] {
        for id in BAD_IDS {
            add(
                base.clone(),
                Box::new(move |e| e.event_id = id.into()),
                "event_id",
            );
        }
        add(
            base.clone(),
            Box::new(|e| e.event_id = "x".repeat(129)),
            "event_id",
        );
        for feed in ["", "has space", "ünïcode", "semi;colon"] {
            add(
                base.clone(),
                Box::new(move |e| e.feed = feed.into()),
                "feed",
            );
        }
        add(base.clone(), Box::new(|e| e.feed = "f".repeat(65)), "feed");
        add(
            base.clone(),
            Box::new(|e| {
                e.occurred_at = Some(pbjson_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                })
            }),
            "occurred_at",
        );
        add(base.clone(), Box::new(|e| e.payload = None), "payload");
    }
    // Trade records.
    for c in BAD_COUNTRIES {
        add(
            trade_base(),
            Box::new(move |e| tr(e).reporter = c.into()),
            "trade_record.reporter",
        );
        add(
            trade_base(),
            Box::new(move |e| tr(e).partner = c.into()),
            "trade_record.partner",
        );
    }
    for f in [0, 6, -1, 999] {
        add(
            trade_base(),
            Box::new(move |e| tr(e).flow = f),
            "trade_record.flow",
        );
    }
    add(
        trade_base(),
        Box::new(|e| tr(e).period = None),
        "trade_record.period",
    );
    for year in [1899, 2101, -5] {
        add(
            trade_base(),
            Box::new(move |e| tr(e).period.as_mut().unwrap().year = year),
            "trade_record.period.year",
        );
    }
    for freq in [0, 5, -1] {
        add(
            trade_base(),
            Box::new(move |e| tr(e).period.as_mut().unwrap().frequency = freq),
            "trade_record.period.frequency",
        );
    }
    for (freq, number) in [(1, 1), (2, 0), (2, 5), (3, 0), (3, 13), (4, 13), (4, 0)] {
        add(
            trade_base(),
            Box::new(move |e| {
                let p = tr(e).period.as_mut().unwrap();
                p.frequency = freq;
                p.number = number;
            }),
            "trade_record.period.number",
        );
    }
    add(
        trade_base(),
        Box::new(|e| tr(e).commodity = None),
        "trade_record.commodity",
    );
    add(
        trade_base(),
        Box::new(|e| tr(e).commodity = Some(pb::CommodityScope { scope: None })),
        "trade_record.commodity",
    );
    for code in ["0", "00", "271", "27111", "2711111", "ab", "00123", ""] {
        add(
            trade_base(),
            Box::new(move |e| {
                tr(e).commodity = Some(pb::CommodityScope {
                    scope: Some(pb::commodity_scope::Scope::HsCode(code.into())),
                })
            }),
            "trade_record.commodity.hs_code",
        );
    }
    for s in [0, 15, -1] {
        add(
            trade_base(),
            Box::new(move |e| {
                tr(e).commodity = Some(pb::CommodityScope {
                    scope: Some(pb::commodity_scope::Scope::Sector(s)),
                })
            }),
            "trade_record.commodity.sector",
        );
    }
    add(
        trade_base(),
        Box::new(|e| tr(e).value = None),
        "trade_record.value",
    );
    for (units, nanos, code, field) in [
        (1, 0, "", "currency_code"),
        (1, 0, "EUR", "currency_code"),
        (1, 0, "usd", "currency_code"),
        (1, 0, "Usd", "currency_code"),
        (1, 0, " USD", "currency_code"),
        (-1, 0, "USD", "units"),
        (1_000_000_000_000_001, 0, "USD", "units"),
        (i64::MAX, 0, "USD", "units"),
        (1, -1, "USD", "nanos"),
        (1, 1_000_000_000, "USD", "nanos"),
        (1_000_000_000_000_000, 1, "USD", "nanos"),
    ] {
        add(
            trade_base(),
            Box::new(move |e| tr(e).value = Some(money(units, nanos, code))),
            &format!("trade_record.value.{field}"),
        );
    }
    for (whole, nanos, unit, field) in [
        (-1, 0, "t", "whole"),
        (1, -1, "t", "nanos"),
        (1, 0, "", "unit"),
        (1_000_000_000_000_000, 1, "t", "nanos"),
    ] {
        add(
            trade_base(),
            Box::new(move |e| {
                tr(e).quantity = Some(pb::Quantity {
                    whole,
                    nanos,
                    unit: unit.into(),
                })
            }),
            &format!("trade_record.quantity.{field}"),
        );
    }
    add(
        trade_base(),
        Box::new(|e| {
            tr(e).quantity = Some(pb::Quantity {
                whole: 1,
                nanos: 0,
                unit: "u".repeat(33),
            })
        }),
        "trade_record.quantity.unit",
    );
    add(
        trade_base(),
        Box::new(|e| tr(e).source = "s".repeat(513)),
        "trade_record.source",
    );
    add(
        trade_base(),
        Box::new(|e| tr(e).note = "n".repeat(2049)),
        "trade_record.note",
    );
    for t in BAD_TEXT {
        add(
            trade_base(),
            Box::new(move |e| tr(e).source = t.into()),
            "trade_record.source",
        );
        add(
            trade_base(),
            Box::new(move |e| tr(e).note = t.into()),
            "trade_record.note",
        );
    }
    add(
        trade_base(),
        Box::new(|e| tr(e).partner = "CN".into()),
        "trade_record.partner",
    );
    // Retractions.
    add(
        retraction(),
        Box::new(|e| rt(e).key = None),
        "trade_record_retracted.key",
    );
    for c in BAD_COUNTRIES {
        add(
            retraction(),
            Box::new(move |e| rt(e).key.as_mut().unwrap().reporter = c.into()),
            "trade_record_retracted.key.reporter",
        );
        add(
            retraction(),
            Box::new(move |e| rt(e).key.as_mut().unwrap().partner = c.into()),
            "trade_record_retracted.key.partner",
        );
    }
    add(
        retraction(),
        Box::new(|e| rt(e).key.as_mut().unwrap().flow = 0),
        "trade_record_retracted.key.flow",
    );
    add(
        retraction(),
        Box::new(|e| rt(e).key.as_mut().unwrap().period = None),
        "trade_record_retracted.key.period",
    );
    for reason in ["", "   "] {
        add(
            retraction(),
            Box::new(move |e| rt(e).reason = reason.into()),
            "trade_record_retracted.reason",
        );
    }
    add(
        retraction(),
        Box::new(|e| rt(e).reason = "r".repeat(2049)),
        "trade_record_retracted.reason",
    );
    // Agreements.
    for id in ["", "has space", "ä", "x/".repeat(100).as_str()] {
        let id = id.to_owned();
        add(
            agreement_base(),
            Box::new(move |e| ag(e).agreement_id = id.clone()),
            "agreement.agreement_id",
        );
    }
    for title in ["", "   ", "t\u{202e}", &"t".repeat(513)] {
        let title = title.to_owned();
        add(
            agreement_base(),
            Box::new(move |e| ag(e).title = title.clone()),
            "agreement.title",
        );
    }
    for parties in [
        vec![],
        vec!["CN"],
        vec!["CN", "CHN"],
        vec!["CN", "XX"],
        vec!["CN", "KZ", "kz"],
    ] {
        let parties: Vec<String> = parties.into_iter().map(String::from).collect();
        let field = if parties.iter().any(|p| p == "XX") {
            "agreement.parties[1]"
        } else {
            "agreement.parties"
        };
        add(
            agreement_base(),
            Box::new(move |e| ag(e).parties = parties.clone()),
            field,
        );
    }
    add(
        agreement_base(),
        Box::new(|e| ag(e).signed_on = None),
        "agreement.signed_on",
    );
    for (y, m, d) in [
        (2023, 2, 30),
        (2023, 13, 1),
        (2023, 0, 1),
        (2023, 4, 31),
        (0, 1, 1),
    ] {
        add(
            agreement_base(),
            Box::new(move |e| {
                ag(e).signed_on = Some(pb::Date {
                    year: y,
                    month: m,
                    day: d,
                })
            }),
            "agreement.signed_on",
        );
    }
    for k in [0, 8, -1] {
        add(
            agreement_base(),
            Box::new(move |e| ag(e).kind = k),
            "agreement.kind",
        );
    }
    for s in [0, 9, -3] {
        add(
            agreement_base(),
            Box::new(move |e| ag(e).status = s),
            "agreement.status",
        );
    }
    add(
        agreement_base(),
        Box::new(|e| ag(e).sectors = vec![]),
        "agreement.sectors",
    );
    add(
        agreement_base(),
        Box::new(|e| ag(e).sectors = vec![2, 2]),
        "agreement.sectors",
    );
    add(
        agreement_base(),
        Box::new(|e| ag(e).sectors = vec![2, 99]),
        "agreement.sectors[1]",
    );
    for (units, nanos, code, field) in [
        (1, 0, "EUR", "currency_code"),
        (-1, 0, "USD", "units"),
        (1_000_000_000_000_000, 1, "USD", "nanos"),
    ] {
        add(
            agreement_base(),
            Box::new(move |e| ag(e).value = Some(money(units, nanos, code))),
            &format!("agreement.value.{field}"),
        );
    }
    add(
        agreement_base(),
        Box::new(|e| ag(e).venue = "v".repeat(257)),
        "agreement.venue",
    );
    for t in BAD_TEXT {
        add(
            agreement_base(),
            Box::new(move |e| ag(e).note = t.into()),
            "agreement.note",
        );
    }
    // Status changes.
    add(
        change_base(),
        Box::new(|e| sc(e).agreement_id = "".into()),
        "agreement_status_changed.agreement_id",
    );
    for s in [0, 5, -1] {
        add(
            change_base(),
            Box::new(move |e| sc(e).status = s),
            "agreement_status_changed.status",
        );
    }
    add(
        change_base(),
        Box::new(|e| sc(e).effective_on = None),
        "agreement_status_changed.effective_on",
    );
    add(
        change_base(),
        Box::new(|e| {
            sc(e).effective_on = Some(pb::Date {
                year: 2024,
                month: 2,
                day: 30,
            })
        }),
        "agreement_status_changed.effective_on",
    );
    for t in BAD_TEXT {
        add(
            change_base(),
            Box::new(move |e| sc(e).note = t.into()),
            "agreement_status_changed.note",
        );
    }
    out
}

#[tokio::test]
async fn every_bad_field_of_every_event_kind_is_refused_by_name_and_stores_nothing() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    append(&mut ingest, vec![agreement("known", "known-agreement")])
        .await
        .unwrap();
    let before = store_state(&app).await;
    let cases = cases();
    let (tx, rx) = tokio::sync::mpsc::channel(cases.len());
    let mut answers = ingest
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (i, (base, mutate, field)) in cases.iter().enumerate() {
        let mut e = base.clone();
        mutate(&mut e);
        e.event_id = if field == "event_id" {
            e.event_id
        } else {
            format!("bad-{i}")
        };
        let case = format!("case {i}: {field} in {e:?}");
        // Append: the batch is refused, naming the field.
        let status = append(&mut ingest, vec![e.clone()]).await.expect_err(&case);
        assert_refused(
            &status,
            Code::InvalidArgument,
            Some(&format!("events[0].{field}")),
            &case,
        );
        // AppendStream: a rejection naming it, and the stream goes on.
        tx.send(pb::AppendStreamRequest { event: Some(e) })
            .await
            .unwrap();
        let answer = answers.message().await.expect(&case).expect(&case);
        match answer.result {
            Some(pb::append_stream_response::Result::Rejection(r)) => {
                let want = format!("event.{field}");
                assert!(
                    r.field_violations.iter().any(|v| v.field == want),
                    "{case}: {r:?}"
                );
            }
            other => panic!("{case}: {other:?}"),
        }
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    eprintln!("{} bad events refused", cases.len());
    assert!(cases.len() >= 200, "{} cases", cases.len());
    still_serving(&app).await;
    assert_eq!(store_state(&app).await, before);
}
