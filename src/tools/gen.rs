//! `caravan gen`: a realistic synthetic dataset for benchmarks and load tests,
//! deterministic for a given seed — about 200 countries skewed toward large
//! traders, HS chapters, annual and monthly periods, some revisions and exact
//! duplicates, and agreements — as JSON Lines (events in proto3 JSON) or as a
//! UN Comtrade-layout CSV (trade records only).
//!
//! Depends on the generated messages, `jsonl` and the Comtrade layout; never on
//! the server.

use super::client::comtrade::GEN_HEADER;
use super::client::CliError;
use crate::proto::v1 as pb;
use std::io::Write;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenFormat {
    Jsonl,
    Comtrade,
}

/// What the data looks like.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenProfile {
    /// 200 countries, HS4 codes, annual and monthly periods over ten years,
    /// revisions and exact duplicates mixed in.
    Mixed,
    /// The shape of one year of world trade at HS 6-digit level (CEPII BACI:
    /// 10–11 million figures a year): 220 reporters, about 28,000 country
    /// pairs, 5,000 HS6 products of which large pairs trade many and small
    /// pairs few, annual figures, exports and imports; each year's figures
    /// are written most-traded products first, then the next year's.
    World,
}

#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Trade records to write (revisions and duplicates included).
    #[arg(long)]
    pub records: usize,
    /// Seed: the same seed writes the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Agreements to write as well (JSON Lines only), each tenth with a later
    /// status change.
    #[arg(long, default_value_t = 0)]
    pub agreements: usize,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: GenFormat,
    #[arg(long, value_enum, default_value = "mixed")]
    pub profile: GenProfile,
    /// Output file; standard output when absent.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// SplitMix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Large traders first, then the rest of ISO 3166-1, 200 in all.
fn countries() -> Vec<&'static str> {
    const LARGE: [&str; 30] = [
        "CN", "US", "DE", "NL", "JP", "KR", "IT", "FR", "GB", "HK", "IN", "CA", "MX", "RU", "SG",
        "ES", "CH", "BE", "TW", "AU", "PL", "VN", "BR", "AE", "SA", "MY", "TH", "TR", "ID", "KZ",
    ];
    let mut all: Vec<&str> = LARGE.to_vec();
    for c in rust_iso3166::ALL_ALPHA2 {
        if all.len() >= 200 {
            break;
        }
        if !all.contains(c) {
            all.push(c);
        }
    }
    all
}

/// Picks index i with weight 1/(i+1) (Zipf-like), from cumulative weights.
fn pick(rng: &mut Rng, cumulative: &[f64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(1.0);
    let x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    cumulative
        .partition_point(|c| *c < x)
        .min(cumulative.len() - 1)
}

struct Row {
    reporter: &'static str,
    partner: &'static str,
    flow: pb::Flow,
    year: i32,
    month: i32,
    hs: String,
    units: i64,
    cents: i32,
}

fn row(rng: &mut Rng, countries: &[&'static str], cumulative: &[f64]) -> Row {
    let r = pick(rng, cumulative);
    let mut p = pick(rng, cumulative);
    if p == r {
        p = (p + 1 + rng.below(countries.len() as u64 - 1) as usize) % countries.len();
    }
    let flow = match rng.below(20) {
        0 => pb::Flow::ReExport,
        1 => pb::Flow::ReImport,
        2..=10 => pb::Flow::Export,
        _ => pb::Flow::Import,
    };
    let chapter = [1 + rng.below(76), 78 + rng.below(20)][rng.below(2) as usize];
    Row {
        reporter: countries[r],
        partner: countries[p],
        flow,
        year: 2015 + rng.below(10) as i32,
        month: if rng.below(10) < 3 {
            1 + rng.below(12) as i32
        } else {
            0
        },
        hs: format!("{chapter:02}{:02}", rng.below(100)),
        units: 10i64.pow(3 + rng.below(7) as u32) + rng.below(1_000_000) as i64,
        cents: rng.below(100) as i32,
    }
}

fn trade_event(id: String, r: &Row) -> pb::Event {
    pb::Event {
        event_id: id,
        feed: "gen".into(),
        occurred_at: None,
        payload: Some(pb::event::Payload::TradeRecord(pb::TradeRecord {
            reporter: r.reporter.into(),
            partner: r.partner.into(),
            flow: r.flow as i32,
            period: Some(pb::Period {
                year: r.year,
                frequency: if r.month == 0 {
                    pb::Frequency::Annual
                } else {
                    pb::Frequency::Monthly
                } as i32,
                number: r.month,
            }),
            commodity: Some(pb::CommodityScope {
                scope: Some(pb::commodity_scope::Scope::HsCode(r.hs.clone())),
            }),
            value: Some(pb::Money {
                currency_code: "USD".into(),
                units: r.units,
                nanos: r.cents * 10_000_000,
            }),
            quantity: None,
            source: "caravan gen (synthetic)".into(),
            note: String::new(),
        })),
    }
}

/// The trade-record stream of `caravan gen`: rows with their event ids, about
/// 1 % exact duplicates and 2 % revisions of recent rows.
pub struct TradeGen {
    rng: Rng,
    countries: Vec<&'static str>,
    cumulative: Vec<f64>,
    recent: Vec<(String, Row)>,
    seed: u64,
    i: usize,
}

impl TradeGen {
    pub fn new(seed: u64) -> Self {
        let countries = countries();
        let mut cumulative = Vec::with_capacity(countries.len());
        let mut sum = 0.0;
        for i in 0..countries.len() {
            sum += 1.0 / (i as f64 + 1.0);
            cumulative.push(sum);
        }
        TradeGen {
            rng: Rng::new(seed),
            countries,
            cumulative,
            recent: Vec::new(),
            seed,
            i: 0,
        }
    }

    fn next_row(&mut self) -> (String, Row) {
        let i = self.i;
        self.i += 1;
        let rng = &mut self.rng;
        let dice = rng.below(100);
        let (id, r) = match (dice, self.recent.is_empty()) {
            (0, false) => {
                // An exact duplicate of a recent event.
                let (id, r) = &self.recent[rng.below(self.recent.len() as u64) as usize];
                (
                    id.clone(),
                    Row {
                        hs: r.hs.clone(),
                        ..*r
                    },
                )
            }
            (1..=2, false) => {
                // A revision: same key, another value, a new event.
                let (_, r) = &self.recent[rng.below(self.recent.len() as u64) as usize];
                let revised = Row {
                    hs: r.hs.clone(),
                    units: r.units + 1 + rng.below(1_000) as i64,
                    ..*r
                };
                (format!("gen-{}-{i}", self.seed), revised)
            }
            _ => (
                format!("gen-{}-{i}", self.seed),
                row(rng, &self.countries, &self.cumulative),
            ),
        };
        let kept = (
            id.clone(),
            Row {
                hs: r.hs.clone(),
                ..r
            },
        );
        if self.recent.len() < 1024 {
            self.recent.push(kept);
        } else {
            let slot = self.rng.below(1024) as usize;
            self.recent[slot] = kept;
        }
        (id, r)
    }

    /// The next trade-record event.
    pub fn next_event(&mut self) -> pb::Event {
        let (id, r) = self.next_row();
        trade_event(id, &r)
    }
}

/// Figures of one year in the world profile (BACI 2021: 11.1 million).
pub const WORLD_FIGURES_PER_YEAR: usize = 11_000_000;
/// Reporters in the world profile.
const WORLD_REPORTERS: usize = 220;
/// HS6 products in the world profile (BACI has about 5,000).
const WORLD_PRODUCTS: usize = 5_000;

/// The trade records of the world profile, in order: for each year, product
/// rank 0 for every pair that trades it, then rank 1, and so on; every
/// figure once (a key never repeats within a year).
pub struct WorldGen {
    rng: Rng,
    countries: Vec<&'static str>,
    products: Vec<String>,
    /// (reporter, partner, products traded), most products first.
    pairs: Vec<(u16, u16, u32)>,
    year: i32,
    rank: u32,
    /// Index into `pairs` within the current rank.
    at: usize,
    /// Export, then import, of the current (pair, product).
    import: bool,
    seed: u64,
    i: usize,
}

impl WorldGen {
    pub fn new(seed: u64) -> Self {
        let countries: Vec<&'static str> = countries_ranked(WORLD_REPORTERS);
        let n = countries.len();
        // Reporter of rank r reports with its 30 + 195·(1 − r/n) largest
        // partners: about 28,000 ordered pairs for 220 reporters.
        let mut weights = Vec::new();
        for r in 0..n {
            let partners = 30 + (195.0 * (1.0 - r as f64 / n as f64)) as usize;
            let mut k = 0;
            for p in 0..n {
                if p == r || k >= partners {
                    continue;
                }
                k += 1;
                weights.push((
                    r as u16,
                    p as u16,
                    1.0 / (((r + 1) * (p + 1)) as f64).sqrt(),
                ));
            }
        }
        // Products per pair in proportion to its weight, so that the pairs'
        // figures (two flows each) add up to one year's.
        let total: f64 = weights.iter().map(|w| w.2).sum();
        let scale = WORLD_FIGURES_PER_YEAR as f64 / 2.0 / total;
        let mut pairs: Vec<(u16, u16, u32)> = weights
            .into_iter()
            .map(|(r, p, w)| {
                (
                    r,
                    p,
                    ((w * scale).round() as u32).clamp(1, WORLD_PRODUCTS as u32),
                )
            })
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.2));
        const CHAPTERS: [u32; 96] = {
            let mut c = [0u32; 96];
            let mut i = 0;
            while i < 96 {
                c[i] = if i < 76 { i as u32 + 1 } else { i as u32 + 2 };
                i += 1;
            }
            c
        };
        let products = (0..WORLD_PRODUCTS)
            .map(|k| {
                let chapter = CHAPTERS[k % 96];
                let heading = 1 + k / 96;
                let sub = 10 + (k * 7) % 90;
                format!("{chapter:02}{heading:02}{sub:02}")
            })
            .collect();
        WorldGen {
            rng: Rng::new(seed),
            countries,
            products,
            pairs,
            year: 2017,
            rank: 0,
            at: 0,
            import: false,
            seed,
            i: 0,
        }
    }

    /// The next trade-record event.
    pub fn next_event(&mut self) -> pb::Event {
        let (id, r) = self.next_row();
        trade_event(id, &r)
    }

    fn next_row(&mut self) -> (String, Row) {
        // Past the last pair trading this rank: the next rank, or next year.
        if self.at >= self.pairs.len() || self.pairs[self.at].2 <= self.rank {
            self.at = 0;
            self.rank += 1;
            if self.rank as usize >= WORLD_PRODUCTS || self.pairs[0].2 <= self.rank {
                self.rank = 0;
                self.year += 1;
            }
        }
        let (r, p, _) = self.pairs[self.at];
        let flow = if self.import {
            pb::Flow::Import
        } else {
            pb::Flow::Export
        };
        if self.import {
            self.at += 1;
        }
        self.import = !self.import;
        // Values: heavy-tailed, from a thousand dollars to billions.
        let magnitude = 3 + self.rng.below(4) + self.rng.below(4);
        let row = Row {
            reporter: self.countries[r as usize],
            partner: self.countries[p as usize],
            flow,
            year: self.year,
            month: 0,
            hs: self.products[self.rank as usize].clone(),
            units: 10i64.pow(magnitude as u32) + self.rng.below(1_000_000) as i64,
            cents: self.rng.below(100) as i32,
        };
        let id = format!("world-{}-{}", self.seed, self.i);
        self.i += 1;
        (id, row)
    }
}

/// The `n` countries of a profile, large traders first.
fn countries_ranked(n: usize) -> Vec<&'static str> {
    let mut all = countries();
    for c in rust_iso3166::ALL_ALPHA2 {
        if all.len() >= n {
            break;
        }
        if !all.contains(c) {
            all.push(c);
        }
    }
    all.truncate(n);
    all
}

/// Rows of either profile.
enum Rows {
    Mixed(TradeGen),
    World(WorldGen),
}

impl Rows {
    fn next_row(&mut self) -> (String, Row) {
        match self {
            Rows::Mixed(g) => g.next_row(),
            Rows::World(g) => g.next_row(),
        }
    }
}

/// Runs the command.
pub fn run(args: GenArgs) -> Result<u8, CliError> {
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut rows = match args.profile {
        GenProfile::Mixed => Rows::Mixed(TradeGen::new(args.seed)),
        GenProfile::World => Rows::World(WorldGen::new(args.seed)),
    };
    let mut csv = None;
    if args.format == GenFormat::Comtrade {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        w.write_record(GEN_HEADER.split(','))?;
        if args.agreements > 0 {
            eprintln!("caravan gen: agreements are written only as JSON Lines; none written");
        }
        csv = Some(w);
        out = Box::new(std::io::sink());
    }
    for _ in 0..args.records {
        let (id, r) = rows.next_row();
        match &mut csv {
            None => {
                let json =
                    crate::tools::jsonl::message_to_json(&trade_event(id, &r), "caravan.v1.Event")?;
                writeln!(out, "{json}")?;
            }
            Some(w) => {
                let alpha3 = |c: &str| rust_iso3166::from_alpha2(c).map_or("", |x| x.alpha3);
                let name = |c: &str| rust_iso3166::from_alpha2(c).map_or("", |x| x.name);
                let numeric = |c: &str| rust_iso3166::from_alpha2(c).map_or(0, |x| x.numeric);
                let (freq, period, ref_month) = if r.month == 0 {
                    ("A", r.year.to_string(), "52".to_owned())
                } else {
                    (
                        "M",
                        format!("{}{:02}", r.year, r.month),
                        r.month.to_string(),
                    )
                };
                let (flow_code, flow_desc) = match r.flow {
                    pb::Flow::Export => ("X", "Export"),
                    pb::Flow::Import => ("M", "Import"),
                    pb::Flow::ReExport => ("RX", "Re-export"),
                    _ => ("RM", "Re-import"),
                };
                let value = format!("{}.{:02}", r.units, r.cents);
                w.write_record([
                    "C",
                    freq,
                    &format!("{period}01"),
                    &r.year.to_string(),
                    &ref_month,
                    &period,
                    &numeric(r.reporter).to_string(),
                    alpha3(r.reporter),
                    name(r.reporter),
                    flow_code,
                    flow_desc,
                    &numeric(r.partner).to_string(),
                    alpha3(r.partner),
                    name(r.partner),
                    &r.hs,
                    "",
                    "",
                    "",
                    "",
                    &value,
                    &value,
                    &value,
                ])?;
            }
        }
    }
    match csv {
        Some(mut w) => w.flush()?,
        None => {
            let mut gen = TradeGen::new(args.seed);
            let (countries, cumulative) = (gen.countries.clone(), gen.cumulative.clone());
            write_agreements(&mut out, &mut gen.rng, &countries, &cumulative, &args)?;
            out.flush()?;
        }
    }
    Ok(0)
}

fn write_agreements(
    out: &mut dyn Write,
    rng: &mut Rng,
    countries: &[&'static str],
    cumulative: &[f64],
    args: &GenArgs,
) -> Result<(), CliError> {
    const KINDS: [pb::AgreementKind; 7] = [
        pb::AgreementKind::Declaration,
        pb::AgreementKind::MemorandumOfUnderstanding,
        pb::AgreementKind::IntergovernmentalAgreement,
        pb::AgreementKind::Treaty,
        pb::AgreementKind::CommercialContract,
        pb::AgreementKind::InvestmentAgreement,
        pb::AgreementKind::Other,
    ];
    for i in 0..args.agreements {
        let mut parties: Vec<String> = Vec::new();
        while parties.len() < 2 + rng.below(3) as usize {
            let c = countries[pick(rng, cumulative)].to_owned();
            if !parties.contains(&c) {
                parties.push(c);
            }
        }
        let sector = 1 + rng.below(14) as i32;
        let id = format!("gen-{}-agreement-{i}", args.seed);
        let year = 2015 + rng.below(10) as i32;
        let event = pb::Event {
            event_id: format!("gen-{}-a{i}", args.seed),
            feed: "gen".into(),
            occurred_at: None,
            payload: Some(pb::event::Payload::Agreement(pb::Agreement {
                agreement_id: id.clone(),
                title: format!("Synthetic cooperation agreement {i}"),
                parties,
                signed_on: Some(pb::Date {
                    year,
                    month: 1 + rng.below(12) as i32,
                    day: 1 + rng.below(28) as i32,
                }),
                venue: String::new(),
                kind: KINDS[rng.below(7) as usize] as i32,
                sectors: vec![sector],
                value: None,
                status: pb::AgreementStatus::Signed as i32,
                source: "caravan gen (synthetic)".into(),
                note: String::new(),
            })),
        };
        writeln!(
            out,
            "{}",
            crate::tools::jsonl::message_to_json(&event, "caravan.v1.Event")?
        )?;
        if i % 10 == 0 {
            let change = pb::Event {
                event_id: format!("gen-{}-s{i}", args.seed),
                feed: "gen".into(),
                occurred_at: None,
                payload: Some(pb::event::Payload::AgreementStatusChanged(
                    pb::AgreementStatusChanged {
                        agreement_id: id,
                        status: pb::AgreementStatus::InForce as i32,
                        effective_on: Some(pb::Date {
                            year: year + 1,
                            month: 1,
                            day: 1,
                        }),
                        note: String::new(),
                    },
                )),
            };
            writeln!(
                out,
                "{}",
                crate::tools::jsonl::message_to_json(&change, "caravan.v1.Event")?
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_world_profile_has_the_shape_of_a_year_of_world_hs6_trade() {
        let mut g = WorldGen::new(1);
        let pairs = g.pairs.len();
        assert!((24_000..=30_000).contains(&pairs), "{pairs} pairs");
        let per_year: usize = g.pairs.iter().map(|p| 2 * p.2 as usize).sum();
        assert!((10_000_000..=12_000_000).contains(&per_year), "{per_year}");
        // Skewed: every pair trades the most traded product, few the least.
        let rare = g
            .pairs
            .iter()
            .filter(|p| p.2 as usize == WORLD_PRODUCTS)
            .count();
        assert!(
            rare * 20 < pairs,
            "{rare} of {pairs} pairs trade every product"
        );
        let mut keys = HashSet::new();
        let mut reporters = HashSet::new();
        for n in 0..120_000 {
            let (id, r) = g.next_row();
            assert!(
                keys.insert((r.reporter, r.partner, r.flow as i32, r.year, r.hs.clone())),
                "{n}"
            );
            reporters.insert(r.reporter);
            let event = trade_event(id, &r);
            assert!(crate::convert::parse_event(&event).is_ok(), "{event:?}");
            if n == 2 * pairs {
                // One round of the most traded product covers every reporter.
                assert_eq!(reporters.len(), WORLD_REPORTERS);
            }
        }
        assert!(g.year == 2017 && g.rank >= 2, "{} {}", g.year, g.rank);
    }
}
