//! Wire → domain: parses generated protobuf messages into domain types,
//! collecting a field violation for every bad field (paths as protobuf field
//! names, e.g. `trade_record.period.number`). Used for what arrives from the
//! network and, because the disk is not trusted either, for what is read back
//! from the store.
//!
//! Depends on the domain and the generated messages only.

use crate::domain::{
    Agreement, AgreementId, AgreementKind, AgreementParts, AgreementStatus, AgreementStatusChanged,
    CommodityScope, Country, Date, Event, EventId, FeedName, FieldViolation, Flow, Frequency,
    HsCode, Payload, Period, Quantity, Sector, Text, Timestamp, TradeFigureKey, TradeRecord,
    TradeRecordRetracted, UsdAmount, Violations,
};
use crate::proto::v1 as pb;
use prost::Message;

/// The largest encoded event accepted from a feed, in bytes. Stored events
/// (this plus the sequence and ingestion time) then fit the store's 4 KiB
/// value limit; see docs/ARCHITECTURE.md.
pub(crate) const MAX_EVENT_BYTES: usize = 3_900;

fn required<T>(field: Option<T>) -> Result<T, String> {
    field.ok_or_else(|| "is required".to_owned())
}

fn enum_value<E: TryFrom<i32>>(raw: i32, what: &str) -> Result<E, String> {
    if raw == 0 {
        return Err(format!("is required (a {what} other than UNSPECIFIED)"));
    }
    E::try_from(raw).map_err(|_| format!("{raw} is not a known {what}"))
}

pub(crate) fn flow(raw: i32) -> Result<Flow, String> {
    Ok(match enum_value::<pb::Flow>(raw, "flow")? {
        pb::Flow::Export => Flow::Export,
        pb::Flow::Import => Flow::Import,
        pb::Flow::ReExport => Flow::ReExport,
        pb::Flow::ReImport => Flow::ReImport,
        pb::Flow::Turnover => Flow::Turnover,
        pb::Flow::Unspecified => return Err("is required".into()),
    })
}

pub(crate) fn frequency(raw: i32) -> Result<Frequency, String> {
    Ok(match enum_value::<pb::Frequency>(raw, "frequency")? {
        pb::Frequency::Annual => Frequency::Annual,
        pb::Frequency::Quarterly => Frequency::Quarterly,
        pb::Frequency::Monthly => Frequency::Monthly,
        pb::Frequency::YearToDate => Frequency::YearToDate,
        pb::Frequency::Unspecified => return Err("is required".into()),
    })
}

/// Parses a wire sector enum value.
pub(crate) fn sector(raw: i32) -> Result<Sector, String> {
    Ok(match enum_value::<pb::Sector>(raw, "sector")? {
        pb::Sector::AgricultureFood => Sector::AgricultureFood,
        pb::Sector::Energy => Sector::Energy,
        pb::Sector::MiningMetals => Sector::MiningMetals,
        pb::Sector::Chemicals => Sector::Chemicals,
        pb::Sector::MachineryElectronics => Sector::MachineryElectronics,
        pb::Sector::Textiles => Sector::Textiles,
        pb::Sector::ConstructionInfrastructure => Sector::ConstructionInfrastructure,
        pb::Sector::TransportLogistics => Sector::TransportLogistics,
        pb::Sector::DigitalEconomy => Sector::DigitalEconomy,
        pb::Sector::FinanceInvestment => Sector::FinanceInvestment,
        pb::Sector::Tourism => Sector::Tourism,
        pb::Sector::Healthcare => Sector::Healthcare,
        pb::Sector::GreenDevelopment => Sector::GreenDevelopment,
        pb::Sector::Other => Sector::Other,
        pb::Sector::Unspecified => return Err("is required".into()),
    })
}

pub(crate) fn kind(raw: i32) -> Result<AgreementKind, String> {
    use pb::AgreementKind as K;
    Ok(match enum_value::<K>(raw, "agreement kind")? {
        K::Declaration => AgreementKind::Declaration,
        K::MemorandumOfUnderstanding => AgreementKind::MemorandumOfUnderstanding,
        K::IntergovernmentalAgreement => AgreementKind::IntergovernmentalAgreement,
        K::Treaty => AgreementKind::Treaty,
        K::CommercialContract => AgreementKind::CommercialContract,
        K::InvestmentAgreement => AgreementKind::InvestmentAgreement,
        K::Other => AgreementKind::Other,
        K::Unspecified => return Err("is required".into()),
    })
}

pub(crate) fn status(raw: i32) -> Result<AgreementStatus, String> {
    use pb::AgreementStatus as S;
    Ok(match enum_value::<S>(raw, "agreement status")? {
        S::Signed => AgreementStatus::Signed,
        S::InForce => AgreementStatus::InForce,
        S::Expired => AgreementStatus::Expired,
        S::Terminated => AgreementStatus::Terminated,
        S::Unspecified => return Err("is required".into()),
    })
}

/// Parses a wire period; violations name `frequency`, `year` or `number`.
pub(crate) fn period(p: &pb::Period) -> Result<Period, FieldViolation> {
    let f = frequency(p.frequency).map_err(|d| FieldViolation::new("frequency", d))?;
    Period::new(p.year, f, p.number)
}

fn commodity(c: &pb::CommodityScope) -> Result<CommodityScope, FieldViolation> {
    use pb::commodity_scope::Scope;
    match &c.scope {
        None => Err(FieldViolation::new(
            "",
            "one of all, hs_code or sector is required",
        )),
        Some(Scope::All(_)) => Ok(CommodityScope::All),
        Some(Scope::HsCode(code)) => HsCode::parse(code)
            .map(CommodityScope::Hs)
            .map_err(|d| FieldViolation::new("hs_code", d)),
        Some(Scope::Sector(s)) => sector(*s)
            .map(CommodityScope::Sector)
            .map_err(|d| FieldViolation::new("sector", d)),
    }
}

fn money(m: &pb::Money) -> Result<UsdAmount, FieldViolation> {
    UsdAmount::new(&m.currency_code, m.units, m.nanos)
}

pub(crate) fn date(d: &pb::Date) -> Result<Date, String> {
    Date::new(d.year, d.month, d.day)
}

pub(crate) fn timestamp(t: &pbjson_types::Timestamp) -> Result<Timestamp, String> {
    Timestamp::new(t.seconds, t.nanos)
}

/// Parses the five fields of a natural key, wherever they sit.
fn figure_key(
    v: &mut Violations,
    reporter: &str,
    partner: &str,
    flow_raw: i32,
    period_msg: Option<&pb::Period>,
    commodity_msg: Option<&pb::CommodityScope>,
) -> Option<TradeFigureKey> {
    let reporter = v.check("reporter", Country::parse(reporter));
    let partner = v.check("partner", Country::parse(partner));
    let flow = v.check("flow", flow(flow_raw));
    let period = v
        .check("period", required(period_msg))
        .and_then(|p| v.nested("period", period(p)));
    let commodity = v
        .check("commodity", required(commodity_msg))
        .and_then(|c| v.nested("commodity", commodity(c)));
    let (r, p, f, per, c) = (reporter?, partner?, flow?, period?, commodity?);
    v.nested("", TradeFigureKey::new(r, p, f, per, c))
}

fn trade_record(r: &pb::TradeRecord) -> Result<TradeRecord, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let key = figure_key(
        &mut v,
        &r.reporter,
        &r.partner,
        r.flow,
        r.period.as_ref(),
        r.commodity.as_ref(),
    );
    let value = v
        .check("value", required(r.value.as_ref()))
        .and_then(|m| v.nested("value", money(m)));
    let quantity = match &r.quantity {
        None => Some(None),
        Some(q) => v
            .nested("quantity", Quantity::new(q.whole, q.nanos, &q.unit))
            .map(Some),
    };
    let source = v.check("source", Text::parse(&r.source));
    let note = v.check("note", Text::parse(&r.note));
    let record = (|| {
        Some(TradeRecord {
            key: key?,
            value: value?,
            quantity: quantity?,
            source: source?,
            note: note?,
        })
    })();
    v.finish(record)
}

fn retraction(r: &pb::TradeRecordRetracted) -> Result<TradeRecordRetracted, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let key = v.check("key", required(r.key.as_ref())).and_then(|k| {
        let mut inner = Violations::default();
        let key = figure_key(
            &mut inner,
            &k.reporter,
            &k.partner,
            k.flow,
            k.period.as_ref(),
            k.commodity.as_ref(),
        );
        v.nested_many("key", inner.finish(key))
    });
    let reason = v.check("reason", Text::parse_required(&r.reason));
    let retracted = (|| {
        Some(TradeRecordRetracted {
            key: key?,
            reason: reason?,
        })
    })();
    v.finish(retracted)
}

fn agreement(a: &pb::Agreement) -> Result<Agreement, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let id = v.check("agreement_id", AgreementId::parse(&a.agreement_id));
    let title = v.check("title", Text::parse_required(&a.title));
    let mut parties = Vec::with_capacity(a.parties.len());
    for (i, p) in a.parties.iter().enumerate() {
        if let Some(c) = v.check(&format!("parties[{i}]"), Country::parse(p)) {
            parties.push(c);
        }
    }
    let mut sectors = Vec::with_capacity(a.sectors.len());
    for (i, s) in a.sectors.iter().enumerate() {
        if let Some(s) = v.check(&format!("sectors[{i}]"), sector(*s)) {
            sectors.push(s);
        }
    }
    let signed_on = v
        .check("signed_on", required(a.signed_on.as_ref()))
        .and_then(|d| v.check("signed_on", date(d)));
    let venue = v.check("venue", Text::parse(&a.venue));
    let kind = v.check("kind", kind(a.kind));
    let value = match &a.value {
        None => Some(None),
        Some(m) => v.nested("value", money(m)).map(Some),
    };
    let status = v.check("status", status(a.status));
    let source = v.check("source", Text::parse(&a.source));
    let note = v.check("note", Text::parse(&a.note));
    let parts = (|| {
        Some(AgreementParts {
            id: id?,
            title: title?,
            signed_on: signed_on?,
            venue: venue?,
            kind: kind?,
            value: value?,
            status: status?,
            source: source?,
            note: note?,
        })
    })();
    let agreement = match parts {
        Some(parts) if v.is_empty() => v.nested_many("", Agreement::new(parts, parties, sectors)),
        _ => None,
    };
    v.finish(agreement)
}

fn status_changed(
    s: &pb::AgreementStatusChanged,
) -> Result<AgreementStatusChanged, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let agreement_id = v.check("agreement_id", AgreementId::parse(&s.agreement_id));
    let st = v.check("status", status(s.status));
    let effective_on = v
        .check("effective_on", required(s.effective_on.as_ref()))
        .and_then(|d| v.check("effective_on", date(d)));
    let note = v.check("note", Text::parse(&s.note));
    let changed = (|| {
        Some(AgreementStatusChanged {
            agreement_id: agreement_id?,
            status: st?,
            effective_on: effective_on?,
            note: note?,
        })
    })();
    v.finish(changed)
}

/// Parses a feed's event. Violation paths are relative to the event
/// (`event_id`, `trade_record.period.number`, …); an oversized event is
/// reported against the empty path.
pub fn parse_event(e: &pb::Event) -> Result<Event, Vec<FieldViolation>> {
    let size = e.encoded_len();
    if size > MAX_EVENT_BYTES {
        return Err(vec![FieldViolation::new(
            "",
            format!("the encoded event is {size} bytes; the limit is {MAX_EVENT_BYTES}"),
        )]);
    }
    use pb::event::Payload as P;
    let mut v = Violations::default();
    let id = v.check("event_id", EventId::parse(&e.event_id));
    let feed = v.check("feed", FeedName::parse(&e.feed));
    let occurred_at = match &e.occurred_at {
        None => Some(None),
        Some(t) => v.check("occurred_at", timestamp(t)).map(Some),
    };
    let payload = match &e.payload {
        None => {
            v.bad(
                "payload",
                "one of trade_record, trade_record_retracted, agreement or agreement_status_changed is required",
            );
            None
        }
        Some(P::TradeRecord(r)) => v
            .nested_many("trade_record", trade_record(r))
            .map(Payload::TradeRecord),
        Some(P::TradeRecordRetracted(r)) => v
            .nested_many("trade_record_retracted", retraction(r))
            .map(Payload::TradeRecordRetracted),
        Some(P::Agreement(a)) => v
            .nested_many("agreement", agreement(a))
            .map(Payload::Agreement),
        Some(P::AgreementStatusChanged(s)) => v
            .nested_many("agreement_status_changed", status_changed(s))
            .map(Payload::AgreementStatusChanged),
    };
    let event = (|| {
        Some(Event {
            id: id?,
            feed: feed?,
            occurred_at: occurred_at?,
            payload: payload?,
        })
    })();
    v.finish(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> pb::Event {
        pb::Event {
            event_id: "e-1".into(),
            feed: "mofcom".into(),
            occurred_at: None,
            payload: Some(pb::event::Payload::TradeRecord(pb::TradeRecord {
                reporter: "CHN".into(),
                partner: "kaz".into(),
                flow: pb::Flow::Turnover as i32,
                period: Some(pb::Period {
                    year: 2022,
                    frequency: pb::Frequency::Annual as i32,
                    number: 0,
                }),
                commodity: Some(pb::CommodityScope {
                    scope: Some(pb::commodity_scope::Scope::HsCode("2711".into())),
                }),
                value: Some(pb::Money {
                    currency_code: "USD".into(),
                    units: 31_200_000_000,
                    nanos: 0,
                }),
                quantity: None,
                source: "S6".into(),
                note: " verified ".into(),
            })),
        }
    }

    #[test]
    fn parse_then_render_round_trips_normalised() {
        let event = parse_event(&sample()).unwrap();
        let wire = crate::convert::pb_event(&event);
        let Some(pb::event::Payload::TradeRecord(r)) = &wire.payload else {
            panic!("payload lost")
        };
        assert_eq!((r.reporter.as_str(), r.partner.as_str()), ("CN", "KZ"));
        assert_eq!(r.note, "verified");
        assert_eq!(parse_event(&wire).unwrap(), event);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut e = sample();
        e.event_id.clear();
        if let Some(pb::event::Payload::TradeRecord(r)) = &mut e.payload {
            r.partner = "CN".into();
            r.period = Some(pb::Period {
                year: 2022,
                frequency: pb::Frequency::Monthly as i32,
                number: 13,
            });
            r.value = Some(pb::Money {
                currency_code: "EUR".into(),
                units: 1,
                nanos: 0,
            });
        }
        let fields: Vec<String> = parse_event(&e)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "event_id",
                "trade_record.period.number",
                "trade_record.value.currency_code"
            ]
        );
    }
}
