//! The demo's sector story (section 4), from the sourced product figures of
//! `data/seed/sectors.jsonl`, told through the real query RPCs: China's
//! pipeline-gas imports by supplier and year, Uzbekistan's gas as both sides
//! report it, Kazakhstan's oil, copper and uranium, and Kyrgyzstan's cars
//! from China, each beside the summit agreements of its sector.
//!
//! Depends on the generated query client and `terminal`; never on the seed
//! files themselves (every figure shown comes back from the service).

use super::{collect, country_name, Result};
use crate::proto::v1 as pb;
use crate::proto::v1::query_service_client::QueryServiceClient;
use crate::tools::terminal::{self, percent, period, usd_bn, usd_exact};
use std::collections::BTreeMap;
use tonic::transport::Channel;

type Query = QueryServiceClient<Channel>;

fn periods(frequency: pb::Frequency, from: i32, to: i32) -> pb::PeriodRange {
    let bound = |year| pb::Period {
        year,
        frequency: frequency as i32,
        number: 0,
    };
    match frequency {
        // Year-to-date figures of any month: no bounds.
        pb::Frequency::YearToDate => pb::PeriodRange {
            frequency: frequency as i32,
            from: None,
            to: None,
        },
        _ => pb::PeriodRange {
            frequency: frequency as i32,
            from: Some(bound(from)),
            to: Some(bound(to)),
        },
    }
}

/// Growth from `before` to `now` in hundredths of a percent, exactly rounded.
fn growth(before: &pb::Money, now: &pb::Money) -> Option<pb::Percent> {
    let nanos = |m: &pb::Money| i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos);
    let (b, n) = (nanos(before), nanos(now));
    if b <= 0 {
        return None;
    }
    let scaled = (n - b) * 10_000;
    let rounded = (2 * scaled + b * scaled.signum()) / (2 * b);
    Some(pb::Percent {
        hundredths: i64::try_from(rounded).ok()?,
    })
}

fn quantity(q: Option<&pb::Quantity>) -> String {
    q.map_or(String::new(), |q| {
        let whole = usd_exact(Some(&pb::Money {
            currency_code: String::new(),
            units: q.whole,
            nanos: q.nanos,
        }));
        format!("{whole} {}", q.unit)
    })
}

/// The part of a seed note after "notes: ": whose statistics, caveats.
fn notes(note: &str) -> &str {
    note.rsplit_once("notes: ").map_or(note, |(_, n)| n)
}

async fn records(query: &mut Query, filter: pb::FigureFilter) -> Result<Vec<pb::TradeRecord>> {
    let answers = collect(
        query
            .stream_trade_records(pb::StreamTradeRecordsRequest {
                filter: Some(filter),
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    Ok(answers
        .into_iter()
        .flat_map(|a| a.records)
        .filter_map(|v| v.record)
        .collect())
}

/// The country view of `country`'s trade with `partner` in full `years`,
/// from HS 4-digit figures, with its breakdown by sector.
async fn country_by_sector(
    query: &mut Query,
    country: &str,
    partner: &str,
    (from, to): (i32, i32),
) -> Result<Vec<pb::CooperationSlice>> {
    let answers = collect(
        query
            .stream_country_cooperation(pb::StreamCountryCooperationRequest {
                country: country.into(),
                partners: vec![partner.into()],
                periods: Some(periods(pb::Frequency::Annual, from, to)),
                level: pb::CommodityLevel::Hs4 as i32,
                breakdown_level: pb::CommodityLevel::Hs4 as i32,
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    Ok(answers.into_iter().filter_map(|a| a.slice).collect())
}

/// Prints the summit agreements (Xi'an 2023, Astana 2025 and the others of
/// the seed) that cover `sector`.
async fn agreements(query: &mut Query, sector: pb::Sector) -> Result<()> {
    let answers = collect(
        query
            .stream_agreements(pb::StreamAgreementsRequest {
                sectors: vec![sector as i32],
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    let name = terminal::sector(sector as i32);
    let found: Vec<_> = answers
        .iter()
        .filter_map(|a| a.agreement.as_ref())
        .filter_map(|v| v.agreement.as_ref())
        .collect();
    if found.is_empty() {
        println!("   {name} agreements: none in the seed data");
    }
    for a in found {
        let date = a
            .signed_on
            .as_ref()
            .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
            .unwrap_or_default();
        println!("   {name} agreement: {date} {} — {}", a.venue, a.title);
    }
    Ok(())
}

/// China's pipeline-gas imports (HS 2711) by supplier and year.
async fn gas(query: &mut Query) -> Result<()> {
    let suppliers = ["TM", "KZ", "UZ"];
    let filter = pb::FigureFilter {
        reporters: vec!["CN".into()],
        partners: suppliers.iter().map(|s| s.to_string()).collect(),
        flows: vec![pb::Flow::Import as i32],
        level: pb::CommodityLevel::Hs4 as i32,
        hs_prefix: "2711".into(),
        periods: Some(periods(pb::Frequency::Annual, 2021, 2023)),
        ..Default::default()
    };
    let groups = collect(
        query
            .aggregate(pb::AggregateRequest {
                filter: Some(filter.clone()),
                group_by: vec![pb::GroupBy::Partner as i32, pb::GroupBy::Period as i32],
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    let mut by_supplier: BTreeMap<String, BTreeMap<i32, pb::Money>> = BTreeMap::new();
    for g in groups.iter().filter_map(|r| r.group.as_ref()) {
        let (Some(p), Some(imports)) =
            (&g.period, g.totals.as_ref().and_then(|t| t.imports.clone()))
        else {
            continue;
        };
        by_supplier
            .entry(g.partner.clone())
            .or_default()
            .insert(p.year, imports);
    }
    println!(
        "\n4. Energy, mining and goods by product: sourced figures from both sides' statistics\n"
    );
    println!("4a. China's pipeline-gas imports (HS 2711) by supplier, full years (China's customs, USD)\n");
    let mut t = terminal::table(&["supplier", "2021", "2022", "2023"]);
    for supplier in suppliers {
        let years = by_supplier.get(supplier).cloned().unwrap_or_default();
        let cell = |year: i32| match years.get(&year) {
            None => "—".to_owned(),
            Some(v) => match years.get(&(year - 1)).and_then(|b| growth(b, v)) {
                Some(g) => format!("{} ({})", usd_bn(Some(v)), percent(Some(&g))),
                None => usd_bn(Some(v)),
            },
        };
        t.add_row([country_name(supplier), cell(2021), cell(2022), cell(2023)]);
    }
    println!("{t}");
    println!("   (growth on the year before, from the two exact figures; — where no full-year figure was found)");
    let ytd = records(
        query,
        pb::FigureFilter {
            periods: Some(periods(pb::Frequency::YearToDate, 0, 0)),
            ..filter
        },
    )
    .await?;
    let mut t = terminal::table(&[
        "year to date (a figure of its own, never added to a full year)",
        "period",
        "USD",
    ]);
    for r in &ytd {
        t.add_row([
            format!("China's imports from {}", country_name(&r.partner)),
            period(r.period.as_ref()),
            usd_exact(r.value.as_ref()),
        ]);
    }
    println!("{t}");
    agreements(query, pb::Sector::Energy).await
}

/// Uzbekistan's gas exports to China as both sides report them.
async fn uzbek_gas(query: &mut Query) -> Result<()> {
    println!("\n4b. Uzbekistan's gas: China's imports against Uzbekistan's own exports (mirror statistics, HS 4-digit energy figures)\n");
    let mut t = terminal::table(&[
        "period",
        "China reports imports",
        "Uzbekistan reports exports",
        "gap",
        "gap, % of Uzbekistan's",
    ]);
    for frequency in [pb::Frequency::Annual, pb::Frequency::YearToDate] {
        let slices = collect(
            query
                .stream_sector_cooperation(pb::StreamSectorCooperationRequest {
                    sector: pb::Sector::Energy as i32,
                    countries: vec!["UZ".into()],
                    periods: Some(periods(frequency, 2021, 2023)),
                    level: pb::CommodityLevel::Hs4 as i32,
                    ..Default::default()
                })
                .await?
                .into_inner(),
        )
        .await?;
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
            let gap = f.gap.as_ref().map(|g| pb::Money {
                currency_code: "USD".into(),
                units: g.units,
                nanos: g.nanos,
            });
            t.add_row([
                period(s.period.as_ref()),
                usd_exact(f.own.as_ref()),
                usd_exact(f.mirror.as_ref()),
                usd_exact(gap.as_ref()),
                percent(f.gap_percent.as_ref()),
            ]);
        }
    }
    println!("{t}");
    let reason = records(
        query,
        pb::FigureFilter {
            reporters: vec!["CN".into()],
            partners: vec!["UZ".into()],
            level: pb::CommodityLevel::Hs4 as i32,
            hs_prefix: "2711".into(),
            periods: Some(periods(pb::Frequency::Annual, 2022, 2022)),
            ..Default::default()
        },
    )
    .await?;
    for r in &reason {
        println!(
            "   Why they differ (the 2022 record's note): {}",
            notes(&r.note)
        );
    }
    Ok(())
}

/// Kazakhstan's oil, copper ores and uranium: China's imports by sector,
/// and the product figures of both sides.
async fn kazakhstan(query: &mut Query) -> Result<()> {
    println!("\n4c. Kazakhstan: oil, copper and uranium\n");
    let slices = country_by_sector(query, "CN", "KZ", (2022, 2022)).await?;
    let mut t = terminal::table(&[
        "China's imports from Kazakhstan, 2022, by sector (HS 4-digit figures)",
        "USD",
    ]);
    for s in &slices {
        for sector in &s.sectors {
            let imports = sector.totals.as_ref().and_then(|t| t.imports.as_ref());
            t.add_row([terminal::sector(sector.sector), usd_exact(imports)]);
        }
    }
    println!("{t}");
    let mut t = terminal::table(&[
        "reporter", "flow", "HS", "period", "USD", "quantity", "notes",
    ]);
    for level in [pb::CommodityLevel::Hs4, pb::CommodityLevel::Hs2] {
        let found = records(
            query,
            pb::FigureFilter {
                reporters: vec!["CN".into(), "KZ".into()],
                partners: vec!["KZ".into(), "CN".into()],
                level: level as i32,
                periods: Some(periods(pb::Frequency::Annual, 2021, 2023)),
                ..Default::default()
            },
        )
        .await?;
        for r in found {
            let hs = match r.commodity.as_ref().and_then(|c| c.scope.as_ref()) {
                Some(pb::commodity_scope::Scope::HsCode(code)) => code.clone(),
                _ => String::new(),
            };
            let flow = match pb::Flow::try_from(r.flow) {
                Ok(pb::Flow::Import) => format!("imports from {}", country_name(&r.partner)),
                Ok(pb::Flow::Export) => format!("exports to {}", country_name(&r.partner)),
                _ => "trade".into(),
            };
            // The first clause: whose statistics, or what the figure covers.
            let first = notes(&r.note).split(';').next().unwrap_or_default();
            let mut note = first.trim().to_owned();
            if note.chars().count() > 70 {
                note = note.chars().take(69).collect::<String>() + "…";
            }
            t.add_row([
                country_name(&r.reporter),
                flow,
                hs,
                period(r.period.as_ref()),
                usd_exact(r.value.as_ref()),
                quantity(r.quantity.as_ref()),
                note,
            ]);
        }
    }
    println!("{t}");
    println!("   HS 2709 crude oil and 2711 gas are energy, 2603 copper ores and 26 (other ores) mining & metals, 2844 uranium chemicals, 8401 nuclear fuel machinery (the service's HS chapter table).");
    agreements(query, pb::Sector::MiningMetals).await
}

/// Kyrgyzstan's imports of cars from China.
async fn kyrgyz_cars(query: &mut Query) -> Result<()> {
    println!("\n4d. Kyrgyzstan's cars from China (HS 8703, Kyrgyzstan's statistics)\n");
    let slices = country_by_sector(query, "KG", "CN", (2021, 2023)).await?;
    let cars = records(
        query,
        pb::FigureFilter {
            reporters: vec!["KG".into()],
            partners: vec!["CN".into()],
            level: pb::CommodityLevel::Hs4 as i32,
            hs_prefix: "8703".into(),
            periods: Some(periods(pb::Frequency::Annual, 2021, 2023)),
            ..Default::default()
        },
    )
    .await?;
    let mut t = terminal::table(&[
        "year",
        "imports from China, all HS 4-digit figures, by sector",
        "cars (HS 8703)",
        "how many",
    ]);
    for s in &slices {
        let by_sector = s
            .sectors
            .iter()
            .map(|x| {
                format!(
                    "{}: {}",
                    terminal::sector(x.sector),
                    usd_exact(x.totals.as_ref().and_then(|t| t.imports.as_ref()))
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let year = s.period.as_ref().map_or(0, |p| p.year);
        let car = cars
            .iter()
            .find(|r| r.period.as_ref().is_some_and(|p| p.year == year));
        t.add_row([
            period(s.period.as_ref()),
            by_sector,
            usd_exact(car.and_then(|r| r.value.as_ref())),
            quantity(car.and_then(|r| r.quantity.as_ref())),
        ]);
    }
    println!("{t}");
    println!("   Kyrgyzstan's 2022 count (1,773 cars) and China's own counts for 2023 have no value in their sources, so they are not stored (data/seed/README.md).");
    agreements(query, pb::Sector::TransportLogistics).await
}

/// Section 4 of the demo.
pub(super) async fn story(query: &mut Query) -> Result<()> {
    gas(query).await?;
    uzbek_gas(query).await?;
    kazakhstan(query).await?;
    kyrgyz_cars(query).await?;
    println!();
    Ok(())
}
