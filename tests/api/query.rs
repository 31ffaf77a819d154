//! QueryService against the curated seed data: exact sums, growth, mirror
//! gaps, agreements, revisions, retractions, as-of reads, resumable streams,
//! limits and validation.

use crate::helpers::*;
use caravan::proto::v1 as pb;
use std::time::Duration;
use tonic::Code;

const C5: [&str; 5] = ["KZ", "KG", "TJ", "TM", "UZ"];

/// A query client that cannot be pushed a large answer.
async fn small_window_query(
    app: &TestApp,
) -> pb::query_service_client::QueryServiceClient<tonic::transport::Channel> {
    pb::query_service_client::QueryServiceClient::new(small_window_channel(&app.url()).await)
}

fn china_2022_filter() -> pb::FigureFilter {
    pb::FigureFilter {
        reporters: vec!["CHN".into()],
        partners: C5.iter().map(|s| s.to_string()).collect(),
        periods: Some(annual_range(2022, 2022)),
        ..Default::default()
    }
}

async fn china_slices(app: &TestApp, as_of: u64) -> Vec<pb::CooperationSlice> {
    let mut q = query(app).await;
    drain(
        q.stream_country_cooperation(pb::StreamCountryCooperationRequest {
            country: "CN".into(),
            periods: Some(annual_range(2000, 2030)),
            as_of_sequence: as_of,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await
    .unwrap()
    .into_iter()
    .filter_map(|r| r.slice)
    .collect()
}

fn slice<'a>(
    slices: &'a [pb::CooperationSlice],
    partner: &str,
    year: i32,
) -> &'a pb::CooperationSlice {
    slices
        .iter()
        .find(|s| s.partner == partner && s.period.as_ref().unwrap().year == year)
        .unwrap_or_else(|| panic!("no slice {partner} {year}"))
}

#[tokio::test]
async fn chinas_2022_trade_with_the_five_sums_to_70_07_bn_exactly() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let all = aggregate(
        &app,
        pb::AggregateRequest {
            filter: Some(china_2022_filter()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.len(), 1);
    let totals = all[0].totals.as_ref().unwrap();
    assert_eq!(usd(totals.total.as_ref()), 70_071_660_000);
    assert_eq!(all[0].cells_without_total, 0);

    let by_partner = aggregate(
        &app,
        pb::AggregateRequest {
            filter: Some(china_2022_filter()),
            group_by: vec![pb::GroupBy::Partner as i32],
            ..Default::default()
        },
    )
    .await;
    let parts: Vec<(String, i64)> = by_partner
        .iter()
        .map(|g| {
            (
                g.partner.clone(),
                usd(g.totals.as_ref().unwrap().total.as_ref()),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            ("KG".to_owned(), 15_501_660_000), // exports + imports, not the published 15.5 bn
            ("KZ".to_owned(), 31_200_000_000), // published turnover only
            ("TJ".to_owned(), 2_530_000_000),  // exports alone: the turnover counts, never both
            ("TM".to_owned(), 11_180_000_000),
            ("UZ".to_owned(), 9_660_000_000), // annual only: the Jan–Nov figure is not added
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn growth_is_exact_and_absent_without_a_base() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let slices = china_slices(&app, 0).await;
    let kz22 = slice(&slices, "KZ", 2022);
    assert_eq!(
        kz22.growth
            .as_ref()
            .unwrap()
            .total
            .as_ref()
            .unwrap()
            .hundredths,
        2356
    );
    // Kazakhstan 2022 has no export figure: no export growth, never 0 %.
    assert!(kz22.growth.as_ref().unwrap().exports.is_none());
    let kz21 = slice(&slices, "KZ", 2021);
    assert!(kz21.growth.as_ref().unwrap().total.is_none());
    let tj22 = slice(&slices, "TJ", 2022);
    assert!(
        tj22.growth.as_ref().unwrap().total.is_none(),
        "2021 is missing"
    );
    let tm23 = slice(&slices, "TM", 2023);
    assert_eq!(
        tm23.growth
            .as_ref()
            .unwrap()
            .total
            .as_ref()
            .unwrap()
            .hundredths,
        -519
    );
    app.stop().await;
}

#[tokio::test]
async fn mirror_statistics_show_both_sides_and_the_gaps() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let slices = china_slices(&app, 0).await;
    let mirror = |p, y| slice(&slices, p, y).mirror.clone().unwrap();

    let kz = mirror("KZ", 2022).turnover.unwrap();
    assert_eq!(usd(kz.own.as_ref()), 31_200_000_000);
    assert_eq!(usd(kz.mirror.as_ref()), 24_100_000_000);
    assert_eq!(kz.gap.as_ref().unwrap().units, 7_100_000_000);
    assert_eq!(kz.gap_percent.as_ref().unwrap().hundredths, 2946);

    let kg = mirror("KG", 2023).exports.unwrap();
    assert_eq!(
        (usd(kg.own.as_ref()), usd(kg.mirror.as_ref())),
        (19_720_000_000, 5_400_000_000)
    );
    let tj = mirror("TJ", 2022).exports.unwrap();
    assert_eq!(
        (usd(tj.own.as_ref()), usd(tj.mirror.as_ref())),
        (2_200_000_000, 842_000_000)
    );
    let uz = mirror("UZ", 2023);
    let turnover = uz.turnover.unwrap();
    assert_eq!(
        (usd(turnover.own.as_ref()), usd(turnover.mirror.as_ref())),
        (14_000_000_000, 13_700_000_000)
    );
    // China's imports from Uzbekistan against Uzbekistan's exports to China: a negative gap.
    let imports = uz.imports.unwrap();
    assert_eq!(imports.gap.as_ref().unwrap().units, -800_000_000);

    // Uzbekistan 2021 is reported only by Uzbekistan: the slice exists, China's side is absent.
    let uz21 = slice(&slices, "UZ", 2021);
    assert!(uz21.totals.as_ref().unwrap().total.is_none());
    let t = uz21.mirror.as_ref().unwrap().turnover.clone().unwrap();
    assert!(t.own.is_none() && t.gap.is_none());
    assert_eq!(usd(t.mirror.as_ref()), 8_000_000_000);
    app.stop().await;
}

#[tokio::test]
async fn slices_carry_the_agreements_signed_in_their_period() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let slices = china_slices(&app, 0).await;
    let ids = |p, y| -> Vec<String> {
        slice(&slices, p, y)
            .agreements
            .iter()
            .map(|a| a.agreement.as_ref().unwrap().agreement_id.clone())
            .collect()
    };
    assert!(ids("KZ", 2022).is_empty());
    let kz23 = ids("KZ", 2023);
    assert!(
        kz23.contains(&"xian-2023-cn-kz-visa-exemption".to_owned()),
        "{kz23:?}"
    );
    assert!(kz23.contains(&"beijing-2023-mou-transport".to_owned()));
    assert!(!ids("KG", 2023).contains(&"xian-2023-cn-kz-visa-exemption".to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn the_sector_view_keeps_one_commodity_level() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let mut q = query(&app).await;
    let energy = |level: pb::CommodityLevel| pb::StreamSectorCooperationRequest {
        sector: pb::Sector::Energy as i32,
        periods: Some(annual_range(2000, 2030)),
        level: level as i32,
        ..Default::default()
    };
    let hs4 = drain(
        q.stream_sector_cooperation(energy(pb::CommodityLevel::Hs4))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    // China's gas imports from Uzbekistan and Uzbekistan's own exports (HS
    // 2711) are in the HS-4 view ...
    let uz = |reporter: &str, partner: &str| {
        hs4.iter()
            .filter_map(|a| a.slice.as_ref())
            .find(|s| {
                s.reporter == reporter
                    && s.partner == partner
                    && s.period.as_ref().is_some_and(|p| p.year == 2022)
            })
            .and_then(|s| s.totals.clone())
            .unwrap_or_default()
    };
    assert_eq!(usd(uz("CN", "UZ").imports.as_ref()), 1_070_000_000);
    assert_eq!(usd(uz("UZ", "CN").exports.as_ref()), 905_700_000);
    // ... and there are no energy figures given by sector: HS 2711 is not
    // counted at another level.
    let sector_level = drain(
        q.stream_sector_cooperation(energy(pb::CommodityLevel::Sector))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert!(sector_level.is_empty());
    // Uzbekistan's all-commodity figures do not include the HS 2711 figure.
    let uz = aggregate(
        &app,
        pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                reporters: vec!["UZ".into()],
                periods: Some(annual_range(2022, 2022)),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let t = uz[0].totals.as_ref().unwrap();
    assert!(t.exports.is_none());
    assert_eq!(usd(t.total.as_ref()), 9_000_000_000);
    app.stop().await;
}

#[tokio::test]
async fn frequencies_are_never_mixed() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let ytd = aggregate(
        &app,
        pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                reporters: vec!["CN".into()],
                partners: vec!["UZ".into()],
                periods: Some(pb::PeriodRange {
                    frequency: pb::Frequency::YearToDate as i32,
                    from: None,
                    to: None,
                }),
                ..Default::default()
            }),
            group_by: vec![pb::GroupBy::Period as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ytd.len(), 1);
    assert_eq!(ytd[0].period.as_ref().unwrap().number, 11);
    assert_eq!(
        usd(ytd[0].totals.as_ref().unwrap().total.as_ref()),
        9_050_000_000
    );
    app.stop().await;
}

#[tokio::test]
async fn agreements_filter_and_show_their_status_history_as_of_any_sequence() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let mut q = query(&app).await;
    let energy = drain(
        q.stream_agreements(pb::StreamAgreementsRequest {
            sectors: vec![pb::Sector::Energy as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await
    .unwrap();
    let ids: Vec<_> = energy
        .iter()
        .map(|a| {
            a.agreement
                .as_ref()
                .unwrap()
                .agreement
                .as_ref()
                .unwrap()
                .agreement_id
                .clone()
        })
        .collect();
    assert_eq!(ids, ["xian-2023-declaration"]);

    let before = last_sequence(&mut app.ingest().await).await;
    let mut ingest = app.ingest().await;
    let mut change = status_change("treaty-in-force", "astana-2025-treaty-good-neighbourliness");
    if let Some(pb::event::Payload::AgreementStatusChanged(c)) = &mut change.payload {
        c.effective_on = Some(pb::Date {
            year: 2026,
            month: 2,
            day: 1,
        });
    }
    append(&mut ingest, vec![change]).await.unwrap();

    let treaty = |as_of| pb::StreamAgreementsRequest {
        parties: vec!["KAZ".into()],
        kinds: vec![pb::AgreementKind::Treaty as i32],
        as_of_sequence: as_of,
        ..Default::default()
    };
    let now = drain(q.stream_agreements(treaty(0)).await.unwrap().into_inner())
        .await
        .unwrap();
    let view = now[0].agreement.as_ref().unwrap();
    assert_eq!(
        view.agreement.as_ref().unwrap().status,
        pb::AgreementStatus::InForce as i32
    );
    assert_eq!(view.history.len(), 2);
    let then = drain(
        q.stream_agreements(treaty(before))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let view = then[0].agreement.as_ref().unwrap();
    assert_eq!(
        view.agreement.as_ref().unwrap().status,
        pb::AgreementStatus::Signed as i32
    );
    assert_eq!(view.history.len(), 1);
    // Before the agreements were loaded there were none.
    let none = drain(q.stream_agreements(treaty(1)).await.unwrap().into_inner()).await;
    assert!(none.unwrap().iter().all(|a| a
        .agreement
        .as_ref()
        .unwrap()
        .agreement
        .as_ref()
        .unwrap()
        .kind
        != pb::AgreementKind::Treaty as i32));
    app.stop().await;
}

#[tokio::test]
async fn revisions_and_retractions_are_answered_as_of_any_sequence() {
    let app = spawn_app().await;
    let loaded = load_seed(&app).await;
    let mut ingest = app.ingest().await;
    let mut revised = trade("kz-2022-revised", "CHN", "KAZ", 2022, 31_500_000_000);
    record_mut(&mut revised).flow = pb::Flow::Turnover as i32;
    append(&mut ingest, vec![revised]).await.unwrap();
    let after_revision = last_sequence(&mut ingest).await;
    let retraction = retraction(
        "kz-2022-retracted",
        ("CN", "KZ"),
        pb::Flow::Turnover,
        2022,
        "superseded",
    );
    append(&mut ingest, vec![retraction]).await.unwrap();

    let records = |as_of| pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            reporters: vec!["CN".into()],
            partners: vec!["KZ".into()],
            flows: vec![pb::Flow::Turnover as i32],
            periods: Some(annual_range(2022, 2022)),
            ..Default::default()
        }),
        as_of_sequence: as_of,
        ..Default::default()
    };
    let mut q = query(&app).await;
    let read = |req| {
        let mut q = q.clone();
        async move {
            drain(q.stream_trade_records(req).await.unwrap().into_inner())
                .await
                .unwrap()
                .into_iter()
                .flat_map(|m| m.records)
                .collect::<Vec<_>>()
        }
    };
    let original = read(records(loaded)).await;
    assert_eq!(
        (
            original[0].revision,
            usd(original[0].record.as_ref().unwrap().value.as_ref())
        ),
        (1, 31_200_000_000)
    );
    let second = read(records(after_revision)).await;
    assert_eq!(
        (
            second[0].revision,
            usd(second[0].record.as_ref().unwrap().value.as_ref())
        ),
        (2, 31_500_000_000)
    );
    assert!(
        read(records(0)).await.is_empty(),
        "a retracted figure disappears"
    );

    // Aggregates and views follow the same snapshots.
    let total_at = |as_of| pb::AggregateRequest {
        filter: Some(china_2022_filter()),
        as_of_sequence: as_of,
        ..Default::default()
    };
    let t = |g: Vec<pb::AggregateGroup>| usd(g[0].totals.as_ref().unwrap().total.as_ref());
    assert_eq!(t(aggregate(&app, total_at(loaded)).await), 70_071_660_000);
    assert_eq!(
        t(aggregate(&app, total_at(after_revision)).await),
        70_371_660_000
    );
    assert_eq!(t(aggregate(&app, total_at(0)).await), 38_871_660_000);
    // The current view (answered from the pair's rollups) and older
    // snapshots of the pair (answered from its figures) agree with the above.
    let kz_total = |slices: &[pb::CooperationSlice]| {
        slices
            .iter()
            .find(|s| s.partner == "KZ" && s.period.as_ref().unwrap().year == 2022)
            .and_then(|s| s.totals.as_ref()?.total.as_ref())
            .map(|m| usd(Some(m)))
    };
    assert_eq!(
        kz_total(&china_slices(&app, loaded).await),
        Some(31_200_000_000)
    );
    assert_eq!(
        kz_total(&china_slices(&app, after_revision).await),
        Some(31_500_000_000)
    );
    assert_eq!(
        kz_total(&china_slices(&app, 0).await),
        None,
        "the retracted figure leaves the current view"
    );
    // A new figure after the retraction is summed at once.
    let mut again = trade("kz-2022-again", "CHN", "KAZ", 2022, 30_000_000_000);
    record_mut(&mut again).flow = pb::Flow::Turnover as i32;
    append(&mut ingest, vec![again]).await.unwrap();
    assert_eq!(kz_total(&china_slices(&app, 0).await), Some(30_000_000_000));

    let err = q.stream_trade_records(records(10_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    app.stop().await;
}

async fn many_records(app: &TestApp, prefix: &str, n: usize, year: i32) {
    let mut ingest = app.ingest().await;
    let partners = ["KZ", "KG", "TJ", "TM", "UZ", "DE", "US", "RU"];
    let events: Vec<_> = (0..n)
        .map(|i| {
            let mut e = trade(
                &format!("{prefix}{i}"),
                "CN",
                partners[i % partners.len()],
                year,
                i as i64,
            );
            record_mut(&mut e).commodity = Some(pb::CommodityScope {
                scope: Some(pb::commodity_scope::Scope::HsCode(format!(
                    "{:02}{:04}",
                    1 + (i / 10_000) % 97,
                    i % 10_000
                ))),
            });
            e
        })
        .collect();
    for chunk in events.chunks(5_000) {
        append(&mut ingest, chunk.to_vec()).await.unwrap();
    }
}

#[tokio::test]
async fn a_resumed_stream_continues_its_snapshot_with_no_gap_and_no_repeat() {
    let app = spawn_app().await;
    many_records(&app, "a", 3_000, 2022).await;
    let request = pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            level: pb::CommodityLevel::Hs6 as i32,
            periods: Some(pb::PeriodRange {
                frequency: pb::Frequency::Annual as i32,
                from: None,
                to: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut q = query(&app).await;
    let mut first = q
        .stream_trade_records(request.clone())
        .await
        .unwrap()
        .into_inner();
    let m1 = first.message().await.unwrap().unwrap();
    let snapshot = m1.as_of_sequence;
    assert_eq!(m1.records.len(), 1_024);
    drop(first); // the client goes away mid-stream

    // New figures land before and after the cursor's position, and a revision.
    many_records(&app, "b", 1_000, 2021).await;
    many_records(&app, "c", 1_000, 2023).await;

    let mut resumed = request.clone();
    resumed.resume_after = m1.cursor.clone();
    let rest = drain(q.stream_trade_records(resumed).await.unwrap().into_inner())
        .await
        .unwrap();
    assert!(rest.iter().all(|m| m.as_of_sequence == snapshot));
    let mut seen: Vec<u64> = m1.records.iter().map(|r| r.sequence).collect();
    seen.extend(
        rest.iter()
            .flat_map(|m| m.records.iter().map(|r| r.sequence)),
    );
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a record was repeated");
    assert_eq!(
        sorted,
        (1..=3_000).collect::<Vec<u64>>(),
        "exactly the snapshot's records"
    );

    // A cursor only fits its own request.
    let mut other = request.clone();
    other.filter.as_mut().unwrap().hs_prefix = "01".into();
    other.resume_after = m1.cursor.clone();
    let err = q.stream_trade_records(other).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["resume_after"]);
    let mut garbage = request;
    garbage.resume_after = vec![1, 2, 3];
    assert_eq!(
        q.stream_trade_records(garbage).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resumed_country_view_has_no_gap_or_repeat() {
    let app = spawn_app().await;
    load_seed(&app).await;
    let request = pb::StreamCountryCooperationRequest {
        country: "CN".into(),
        periods: Some(annual_range(2000, 2030)),
        ..Default::default()
    };
    let mut q = query(&app).await;
    let whole = drain(
        q.stream_country_cooperation(request.clone())
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert!(whole.len() > 5);
    let key = |m: &pb::StreamCountryCooperationResponse| {
        let s = m.slice.as_ref().unwrap();
        (s.partner.clone(), s.period.as_ref().unwrap().year)
    };
    for cut in [0, 3, whole.len() - 1] {
        // Events arrive between the two calls; the resumed part is unchanged.
        append(
            &mut app.ingest().await,
            vec![trade(&format!("late{cut}"), "CN", "KZ", 2024, 1)],
        )
        .await
        .unwrap();
        let mut resumed = request.clone();
        resumed.resume_after = whole[cut].cursor.clone();
        let rest = drain(
            q.stream_country_cooperation(resumed)
                .await
                .unwrap()
                .into_inner(),
        )
        .await
        .unwrap();
        let expected: Vec<_> = whole[cut + 1..].iter().map(key).collect();
        assert_eq!(rest.iter().map(key).collect::<Vec<_>>(), expected);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_resumed_sector_view_has_no_gap_or_repeat_and_shows_only_its_years() {
    let app = spawn_app().await;
    let hs = |id: &str, reporter: &str, partner: &str, year: i32, code: &str| {
        let mut e = trade(id, reporter, partner, year, 1_000);
        record_mut(&mut e).commodity = Some(pb::CommodityScope {
            scope: Some(pb::commodity_scope::Scope::HsCode(code.into())),
        });
        e
    };
    let mut ingest = app.ingest().await;
    append(
        &mut ingest,
        vec![
            hs("e1", "CN", "KZ", 2021, "2711"),
            hs("e2", "CN", "KZ", 2022, "2709"),
            hs("e3", "KZ", "CN", 2022, "2711"),
            hs("e4", "RU", "KZ", 2022, "2716"),
            // Outside the years asked for, and outside the sector.
            hs("e5", "UZ", "CN", 2020, "2711"),
            hs("e6", "CN", "UZ", 2022, "8471"),
        ],
    )
    .await
    .unwrap();
    let request = pb::StreamSectorCooperationRequest {
        sector: pb::Sector::Energy as i32,
        periods: Some(annual_range(2021, 2022)),
        level: pb::CommodityLevel::Hs4 as i32,
        ..Default::default()
    };
    let key = |m: &pb::StreamSectorCooperationResponse| {
        let s = m.slice.as_ref().unwrap();
        (
            s.reporter.clone(),
            s.partner.clone(),
            s.period.as_ref().unwrap().year,
        )
    };
    let mut q = query(&app).await;
    let whole = drain(
        q.stream_sector_cooperation(request.clone())
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let owned = |v: &[(&str, &str, i32)]| -> Vec<(String, String, i32)> {
        v.iter()
            .map(|(r, p, y)| (r.to_string(), p.to_string(), *y))
            .collect()
    };
    assert_eq!(
        whole.iter().map(key).collect::<Vec<_>>(),
        owned(&[
            ("CN", "KZ", 2021),
            ("CN", "KZ", 2022),
            ("KZ", "CN", 2022),
            ("RU", "KZ", 2022),
        ])
    );
    for cut in 0..whole.len() {
        // A new pair arrives between the two calls; the resumed stream keeps
        // its snapshot and does not show it.
        append(
            &mut ingest,
            vec![hs(&format!("late{cut}"), "DE", "KZ", 2022, "2711")],
        )
        .await
        .unwrap();
        let mut resumed = request.clone();
        resumed.resume_after = whole[cut].cursor.clone();
        let rest = drain(
            q.stream_sector_cooperation(resumed)
                .await
                .unwrap()
                .into_inner(),
        )
        .await
        .unwrap();
        let expected: Vec<_> = whole[cut + 1..].iter().map(key).collect();
        assert_eq!(rest.iter().map(key).collect::<Vec<_>>(), expected);
    }
    // A new query sees the new pair.
    let now = drain(
        q.stream_sector_cooperation(request)
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert!(now
        .iter()
        .map(key)
        .any(|k| k == ("DE".into(), "KZ".into(), 2022)));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_holds_up_nobody() {
    // A buffer smaller than the answer (20 messages of ~150 KB), so that the
    // stalled stream really waits.
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.query.max_streams = 2;
        c.query.stream_buffer_bytes = 256 * 1024;
    })
    .await;
    many_records(&app, "a", 20_000, 2022).await;
    let all = pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            level: pb::CommodityLevel::Hs6 as i32,
            periods: Some(annual_range(2000, 2030)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut stalled_client = small_window_query(&app).await;
    let stalled = stalled_client
        .stream_trade_records(all.clone())
        .await
        .unwrap()
        .into_inner();
    // Another client's query, and ingestion, complete while it stalls.
    let other = tokio::time::timeout(Duration::from_secs(20), async {
        let mut q = query(&app).await;
        let got = drain(
            q.stream_trade_records(all.clone())
                .await
                .unwrap()
                .into_inner(),
        )
        .await
        .unwrap();
        append(
            &mut app.ingest().await,
            vec![trade("during", "CN", "KZ", 2030, 1)],
        )
        .await
        .unwrap();
        got.iter().map(|m| m.records.len()).sum::<usize>()
    })
    .await
    .expect("not held up");
    assert_eq!(other, 20_000);
    // The limit: two streams run (one stalled, one new), the third is refused.
    let _second = stalled_client
        .stream_trade_records(all.clone())
        .await
        .unwrap()
        .into_inner();
    let mut q = query(&app).await;
    let err = q.stream_trade_records(all.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // A client that leaves releases its slot.
    drop(stalled);
    drop(_second);
    let released = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match q.stream_trade_records(all.clone()).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert!(released.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn query_requests_are_validated() {
    let app = spawn_app().await;
    let mut q = query(&app).await;
    let err = q
        .stream_country_cooperation(pb::StreamCountryCooperationRequest {
            country: "XX".into(),
            sectors: vec![pb::Sector::Energy as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["country", "periods", "sectors"]);
    let err = q
        .aggregate(pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                periods: Some(pb::PeriodRange {
                    frequency: pb::Frequency::Annual as i32,
                    from: Some(annual(2023)),
                    to: Some(annual(2021)),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["filter.periods.to"]);
    let err = q
        .aggregate(pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                periods: Some(annual_range(2021, 2023)),
                hs_prefix: "27".into(),
                ..Default::default()
            }),
            group_by: vec![pb::GroupBy::Sector as i32, pb::GroupBy::Sector as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["filter.hs_prefix", "group_by[1]", "group_by"]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_expired_deadline_ends_a_stalled_stream() {
    // A buffer smaller than the answer, so that the stream stalls.
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.query.stream_buffer_bytes = 256 * 1024;
    })
    .await;
    many_records(&app, "a", 20_000, 2022).await;
    let mut q = small_window_query(&app).await;
    let mut request = tonic::Request::new(pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            level: pb::CommodityLevel::Hs6 as i32,
            periods: Some(annual_range(2000, 2030)),
            ..Default::default()
        }),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let stream = q.stream_trade_records(request).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let end = tokio::time::timeout(Duration::from_secs(10), drain(stream))
        .await
        .expect("the stream ends");
    let err = match end {
        Ok(messages) => panic!(
            "the stream completed ({} messages) despite the deadline",
            messages.len()
        ),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_stream_whose_client_accepts_nothing_is_released_after_the_stall_timeout() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.query.max_streams = 1;
        c.query.stream_buffer_bytes = 256 * 1024;
        c.query.stall_timeout = Duration::from_secs(1);
    })
    .await;
    many_records(&app, "st", 20_000, 2022).await;
    let all = pb::StreamTradeRecordsRequest {
        filter: Some(pb::FigureFilter {
            level: pb::CommodityLevel::Hs6 as i32,
            periods: Some(annual_range(2000, 2030)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut stalled_client = small_window_query(&app).await;
    let stalled = stalled_client
        .stream_trade_records(all.clone())
        .await
        .unwrap()
        .into_inner();
    // The one slot is taken…
    let mut q = query(&app).await;
    let err = q.stream_trade_records(all.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // …until the stalled stream is released.
    let freed = eventually(Duration::from_secs(20), || {
        let mut q = q.clone();
        let all = all.clone();
        async move { q.stream_trade_records(all).await }
    })
    .await
    .expect("the slot is released");
    drop(freed);
    // The stalled client, reading at last, gets what was buffered and why it
    // ended: never a stream that looks complete.
    let end = end_status(stalled).await;
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(end.message().contains("--stall-timeout-secs"), "{end:?}");
    app.stop().await;
}
