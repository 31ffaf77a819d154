//! `caravan demo`: the service's main job on the founding data set. Starts the
//! real server on a temporary store, loads the curated China–Central Asia seed
//! data (`data/seed/`) through the real ingest API, then answers the founding
//! questions through the real query RPCs and prints them as tables (the
//! sector story, section 4, in `sectors`).
//!
//! Depends on the server, the generated clients and `terminal`; never on sled or
//! the storage internals.

use crate::grpc::server::{self, ServerConfig};
use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_client::IngestServiceClient;
use crate::proto::v1::query_service_client::QueryServiceClient;
use crate::tools::jsonl;
use crate::tools::terminal::{self, percent, period, signed_bn, usd_bn};
use std::collections::BTreeMap;
use std::error::Error;
use tonic::transport::Channel;
use tonic::Streaming;

mod sectors;

const TRADE: &str = include_str!("../../../data/seed/trade.jsonl");
const SECTORS: &str = include_str!("../../../data/seed/sectors.jsonl");
const AGREEMENTS: &str = include_str!("../../../data/seed/agreements.jsonl");
const REGIONAL: &str = include_str!("../../../data/seed/regional_totals.csv");

const CENTRAL_ASIA: [&str; 5] = ["KZ", "KG", "TJ", "TM", "UZ"];

pub(super) type Result<T> = std::result::Result<T, Box<dyn Error>>;

pub(super) async fn collect<T>(mut s: Streaming<T>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m);
    }
    Ok(out)
}

fn annual(from: i32, to: i32) -> pb::PeriodRange {
    let p = |year| pb::Period {
        year,
        frequency: pb::Frequency::Annual as i32,
        number: 0,
    };
    pb::PeriodRange {
        frequency: pb::Frequency::Annual as i32,
        from: Some(p(from)),
        to: Some(p(to)),
    }
}

pub(super) fn country_name(alpha2: &str) -> String {
    crate::domain::Country::parse(alpha2)
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|_| alpha2.to_owned())
}

/// The published C5 total for a year, from `regional_totals.csv`.
fn published_total(year: &str) -> Option<(i64, String)> {
    let mut reader = csv::Reader::from_reader(REGIONAL.as_bytes());
    reader.records().filter_map(|r| r.ok()).find_map(|r| {
        (r.get(0)? == year && r.get(1)? == "FY" && r.get(4)? == "total")
            .then(|| Some((r.get(5)?.parse().ok()?, r.get(6)?.to_owned())))?
    })
}

async fn load(ingest: &mut IngestServiceClient<Channel>) -> Result<(usize, usize)> {
    let agreements =
        jsonl::parse_events(AGREEMENTS).map_err(|e| format!("agreements.jsonl: {e}"))?;
    let mut trade = jsonl::parse_events(TRADE).map_err(|e| format!("trade.jsonl: {e}"))?;
    let sectors = jsonl::parse_events(SECTORS).map_err(|e| format!("sectors.jsonl: {e}"))?;
    trade.extend(sectors);
    let (a, t) = (agreements.len(), trade.len());
    ingest.append(pb::AppendRequest::new(agreements)).await?;
    ingest.append(pb::AppendRequest::new(trade)).await?;
    Ok((a, t))
}

async fn china_2022(query: &mut QueryServiceClient<Channel>) -> Result<()> {
    let filter = pb::FigureFilter {
        reporters: vec!["CN".into()],
        partners: CENTRAL_ASIA.iter().map(|s| s.to_string()).collect(),
        periods: Some(annual(2022, 2022)),
        ..Default::default()
    };
    let by_partner = collect(
        query
            .aggregate(pb::AggregateRequest {
                filter: Some(filter.clone()),
                group_by: vec![pb::GroupBy::Partner as i32],
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    let all = collect(
        query
            .aggregate(pb::AggregateRequest {
                filter: Some(filter),
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    println!(
        "\n1. China's 2022 trade with the five Central Asian countries (China's statistics, USD)\n"
    );
    let mut t = terminal::table(&[
        "partner",
        "exports",
        "imports",
        "published turnover",
        "total",
        "total is",
    ]);
    for g in by_partner.iter().filter_map(|r| r.group.as_ref()) {
        let totals = g.totals.clone().unwrap_or_default();
        let basis = if totals.exports.is_some() && totals.imports.is_some() {
            "exports + imports"
        } else {
            "published turnover"
        };
        t.add_row([
            country_name(&g.partner),
            usd_bn(totals.exports.as_ref()),
            usd_bn(totals.imports.as_ref()),
            usd_bn(totals.turnover.as_ref()),
            usd_bn(totals.total.as_ref()),
            basis.to_owned(),
        ]);
    }
    let sum = all
        .first()
        .and_then(|r| r.group.as_ref())
        .and_then(|g| g.totals.clone())
        .unwrap_or_default();
    t.add_row([
        "sum of the five".to_owned(),
        String::new(),
        String::new(),
        String::new(),
        usd_bn(sum.total.as_ref()),
        "exact sum".to_owned(),
    ]);
    if let Some((value, source)) = published_total("2022") {
        let m = pb::Money {
            currency_code: "USD".into(),
            units: value,
            nanos: 0,
        };
        t.add_row([
            "published C5 total".to_owned(),
            String::new(),
            String::new(),
            String::new(),
            usd_bn(Some(&m)),
            source,
        ]);
    }
    println!("{t}");
    Ok(())
}

async fn china_view(query: &mut QueryServiceClient<Channel>) -> Result<Vec<pb::CooperationSlice>> {
    let answers = collect(
        query
            .stream_country_cooperation(pb::StreamCountryCooperationRequest {
                country: "CN".into(),
                partners: CENTRAL_ASIA.iter().map(|s| s.to_string()).collect(),
                periods: Some(annual(2000, 2100)),
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    Ok(answers.into_iter().filter_map(|a| a.slice).collect())
}

fn growth_table(slices: &[pb::CooperationSlice]) {
    println!("\n2. Year-on-year growth of China's trade with each country (China's statistics)\n");
    let mut t = terminal::table(&[
        "partner",
        "year",
        "total",
        "growth of total",
        "exports",
        "growth",
        "imports",
        "growth",
        "agreements signed",
    ]);
    for s in slices {
        let totals = s.totals.clone().unwrap_or_default();
        if totals.total.is_none() && totals.exports.is_none() && totals.imports.is_none() {
            continue;
        }
        let g = s.growth.unwrap_or_default();
        t.add_row([
            country_name(&s.partner),
            period(s.period.as_ref()),
            usd_bn(totals.total.as_ref()),
            percent(g.total.as_ref()),
            usd_bn(totals.exports.as_ref()),
            percent(g.exports.as_ref()),
            usd_bn(totals.imports.as_ref()),
            percent(g.imports.as_ref()),
            s.agreements.len().to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "   Growth is shown only where the same figure exists for the year before (— otherwise)."
    );
}

fn mirror_table(slices: &[pb::CooperationSlice]) {
    println!("\n3. Mirror statistics: China's figures against the partner's own\n");
    let mut t = terminal::table(&[
        "partner",
        "year",
        "China reports",
        "",
        "partner reports",
        "",
        "gap",
        "gap",
    ]);
    for s in slices {
        let Some(m) = &s.mirror else { continue };
        let rows = [
            ("exports", &m.exports, "imports from China"),
            ("imports", &m.imports, "exports to China"),
            ("turnover", &m.turnover, "turnover"),
            ("total", &m.total, "total"),
        ];
        for (own_name, fig, mirror_name) in rows {
            let Some(f) = fig else { continue };
            if f.own.is_none() || f.mirror.is_none() {
                continue;
            }
            t.add_row([
                country_name(&s.partner),
                period(s.period.as_ref()),
                own_name.to_owned(),
                usd_bn(f.own.as_ref()),
                mirror_name.to_owned(),
                usd_bn(f.mirror.as_ref()),
                signed_bn(f.gap.as_ref()),
                percent(f.gap_percent.as_ref()),
            ]);
        }
    }
    println!("{t}");
    println!("   gap = China's figure − the partner's figure, in USD and in percent of the partner's figure.");
}

async fn xian(query: &mut QueryServiceClient<Channel>) -> Result<()> {
    let date = |day| pb::Date {
        year: 2023,
        month: 5,
        day,
    };
    let answers = collect(
        query
            .stream_agreements(pb::StreamAgreementsRequest {
                signed_from: Some(date(18)),
                signed_to: Some(date(19)),
                ..Default::default()
            })
            .await?
            .into_inner(),
    )
    .await?;
    let mut by_sector: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut count = 0;
    for a in answers
        .iter()
        .filter_map(|a| a.agreement.as_ref())
        .filter_map(|v| v.agreement.as_ref())
    {
        if a.venue != "Xi'an" {
            continue;
        }
        count += 1;
        for s in &a.sectors {
            by_sector.entry(*s).or_default().push(a.title.clone());
        }
    }
    println!("5. Documents signed at the China–Central Asia summit in Xi'an (18–19 May 2023), by sector ({count} documents)\n");
    let mut t = terminal::table(&["sector", "documents"]);
    for (sector, titles) in by_sector {
        t.add_row([terminal::sector(sector), titles.join("\n")]);
    }
    println!("{t}");
    Ok(())
}

/// Runs the demo end to end.
pub async fn run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig::new("127.0.0.1:0".parse()?, dir.path().join("store"));
    let server = server::start(config).await?;
    let url = format!("http://{}", server.addr());
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let mut ingest = IngestServiceClient::new(channel.clone());
    let mut query = QueryServiceClient::new(channel);

    println!(
        "caravan demo: a temporary store, the real gRPC service on {}",
        server.addr()
    );
    let (a, t) = load(&mut ingest).await?;
    println!(
        "loaded {a} agreements and {t} trade records from data/seed/ through IngestService.Append"
    );

    china_2022(&mut query).await?;
    let slices = china_view(&mut query).await?;
    growth_table(&slices);
    mirror_table(&slices);
    sectors::story(&mut query).await?;
    xian(&mut query).await?;

    server.shutdown().await?;
    Ok(())
}
