//! Query requests → domain queries: every field parsed, every bad field
//! reported at once (INVALID_ARGUMENT with its field path), and the rules
//! across fields checked (one commodity level, sectors only below the
//! all-commodities level, a range's bounds of its frequency).
//!
//! Also what a request says about resuming: its `as_of_sequence`, its
//! `resume_after` cursor, and its fingerprint (the request without those
//! two), which a cursor must match.
//!
//! Depends on the generated requests, `convert`, the domain and the views'
//! query types.

use crate::convert;
use crate::domain::{
    AgreementKind, AgreementStatus, BitSet, Country, CountrySet, Date, Flow, Period, Sector,
    SectorSet, Violations,
};
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::views::{CommodityLevel, FigureFilter, GroupDim, PeriodRange};
use prost::Message;

/// StreamTradeRecords.
pub(super) struct RecordsQuery {
    pub filter: FigureFilter,
    /// Each record's event id, feed, author and time, from the log.
    pub provenance: bool,
}

/// StreamCountryCooperation.
pub(super) struct CountryQuery {
    pub country: Country,
    pub partners: CountrySet,
    pub sectors: SectorSet,
    pub range: PeriodRange,
    pub level: CommodityLevel,
    pub breakdown: CommodityLevel,
}

/// StreamSectorCooperation.
pub(super) struct SectorQuery {
    pub sector: Sector,
    pub countries: CountrySet,
    pub range: PeriodRange,
    pub level: CommodityLevel,
}

/// StreamAgreements.
pub(super) struct AgreementsQuery {
    pub parties: CountrySet,
    pub sectors: SectorSet,
    pub kinds: BitSet<AgreementKind>,
    pub statuses: BitSet<AgreementStatus>,
    pub signed_from: Option<Date>,
    pub signed_to: Option<Date>,
}

/// Aggregate.
pub(super) struct AggregateQuery {
    pub filter: FigureFilter,
    pub dims: Vec<GroupDim>,
}

/// What every query request carries for resuming.
pub(super) trait Resumable: Message + Clone {
    fn as_of_sequence(&self) -> u64;
    fn resume_after(&self) -> &[u8];
    /// xxh3 of the request without `resume_after` and `as_of_sequence`: a
    /// cursor resumes only the request it came from.
    fn fingerprint(&self) -> u64;
}

macro_rules! resumable {
    ($($request:ty),+) => {$(
        impl Resumable for $request {
            fn as_of_sequence(&self) -> u64 {
                self.as_of_sequence
            }
            fn resume_after(&self) -> &[u8] {
                &self.resume_after
            }
            fn fingerprint(&self) -> u64 {
                let bare = Self {
                    resume_after: Vec::new(),
                    as_of_sequence: 0,
                    ..self.clone()
                };
                xxhash_rust::xxh3::xxh3_64(&bare.encode_to_vec())
            }
        }
    )+};
}

resumable!(
    pb::StreamTradeRecordsRequest,
    pb::StreamCountryCooperationRequest,
    pb::StreamSectorCooperationRequest,
    pb::StreamAgreementsRequest,
    pb::AggregateRequest
);

const NEEDS_LEVEL_BELOW_ALL: &str =
    "needs level HS2, HS4, HS6 or SECTOR (all-commodities figures have no sector)";

fn level(raw: i32, default: CommodityLevel) -> Result<CommodityLevel, String> {
    Ok(match pb::CommodityLevel::try_from(raw) {
        Ok(pb::CommodityLevel::Unspecified) => default,
        Ok(pb::CommodityLevel::All) => CommodityLevel::All,
        Ok(pb::CommodityLevel::Hs2) => CommodityLevel::Hs2,
        Ok(pb::CommodityLevel::Hs4) => CommodityLevel::Hs4,
        Ok(pb::CommodityLevel::Hs6) => CommodityLevel::Hs6,
        Ok(pb::CommodityLevel::Sector) => CommodityLevel::Sector,
        Err(_) => return Err(format!("{raw} is not a known commodity level")),
    })
}

/// A level below all commodities (a sector view, a breakdown).
fn level_below_all(raw: i32, default: CommodityLevel) -> Result<CommodityLevel, String> {
    match level(raw, default)? {
        CommodityLevel::All => Err("must be HS2, HS4, HS6 or SECTOR".into()),
        other => Ok(other),
    }
}

fn countries(v: &mut Violations, field: &str, raw: &[String]) -> CountrySet {
    v.each(field, raw, |c| Country::parse(c))
}

fn sectors(v: &mut Violations, field: &str, raw: &[i32]) -> SectorSet {
    v.each(field, raw, |s| convert::sector(*s))
}

fn periods(v: &mut Violations, field: &str, raw: Option<&pb::PeriodRange>) -> Option<PeriodRange> {
    let Some(r) = raw else {
        v.bad(field, "is required (at least its frequency)");
        return None;
    };
    let frequency = v.check(
        &format!("{field}.frequency"),
        convert::frequency(r.frequency),
    )?;
    let mut bound = |name: &str, p: Option<&pb::Period>| -> Result<Option<Period>, ()> {
        let Some(p) = p else { return Ok(None) };
        let path = format!("{field}.{name}");
        match v.nested(&path, convert::period(p)) {
            Some(p) if p.frequency() == frequency => Ok(Some(p)),
            Some(_) => {
                v.bad(&path, "must have the range's frequency");
                Err(())
            }
            None => Err(()),
        }
    };
    let from = bound("from", r.from.as_ref()).ok()?;
    let to = bound("to", r.to.as_ref()).ok()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            v.bad(&format!("{field}.to"), "must not be before `from`");
            return None;
        }
    }
    Some(PeriodRange {
        frequency,
        from,
        to,
    })
}

fn figure_filter(
    v: &mut Violations,
    field: &str,
    raw: Option<&pb::FigureFilter>,
) -> Option<FigureFilter> {
    let Some(f) = raw else {
        v.bad(field, "is required (at least periods.frequency)");
        return None;
    };
    let reporters = countries(v, &format!("{field}.reporters"), &f.reporters);
    let partners = countries(v, &format!("{field}.partners"), &f.partners);
    let flows: BitSet<Flow> = v.each(&format!("{field}.flows"), &f.flows, |x| convert::flow(*x));
    let lvl = v.check(
        &format!("{field}.level"),
        level(f.level, CommodityLevel::All),
    )?;
    let hs_prefix = if f.hs_prefix.is_empty() {
        None
    } else if !lvl.is_hs() {
        v.bad(&format!("{field}.hs_prefix"), "needs level HS2, HS4 or HS6");
        None
    } else if f.hs_prefix.len() > 6 || !f.hs_prefix.bytes().all(|b| b.is_ascii_digit()) {
        v.bad(&format!("{field}.hs_prefix"), "must be 1 to 6 digits");
        None
    } else {
        Some(f.hs_prefix.clone())
    };
    let sectors = sectors(v, &format!("{field}.sectors"), &f.sectors);
    if !sectors.is_empty() && lvl == CommodityLevel::All {
        v.bad(&format!("{field}.sectors"), NEEDS_LEVEL_BELOW_ALL);
    }
    let periods = periods(v, &format!("{field}.periods"), f.periods.as_ref())?;
    Some(FigureFilter {
        reporters,
        partners,
        flows,
        level: lvl,
        hs_prefix,
        sectors,
        periods,
    })
}

pub(super) fn records(req: &pb::StreamTradeRecordsRequest) -> Result<RecordsQuery, Error> {
    let mut v = Violations::default();
    let filter = figure_filter(&mut v, "filter", req.filter.as_ref());
    Ok(v.finish(filter.map(|filter| RecordsQuery {
        filter,
        provenance: req.include_provenance,
    }))?)
}

pub(super) fn country(req: &pb::StreamCountryCooperationRequest) -> Result<CountryQuery, Error> {
    let mut v = Violations::default();
    let country = v.check("country", Country::parse(&req.country));
    let partners = countries(&mut v, "partners", &req.partners);
    let sectors = sectors(&mut v, "sectors", &req.sectors);
    let range = periods(&mut v, "periods", req.periods.as_ref());
    let level = v.check("level", level(req.level, CommodityLevel::All));
    if !sectors.is_empty() && level == Some(CommodityLevel::All) {
        v.bad("sectors", NEEDS_LEVEL_BELOW_ALL);
    }
    let breakdown = v.check(
        "breakdown_level",
        level_below_all(req.breakdown_level, CommodityLevel::Sector),
    );
    let query = (|| {
        Some(CountryQuery {
            country: country?,
            partners,
            sectors,
            range: range?,
            level: level?,
            breakdown: breakdown?,
        })
    })();
    Ok(v.finish(query)?)
}

pub(super) fn sector(req: &pb::StreamSectorCooperationRequest) -> Result<SectorQuery, Error> {
    let mut v = Violations::default();
    let sector = v.check("sector", convert::sector(req.sector));
    let countries = countries(&mut v, "countries", &req.countries);
    let range = periods(&mut v, "periods", req.periods.as_ref());
    let level = v.check("level", level_below_all(req.level, CommodityLevel::Sector));
    let query = (|| {
        Some(SectorQuery {
            sector: sector?,
            countries,
            range: range?,
            level: level?,
        })
    })();
    Ok(v.finish(query)?)
}

pub(super) fn agreements(req: &pb::StreamAgreementsRequest) -> Result<AgreementsQuery, Error> {
    let mut v = Violations::default();
    let parties = countries(&mut v, "parties", &req.parties);
    let sectors = sectors(&mut v, "sectors", &req.sectors);
    let kinds = v.each("kinds", &req.kinds, |k| convert::kind(*k));
    let statuses = v.each("statuses", &req.statuses, |s| convert::status(*s));
    let signed_from = req
        .signed_from
        .as_ref()
        .and_then(|d| v.check("signed_from", convert::date(d)));
    let signed_to = req
        .signed_to
        .as_ref()
        .and_then(|d| v.check("signed_to", convert::date(d)));
    if let (Some(from), Some(to)) = (signed_from, signed_to) {
        if from > to {
            v.bad("signed_to", "must not be before `signed_from`");
        }
    }
    Ok(v.finish(Some(AgreementsQuery {
        parties,
        sectors,
        kinds,
        statuses,
        signed_from,
        signed_to,
    }))?)
}

pub(super) fn aggregate(req: &pb::AggregateRequest) -> Result<AggregateQuery, Error> {
    let mut v = Violations::default();
    let filter = figure_filter(&mut v, "filter", req.filter.as_ref());
    let mut dims = Vec::new();
    for (i, g) in req.group_by.iter().enumerate() {
        let field = format!("group_by[{i}]");
        let dim = match pb::GroupBy::try_from(*g) {
            Ok(pb::GroupBy::Reporter) => GroupDim::Reporter,
            Ok(pb::GroupBy::Partner) => GroupDim::Partner,
            Ok(pb::GroupBy::Flow) => GroupDim::Flow,
            Ok(pb::GroupBy::Sector) => GroupDim::Sector,
            Ok(pb::GroupBy::Period) => GroupDim::Period,
            _ => {
                v.bad(&field, "is not a known grouping");
                continue;
            }
        };
        if dims.contains(&dim) {
            v.bad(&field, "is listed more than once");
        }
        dims.push(dim);
    }
    if dims.contains(&GroupDim::Sector)
        && filter
            .as_ref()
            .is_some_and(|f| f.level == CommodityLevel::All)
    {
        v.bad(
            "group_by",
            "grouping by sector needs filter.level HS2, HS4, HS6 or SECTOR",
        );
    }
    Ok(v.finish(filter.map(|filter| AggregateQuery { filter, dims }))?)
}
