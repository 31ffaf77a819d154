//! The sector seed (`data/seed/sectors.jsonl`) through the real query RPCs:
//! China's gas imports by supplier and year, Uzbekistan's gas as both sides
//! report it, a mining figure and a sector breakdown, exact to the dollar; a
//! year-to-date figure is never added to the full year.

use crate::helpers::*;
use caravan::proto::v1 as pb;
use std::collections::BTreeMap;

/// The seed, with the sector figures.
async fn seeded() -> TestApp {
    let app = spawn_app().await;
    assert_eq!(load_seed(&app).await, 16 + 37 + 32);
    app
}

fn dollars(m: Option<&pb::Money>) -> i64 {
    let m = m.expect("a value");
    assert_eq!(m.nanos, 0);
    m.units
}

fn ytd_range() -> pb::PeriodRange {
    pb::PeriodRange {
        frequency: pb::Frequency::YearToDate as i32,
        from: None,
        to: None,
    }
}

/// China's HS 2711 imports grouped by supplier and period.
async fn gas(app: &TestApp, periods: pb::PeriodRange) -> BTreeMap<(String, i32, i32), i64> {
    let groups = aggregate(
        app,
        pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                reporters: vec!["CN".into()],
                flows: vec![pb::Flow::Import as i32],
                level: pb::CommodityLevel::Hs4 as i32,
                hs_prefix: "2711".into(),
                periods: Some(periods),
                ..Default::default()
            }),
            group_by: vec![pb::GroupBy::Partner as i32, pb::GroupBy::Period as i32],
            ..Default::default()
        },
    )
    .await;
    groups
        .into_iter()
        .map(|g| {
            let p = g.period.expect("a period");
            let imports = g.totals.as_ref().and_then(|t| t.imports.as_ref());
            ((g.partner.clone(), p.year, p.number), dollars(imports))
        })
        .collect()
}

#[tokio::test]
async fn china_gas_imports_by_supplier_and_year_are_exact() {
    let app = seeded().await;
    let full_years = gas(&app, annual_range(2021, 2023)).await;
    let expected: BTreeMap<(String, i32, i32), i64> = [
        ("TM", 2021, 6_790_000_000),
        ("TM", 2022, 10_250_000_000),
        ("TM", 2023, 9_600_000_000),
        ("KZ", 2022, 1_080_000_000),
        ("KZ", 2023, 1_320_000_000),
        ("UZ", 2021, 799_000_000),
        ("UZ", 2022, 1_070_000_000),
        ("UZ", 2023, 563_540_000),
    ]
    .into_iter()
    .map(|(p, y, v)| ((p.to_owned(), y, 0), v))
    .collect();
    // No full-year Kazakh figure for 2021: the Jan–Nov one stays year to date.
    assert_eq!(full_years, expected);
    app.stop().await;
}

#[tokio::test]
async fn year_to_date_and_full_year_figures_are_never_summed() {
    let app = seeded().await;
    // 2022: Turkmenistan's full year is 10.25 bn, not 10.25 + the 9.3 bn of Jan–Nov.
    let fy = gas(&app, annual_range(2022, 2022)).await;
    assert_eq!(fy[&("TM".to_owned(), 2022, 0)], 10_250_000_000);
    let ytd = gas(&app, ytd_range()).await;
    let tm: Vec<_> = ytd
        .iter()
        .filter(|((p, _, _), _)| p == "TM")
        .map(|((_, y, n), v)| (*y, *n, *v))
        .collect();
    // Each cumulative period is its own figure: Jan–Jun and Jan–Nov 2023 are
    // not added together either.
    assert_eq!(
        tm,
        vec![
            (2021, 11, 6_100_000_000),
            (2022, 11, 9_300_000_000),
            (2023, 6, 5_058_000_000),
            (2023, 11, 8_820_000_000),
        ]
    );
    // All Chinese gas imports of 2023, full years only: 9.6 + 1.32 + 0.56354 bn.
    let all = aggregate(
        &app,
        pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                reporters: vec!["CN".into()],
                level: pb::CommodityLevel::Hs4 as i32,
                hs_prefix: "2711".into(),
                periods: Some(annual_range(2023, 2023)),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let imports = all[0].totals.as_ref().and_then(|t| t.imports.as_ref());
    assert_eq!(dollars(imports), 11_483_540_000);
    app.stop().await;
}

#[tokio::test]
async fn uzbek_gas_mirror_gap_is_exact() {
    let app = seeded().await;
    let mut q = query(&app).await;
    let mut gaps = Vec::new();
    for periods in [annual_range(2021, 2023), ytd_range()] {
        let slices = drain(
            q.stream_sector_cooperation(pb::StreamSectorCooperationRequest {
                sector: pb::Sector::Energy as i32,
                countries: vec!["UZ".into()],
                periods: Some(periods),
                level: pb::CommodityLevel::Hs4 as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
        )
        .await
        .unwrap();
        for s in slices.iter().filter_map(|a| a.slice.as_ref()) {
            if (s.reporter.as_str(), s.partner.as_str()) != ("CN", "UZ") {
                continue;
            }
            let Some(f) = s.mirror.as_ref().and_then(|m| m.imports.as_ref()) else {
                continue;
            };
            if f.mirror.is_none() {
                continue;
            }
            let p = s.period.unwrap();
            let gap = f.gap.as_ref().unwrap();
            assert_eq!(gap.nanos, 0);
            gaps.push((
                p.year,
                p.number,
                dollars(f.own.as_ref()),
                dollars(f.mirror.as_ref()),
                gap.units,
                f.gap_percent.as_ref().unwrap().hundredths,
            ));
        }
    }
    assert_eq!(
        gaps,
        vec![
            // China: 1.07 bn; Uzbekistan: 905.7 m; 164.3 m = 18.14 % of Uzbekistan's.
            (2022, 0, 1_070_000_000, 905_700_000, 164_300_000, 1814),
            // Jan–Nov 2023: 509.03 m against 503 m.
            (2023, 11, 509_030_000, 503_000_000, 6_030_000, 120),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn kazakh_copper_ores_and_the_sector_breakdown_are_exact() {
    let app = seeded().await;
    let mut q = query(&app).await;
    let copper = drain(
        q.stream_trade_records(pb::StreamTradeRecordsRequest {
            filter: Some(pb::FigureFilter {
                reporters: vec!["CN".into()],
                partners: vec!["KZ".into()],
                level: pb::CommodityLevel::Hs4 as i32,
                hs_prefix: "2603".into(),
                periods: Some(annual_range(2022, 2022)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await
    .unwrap();
    let records: Vec<_> = copper.iter().flat_map(|m| &m.records).collect();
    assert_eq!(records.len(), 1);
    let r = records[0].record.as_ref().unwrap();
    assert_eq!(dollars(r.value.as_ref()), 2_040_000_000);
    assert!(
        r.note.contains("copper ores and concentrates"),
        "{}",
        r.note
    );
    assert!(r.source.starts_with("Silk Road Briefing"), "{}", r.source);

    // China's 2022 imports from Kazakhstan by sector, at HS 4-digit level:
    // energy = gas 1.08 bn + crude oil 4.1 bn; mining = copper ores (the HS-2
    // "other ores" figure is another level); uranium files under chemicals.
    let slices = drain(
        q.stream_country_cooperation(pb::StreamCountryCooperationRequest {
            country: "CN".into(),
            partners: vec!["KZ".into()],
            periods: Some(annual_range(2022, 2022)),
            level: pb::CommodityLevel::Hs4 as i32,
            breakdown_level: pb::CommodityLevel::Hs4 as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await
    .unwrap();
    let by_sector: BTreeMap<i32, i64> = slices
        .iter()
        .filter_map(|a| a.slice.as_ref())
        .flat_map(|s| &s.sectors)
        .map(|s| {
            let imports = s.totals.as_ref().and_then(|t| t.imports.as_ref());
            (s.sector, dollars(imports))
        })
        .collect();
    assert_eq!(
        by_sector,
        BTreeMap::from([
            (pb::Sector::Energy as i32, 5_180_000_000),
            (pb::Sector::MiningMetals as i32, 2_040_000_000),
            (pb::Sector::Chemicals as i32, 817_000_000),
        ])
    );
    app.stop().await;
}
