//! `caravan query …`: the query RPCs from a terminal, as aligned tables with
//! money in readable units, or as one proto3 JSON object per line
//! (`--output json`).
//!
//! Depends on the generated query client, `terminal` and the shared client
//! flags; never on the server's internals.

use super::{drain, json, list, CliError, ConnectArgs, Output, SectorArg};
use crate::proto::v1 as pb;
use crate::proto::v1::query_service_client::QueryServiceClient;
use crate::tools::terminal::{self, percent, period, signed_bn, usd_bn};
use clap::ValueEnum;
use prost::Message;
use tonic::Streaming;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FrequencyArg {
    Annual,
    Quarterly,
    Monthly,
    Ytd,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LevelArg {
    All,
    Hs2,
    Hs4,
    Hs6,
    Sector,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum GroupArg {
    Reporter,
    Partner,
    Flow,
    Sector,
    Period,
}

/// Options every query takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    /// Answer as of this sequence (0 = now).
    #[arg(long, default_value_t = 0)]
    pub as_of: u64,
}

/// Which periods.
#[derive(clap::Args, Debug)]
pub struct Periods {
    #[arg(long, value_enum, default_value = "annual")]
    pub frequency: FrequencyArg,
    /// First period: `2022`, or `2022-3` for the 3rd quarter/month/YTD month.
    #[arg(long)]
    pub from: Option<String>,
    /// Last period, as `--from`.
    #[arg(long)]
    pub to: Option<String>,
}

impl Periods {
    fn wire(&self) -> Result<pb::PeriodRange, CliError> {
        let frequency = match self.frequency {
            FrequencyArg::Annual => pb::Frequency::Annual,
            FrequencyArg::Quarterly => pb::Frequency::Quarterly,
            FrequencyArg::Monthly => pb::Frequency::Monthly,
            FrequencyArg::Ytd => pb::Frequency::YearToDate,
        } as i32;
        let parse = |s: &Option<String>, last: bool| -> Result<Option<pb::Period>, CliError> {
            let Some(s) = s else { return Ok(None) };
            let (year, number) = match s.split_once('-') {
                Some((y, n)) => (y.parse()?, n.parse()?),
                None => {
                    let year = s.parse().map_err(|_| format!("{s:?} is not a year"))?;
                    let number = match self.frequency {
                        FrequencyArg::Annual => 0,
                        FrequencyArg::Quarterly if last => 4,
                        FrequencyArg::Monthly | FrequencyArg::Ytd if last => 12,
                        _ => 1,
                    };
                    (year, number)
                }
            };
            Ok(Some(pb::Period {
                year,
                frequency,
                number,
            }))
        };
        Ok(pb::PeriodRange {
            frequency,
            from: parse(&self.from, false)?,
            to: parse(&self.to, true)?,
        })
    }
}

fn level(l: Option<LevelArg>) -> i32 {
    match l {
        None => 0,
        Some(LevelArg::All) => pb::CommodityLevel::All as i32,
        Some(LevelArg::Hs2) => pb::CommodityLevel::Hs2 as i32,
        Some(LevelArg::Hs4) => pb::CommodityLevel::Hs4 as i32,
        Some(LevelArg::Hs6) => pb::CommodityLevel::Hs6 as i32,
        Some(LevelArg::Sector) => pb::CommodityLevel::Sector as i32,
    }
}

#[derive(clap::Args, Debug)]
pub struct CountryArgs {
    /// The reporting country (alpha-2 or alpha-3).
    pub country: String,
    /// Only these partners (comma-separated or repeated).
    #[arg(long)]
    pub partners: Vec<String>,
    #[arg(long, value_enum)]
    pub sectors: Vec<SectorArg>,
    #[arg(long, value_enum)]
    pub level: Option<LevelArg>,
    #[command(flatten)]
    pub periods: Periods,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Debug)]
pub struct SectorArgs {
    #[arg(value_enum)]
    pub sector: SectorArg,
    /// Only pairs involving these countries.
    #[arg(long)]
    pub countries: Vec<String>,
    #[arg(long, value_enum)]
    pub level: Option<LevelArg>,
    #[command(flatten)]
    pub periods: Periods,
    #[command(flatten)]
    pub common: Common,
}

/// Filters of records and aggregates.
#[derive(clap::Args, Debug)]
pub struct FilterArgs {
    #[arg(long)]
    pub reporters: Vec<String>,
    #[arg(long)]
    pub partners: Vec<String>,
    #[arg(long, value_enum)]
    pub level: Option<LevelArg>,
    /// HS code prefix (with an HS level).
    #[arg(long)]
    pub hs_prefix: Option<String>,
    #[arg(long, value_enum)]
    pub sectors: Vec<SectorArg>,
    #[command(flatten)]
    pub periods: Periods,
}

impl FilterArgs {
    fn wire(&self) -> Result<pb::FigureFilter, CliError> {
        Ok(pb::FigureFilter {
            reporters: list(&self.reporters),
            partners: list(&self.partners),
            flows: Vec::new(),
            level: level(self.level),
            hs_prefix: self.hs_prefix.clone().unwrap_or_default(),
            sectors: self.sectors.iter().map(|s| s.wire()).collect(),
            periods: Some(self.periods.wire()?),
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct RecordsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also show who stored each record (its feed and identity).
    #[arg(long)]
    pub provenance: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Debug)]
pub struct AggregateArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Group by these (comma-separated or repeated); none = one total.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub group_by: Vec<GroupArg>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Debug)]
pub struct AgreementsArgs {
    #[arg(long)]
    pub parties: Vec<String>,
    #[arg(long, value_enum)]
    pub sectors: Vec<SectorArg>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Subcommand, Debug)]
pub enum QueryCommand {
    /// A country's trade with each partner per period, with growth, both
    /// sides' statistics and the agreements signed.
    Country(CountryArgs),
    /// One sector's trade per (reporter, partner, period).
    Sector(SectorArgs),
    /// The current figures.
    Records(RecordsArgs),
    /// Agreements with their current status.
    Agreements(AgreementsArgs),
    /// Exact totals, grouped.
    Aggregate(AggregateArgs),
    /// A country's figures against its partners' mirror figures.
    Mirror(CountryArgs),
}

/// Prints a query's answer: one proto3 JSON object per message, or `table`
/// with a row (or rows) added by `rows` for each message.
async fn show<T: Message>(
    s: Streaming<T>,
    output: Output,
    name: &str,
    mut table: comfy_table::Table,
    mut rows: impl FnMut(&mut comfy_table::Table, T),
) -> Result<(), CliError> {
    drain(s, |m| match output {
        Output::Json => json(&m, name),
        Output::Table => {
            rows(&mut table, m);
            Ok(())
        }
    })
    .await?;
    if output == Output::Table {
        println!("{table}");
    }
    Ok(())
}

fn country_request(a: &CountryArgs) -> Result<pb::StreamCountryCooperationRequest, CliError> {
    Ok(pb::StreamCountryCooperationRequest {
        country: a.country.clone(),
        partners: list(&a.partners),
        sectors: a.sectors.iter().map(|s| s.wire()).collect(),
        periods: Some(a.periods.wire()?),
        level: level(a.level),
        breakdown_level: 0,
        as_of_sequence: a.common.as_of,
        resume_after: Vec::new(),
    })
}

/// "export", "re_import", …; empty for none.
fn flow_name(raw: i32) -> String {
    pb::Flow::try_from(raw)
        .ok()
        .filter(|f| *f != pb::Flow::Unspecified)
        .map(|f| f.as_str_name().trim_start_matches("FLOW_").to_lowercase())
        .unwrap_or_default()
}

fn total_of(t: &Option<pb::FlowTotals>) -> Option<pb::Money> {
    t.as_ref().and_then(|t| t.total.clone())
}

/// Runs `caravan query …`.
pub async fn run(command: QueryCommand) -> Result<u8, CliError> {
    match command {
        QueryCommand::Country(a) => {
            let mut q = QueryServiceClient::new(a.common.connect.connect().await?);
            let s = q
                .stream_country_cooperation(country_request(&a)?)
                .await?
                .into_inner();
            let t = terminal::table(&[
                "partner",
                "period",
                "exports",
                "imports",
                "total",
                "growth",
                "partner's total",
                "gap",
                "agreements",
            ]);
            show(
                s,
                a.common.output,
                "caravan.v1.StreamCountryCooperationResponse",
                t,
                |t, m| {
                    let Some(s) = m.slice else { return };
                    let totals = s.totals.clone().unwrap_or_default();
                    let mirror = s.mirror.clone().unwrap_or_default();
                    t.add_row([
                        s.partner.clone(),
                        period(s.period.as_ref()),
                        usd_bn(totals.exports.as_ref()),
                        usd_bn(totals.imports.as_ref()),
                        usd_bn(totals.total.as_ref()),
                        percent(s.growth.and_then(|g| g.total).as_ref()),
                        usd_bn(total_of(&mirror.partner_reported).as_ref()),
                        signed_bn(mirror.total.and_then(|f| f.gap).as_ref()),
                        s.agreements.len().to_string(),
                    ]);
                },
            )
            .await?;
        }
        QueryCommand::Mirror(a) => {
            let mut q = QueryServiceClient::new(a.common.connect.connect().await?);
            let s = q
                .stream_country_cooperation(country_request(&a)?)
                .await?
                .into_inner();
            let t = terminal::table(&[
                "partner", "period", "compared", "own", "mirror", "gap", "gap %",
            ]);
            show(
                s,
                a.common.output,
                "caravan.v1.StreamCountryCooperationResponse",
                t,
                |t, m| {
                    let Some(s) = m.slice else { return };
                    let Some(mirror) = s.mirror else {
                        return;
                    };
                    for (name, f) in [
                        ("exports", mirror.exports),
                        ("imports", mirror.imports),
                        ("turnover", mirror.turnover),
                        ("total", mirror.total),
                    ] {
                        let Some(f) = f else { continue };
                        if f.own.is_none() || f.mirror.is_none() {
                            continue;
                        }
                        t.add_row([
                            s.partner.clone(),
                            period(s.period.as_ref()),
                            name.to_owned(),
                            usd_bn(f.own.as_ref()),
                            usd_bn(f.mirror.as_ref()),
                            signed_bn(f.gap.as_ref()),
                            percent(f.gap_percent.as_ref()),
                        ]);
                    }
                },
            )
            .await?;
        }
        QueryCommand::Sector(a) => {
            let mut q = QueryServiceClient::new(a.common.connect.connect().await?);
            let request = pb::StreamSectorCooperationRequest {
                sector: a.sector.wire(),
                countries: list(&a.countries),
                periods: Some(a.periods.wire()?),
                level: level(a.level),
                as_of_sequence: a.common.as_of,
                resume_after: Vec::new(),
            };
            let s = q.stream_sector_cooperation(request).await?.into_inner();
            let t = terminal::table(&[
                "reporter", "partner", "period", "exports", "imports", "total", "growth", "gap",
            ]);
            show(
                s,
                a.common.output,
                "caravan.v1.StreamSectorCooperationResponse",
                t,
                |t, m| {
                    let Some(s) = m.slice else { return };
                    let totals = s.totals.clone().unwrap_or_default();
                    t.add_row([
                        s.reporter.clone(),
                        s.partner.clone(),
                        period(s.period.as_ref()),
                        usd_bn(totals.exports.as_ref()),
                        usd_bn(totals.imports.as_ref()),
                        usd_bn(totals.total.as_ref()),
                        percent(s.growth.and_then(|g| g.total).as_ref()),
                        signed_bn(s.mirror.and_then(|m| m.total).and_then(|f| f.gap).as_ref()),
                    ]);
                },
            )
            .await?;
        }
        QueryCommand::Records(a) => {
            let mut q = QueryServiceClient::new(a.common.connect.connect().await?);
            let request = pb::StreamTradeRecordsRequest {
                filter: Some(a.filter.wire()?),
                as_of_sequence: a.common.as_of,
                resume_after: Vec::new(),
                include_provenance: a.provenance,
            };
            let s = q.stream_trade_records(request).await?.into_inner();
            let mut columns = vec![
                "reporter",
                "partner",
                "flow",
                "period",
                "commodity",
                "value (USD)",
                "revision",
                "sequence",
            ];
            if a.provenance {
                columns.extend(["feed", "written by"]);
            }
            let t = terminal::table(&columns);
            show(
                s,
                a.common.output,
                "caravan.v1.StreamTradeRecordsResponse",
                t,
                |t, m| {
                    for v in m.records {
                        let Some(r) = v.record else { continue };
                        let commodity = match r.commodity.and_then(|c| c.scope) {
                            Some(pb::commodity_scope::Scope::HsCode(h)) => format!("HS {h}"),
                            Some(pb::commodity_scope::Scope::Sector(s)) => terminal::sector(s),
                            _ => "all".into(),
                        };
                        let flow = flow_name(r.flow);
                        let value = r
                            .value
                            .map(|m| format!("{}.{:02}", m.units, m.nanos / 10_000_000))
                            .unwrap_or_default();
                        let mut row = vec![
                            r.reporter,
                            r.partner,
                            flow,
                            period(r.period.as_ref()),
                            commodity,
                            value,
                            v.revision.to_string(),
                            v.sequence.to_string(),
                        ];
                        if let Some(p) = v.provenance {
                            row.push(p.feed);
                            row.push(p.written_by);
                        }
                        t.add_row(row);
                    }
                },
            )
            .await?;
        }
        QueryCommand::Aggregate(a) => {
            let mut q = QueryServiceClient::new(a.common.connect.connect().await?);
            let group_by = a
                .group_by
                .iter()
                .map(|g| match g {
                    GroupArg::Reporter => pb::GroupBy::Reporter,
                    GroupArg::Partner => pb::GroupBy::Partner,
                    GroupArg::Flow => pb::GroupBy::Flow,
                    GroupArg::Sector => pb::GroupBy::Sector,
                    GroupArg::Period => pb::GroupBy::Period,
                } as i32)
                .collect();
            let request = pb::AggregateRequest {
                filter: Some(a.filter.wire()?),
                group_by,
                as_of_sequence: a.common.as_of,
                resume_after: Vec::new(),
            };
            let s = q.aggregate(request).await?.into_inner();
            let t = terminal::table(&[
                "reporter", "partner", "flow", "sector", "period", "exports", "imports",
                "turnover", "total", "figures",
            ]);
            show(
                s,
                a.common.output,
                "caravan.v1.AggregateResponse",
                t,
                |t, m| {
                    let Some(g) = m.group else { return };
                    let totals = g.totals.clone().unwrap_or_default();
                    let flow = flow_name(g.flow);
                    t.add_row([
                        g.reporter.clone(),
                        g.partner.clone(),
                        flow,
                        if g.sector == 0 {
                            String::new()
                        } else {
                            terminal::sector(g.sector)
                        },
                        g.period
                            .as_ref()
                            .map(|p| period(Some(p)))
                            .unwrap_or_default(),
                        usd_bn(totals.exports.as_ref()),
                        usd_bn(totals.imports.as_ref()),
                        usd_bn(totals.turnover.as_ref()),
                        usd_bn(totals.total.as_ref()),
                        g.figures.to_string(),
                    ]);
                },
            )
            .await?;
        }
        QueryCommand::Agreements(a) => {
            let mut q = QueryServiceClient::new(a.common.connect.connect().await?);
            let request = pb::StreamAgreementsRequest {
                parties: list(&a.parties),
                sectors: a.sectors.iter().map(|s| s.wire()).collect(),
                as_of_sequence: a.common.as_of,
                ..Default::default()
            };
            let s = q.stream_agreements(request).await?.into_inner();
            let t = terminal::table(&[
                "id", "signed", "venue", "status", "parties", "sectors", "title",
            ]);
            show(
                s,
                a.common.output,
                "caravan.v1.StreamAgreementsResponse",
                t,
                |t, m| {
                    let Some(v) = m.agreement else { return };
                    let Some(ag) = v.agreement else { return };
                    let date = ag
                        .signed_on
                        .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
                        .unwrap_or_default();
                    let status = pb::AgreementStatus::try_from(ag.status)
                        .map(|s| {
                            s.as_str_name()
                                .trim_start_matches("AGREEMENT_STATUS_")
                                .to_lowercase()
                        })
                        .unwrap_or_default();
                    t.add_row([
                        ag.agreement_id,
                        date,
                        ag.venue,
                        status,
                        ag.parties.join(" "),
                        ag.sectors
                            .iter()
                            .map(|s| terminal::sector(*s))
                            .collect::<Vec<_>>()
                            .join(", "),
                        ag.title,
                    ]);
                },
            )
            .await?;
        }
    }
    Ok(0)
}
