//! The edge between the wire and the domain: parses generated protobuf
//! messages into domain types, collecting a field violation for every bad
//! field (paths as protobuf field names, e.g. `trade_record.period.number`),
//! and turns domain values back into protobuf messages. It also defines how a
//! stored event is encoded on disk (as the `StoredEvent` protobuf message, so
//! the on-disk format evolves with protobuf's compatibility rules).
//!
//! Depends on the domain and the generated code; must not depend on tonic
//! services, on the storage module or on sled.

use crate::domain::{
    Agreement, AgreementId, AgreementKind, AgreementParts, AgreementStatus, AgreementStatusChanged,
    CommodityScope, Country, Date, Event, EventId, FeedName, FieldViolation, Flow, Frequency,
    HsCode, Payload, Period, Quantity, Sector, StoredEvent, Text, Timestamp, TradeFigureKey,
    TradeRecord, TradeRecordRetracted, UsdAmount,
};
use crate::proto::v1 as pb;
use prost::Message;

/// The largest encoded event accepted from a feed, in bytes. Stored events
/// (this plus the sequence and ingestion time) then fit the store's 4 KiB
/// value limit; see docs/ARCHITECTURE.md.
pub const MAX_EVENT_BYTES: usize = 3_900;

/// Collects violations while parsing a message.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records `Err(description)` as a violation of `field`.
    fn check<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|d| self.0.push(FieldViolation::new(field, d)))
            .ok()
    }

    /// Records violations reported relative to `prefix`.
    fn nested<T>(&mut self, prefix: &str, r: Result<T, FieldViolation>) -> Option<T> {
        r.map_err(|v| self.0.push(v.nested(prefix))).ok()
    }

    fn nested_many<T>(&mut self, prefix: &str, r: Result<T, Vec<FieldViolation>>) -> Option<T> {
        r.map_err(|vs| self.0.extend(vs.into_iter().map(|v| v.nested(prefix))))
            .ok()
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldViolation>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ if self.0.is_empty() => Err(vec![FieldViolation::new("", "is invalid")]),
            _ => Err(self.0),
        }
    }
}

fn required<T>(field: Option<T>) -> Result<T, String> {
    field.ok_or_else(|| "is required".to_owned())
}

fn enum_value<E: TryFrom<i32>>(raw: i32, what: &str) -> Result<E, String> {
    if raw == 0 {
        return Err(format!("is required (a {what} other than UNSPECIFIED)"));
    }
    E::try_from(raw).map_err(|_| format!("{raw} is not a known {what}"))
}

pub fn flow(raw: i32) -> Result<Flow, String> {
    Ok(match enum_value::<pb::Flow>(raw, "flow")? {
        pb::Flow::Export => Flow::Export,
        pb::Flow::Import => Flow::Import,
        pb::Flow::ReExport => Flow::ReExport,
        pb::Flow::ReImport => Flow::ReImport,
        pb::Flow::Turnover => Flow::Turnover,
        pb::Flow::Unspecified => return Err("is required".into()),
    })
}

pub fn frequency(raw: i32) -> Result<Frequency, String> {
    Ok(match enum_value::<pb::Frequency>(raw, "frequency")? {
        pb::Frequency::Annual => Frequency::Annual,
        pb::Frequency::Quarterly => Frequency::Quarterly,
        pb::Frequency::Monthly => Frequency::Monthly,
        pb::Frequency::YearToDate => Frequency::YearToDate,
        pb::Frequency::Unspecified => return Err("is required".into()),
    })
}

/// Parses a wire sector enum value.
pub fn sector(raw: i32) -> Result<Sector, String> {
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

pub fn kind(raw: i32) -> Result<AgreementKind, String> {
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

pub fn status(raw: i32) -> Result<AgreementStatus, String> {
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
pub fn period(p: &pb::Period) -> Result<Period, FieldViolation> {
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

pub fn date(d: &pb::Date) -> Result<Date, String> {
    Date::new(d.year, d.month, d.day)
}

fn timestamp(t: &prost_types::Timestamp) -> Result<Timestamp, String> {
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
        v.0.extend(inner.0.into_iter().map(|fv| fv.nested("key")));
        key
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
        Some(parts) if v.0.is_empty() => v.nested_many("", Agreement::new(parts, parties, sectors)),
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
            v.0.push(FieldViolation::new(
                "payload",
                "one of trade_record, trade_record_retracted, agreement or agreement_status_changed is required",
            ));
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

// ---- domain → wire ----------------------------------------------------------

pub fn pb_flow(f: Flow) -> pb::Flow {
    match f {
        Flow::Export => pb::Flow::Export,
        Flow::Import => pb::Flow::Import,
        Flow::ReExport => pb::Flow::ReExport,
        Flow::ReImport => pb::Flow::ReImport,
        Flow::Turnover => pb::Flow::Turnover,
    }
}

/// The wire value of a sector.
pub fn pb_sector(s: Sector) -> pb::Sector {
    match s {
        Sector::AgricultureFood => pb::Sector::AgricultureFood,
        Sector::Energy => pb::Sector::Energy,
        Sector::MiningMetals => pb::Sector::MiningMetals,
        Sector::Chemicals => pb::Sector::Chemicals,
        Sector::MachineryElectronics => pb::Sector::MachineryElectronics,
        Sector::Textiles => pb::Sector::Textiles,
        Sector::ConstructionInfrastructure => pb::Sector::ConstructionInfrastructure,
        Sector::TransportLogistics => pb::Sector::TransportLogistics,
        Sector::DigitalEconomy => pb::Sector::DigitalEconomy,
        Sector::FinanceInvestment => pb::Sector::FinanceInvestment,
        Sector::Tourism => pb::Sector::Tourism,
        Sector::Healthcare => pb::Sector::Healthcare,
        Sector::GreenDevelopment => pb::Sector::GreenDevelopment,
        Sector::Other => pb::Sector::Other,
    }
}

pub fn pb_period(p: &Period) -> pb::Period {
    let frequency = match p.frequency() {
        Frequency::Annual => pb::Frequency::Annual,
        Frequency::Quarterly => pb::Frequency::Quarterly,
        Frequency::Monthly => pb::Frequency::Monthly,
        Frequency::YearToDate => pb::Frequency::YearToDate,
    };
    pb::Period {
        year: i32::from(p.year()),
        frequency: frequency as i32,
        number: i32::from(p.number()),
    }
}

pub fn pb_commodity(c: &CommodityScope) -> pb::CommodityScope {
    use pb::commodity_scope::Scope;
    let scope = match c {
        CommodityScope::All => Scope::All(pb::AllCommodities {}),
        CommodityScope::Hs(h) => Scope::HsCode(h.as_str().to_owned()),
        CommodityScope::Sector(s) => Scope::Sector(pb_sector(*s) as i32),
    };
    pb::CommodityScope { scope: Some(scope) }
}

/// The wire form of an exact USD amount.
pub fn pb_money(m: &UsdAmount) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        // Parsed amounts never exceed 10^15 units.
        units: i64::try_from(m.units()).unwrap_or(i64::MAX),
        nanos: m.sub_nanos() as i32,
    }
}

pub fn pb_date(d: &Date) -> pb::Date {
    pb::Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

pub fn pb_timestamp(t: &Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.seconds(),
        nanos: t.nanos() as i32,
    }
}

pub fn pb_status(s: AgreementStatus) -> pb::AgreementStatus {
    match s {
        AgreementStatus::Signed => pb::AgreementStatus::Signed,
        AgreementStatus::InForce => pb::AgreementStatus::InForce,
        AgreementStatus::Expired => pb::AgreementStatus::Expired,
        AgreementStatus::Terminated => pb::AgreementStatus::Terminated,
    }
}

pub fn pb_kind(k: AgreementKind) -> pb::AgreementKind {
    use pb::AgreementKind as K;
    match k {
        AgreementKind::Declaration => K::Declaration,
        AgreementKind::MemorandumOfUnderstanding => K::MemorandumOfUnderstanding,
        AgreementKind::IntergovernmentalAgreement => K::IntergovernmentalAgreement,
        AgreementKind::Treaty => K::Treaty,
        AgreementKind::CommercialContract => K::CommercialContract,
        AgreementKind::InvestmentAgreement => K::InvestmentAgreement,
        AgreementKind::Other => K::Other,
    }
}

fn pb_key(k: &TradeFigureKey) -> pb::TradeFigureKey {
    pb::TradeFigureKey {
        reporter: k.reporter().alpha2().to_owned(),
        partner: k.partner().alpha2().to_owned(),
        flow: pb_flow(k.flow) as i32,
        period: Some(pb_period(&k.period)),
        commodity: Some(pb_commodity(&k.commodity)),
    }
}

/// The wire form of an event (normalised: countries as alpha-2).
pub fn pb_event(e: &Event) -> pb::Event {
    use pb::event::Payload as P;
    let payload = match &e.payload {
        Payload::TradeRecord(r) => P::TradeRecord(pb_trade_record(r)),
        Payload::TradeRecordRetracted(r) => P::TradeRecordRetracted(pb::TradeRecordRetracted {
            key: Some(pb_key(&r.key)),
            reason: r.reason.as_str().to_owned(),
        }),
        Payload::Agreement(a) => P::Agreement(pb_agreement(a)),
        Payload::AgreementStatusChanged(s) => {
            P::AgreementStatusChanged(pb::AgreementStatusChanged {
                agreement_id: s.agreement_id.as_str().to_owned(),
                status: pb_status(s.status) as i32,
                effective_on: Some(pb_date(&s.effective_on)),
                note: s.note.as_str().to_owned(),
            })
        }
    };
    pb::Event {
        event_id: e.id.as_str().to_owned(),
        feed: e.feed.as_str().to_owned(),
        occurred_at: e.occurred_at.as_ref().map(pb_timestamp),
        payload: Some(payload),
    }
}

/// The wire form of a trade record.
pub fn pb_trade_record(r: &TradeRecord) -> pb::TradeRecord {
    pb::TradeRecord {
        reporter: r.key.reporter().alpha2().to_owned(),
        partner: r.key.partner().alpha2().to_owned(),
        flow: pb_flow(r.key.flow) as i32,
        period: Some(pb_period(&r.key.period)),
        commodity: Some(pb_commodity(&r.key.commodity)),
        value: Some(pb_money(&r.value)),
        quantity: r.quantity.as_ref().map(pb_quantity),
        source: r.source.as_str().to_owned(),
        note: r.note.as_str().to_owned(),
    }
}

/// The wire form of a quantity.
pub fn pb_quantity(q: &Quantity) -> pb::Quantity {
    pb::Quantity {
        whole: i64::try_from(q.whole()).unwrap_or(i64::MAX),
        nanos: q.sub_nanos() as i32,
        unit: q.unit().to_owned(),
    }
}

/// The wire form of an agreement.
pub fn pb_agreement(a: &Agreement) -> pb::Agreement {
    pb::Agreement {
        agreement_id: a.id.as_str().to_owned(),
        title: a.title.as_str().to_owned(),
        parties: a.parties().iter().map(|c| c.alpha2().to_owned()).collect(),
        signed_on: Some(pb_date(&a.signed_on)),
        venue: a.venue.as_str().to_owned(),
        kind: pb_kind(a.kind) as i32,
        sectors: a.sectors().iter().map(|s| pb_sector(*s) as i32).collect(),
        value: a.value.as_ref().map(pb_money),
        status: pb_status(a.status) as i32,
        source: a.source.as_str().to_owned(),
        note: a.note.as_str().to_owned(),
    }
}

/// The wire form of a stored event.
pub fn pb_stored_event(s: &StoredEvent) -> pb::StoredEvent {
    pb::StoredEvent {
        sequence: s.sequence,
        ingested_at: Some(pb_timestamp(&s.ingested_at)),
        event: Some(pb_event(&s.event)),
    }
}

// ---- the on-disk encoding of one event ----------------------------------------

/// Encodes a stored event as it is kept on disk.
pub fn encode_stored(s: &StoredEvent) -> Vec<u8> {
    pb_stored_event(s).encode_to_vec()
}

/// Decodes and re-checks a stored event (the disk is not trusted either).
pub fn decode_stored(bytes: &[u8]) -> Result<StoredEvent, String> {
    let msg = pb::StoredEvent::decode(bytes).map_err(|e| format!("undecodable event: {e}"))?;
    let ingested_at = msg
        .ingested_at
        .as_ref()
        .ok_or("stored event without ingested_at")
        .and_then(|t| timestamp(t).map_err(|_| "stored event with a bad ingested_at"))?;
    let event = msg.event.as_ref().ok_or("stored event without event")?;
    let event = parse_event(event).map_err(|vs| {
        let first = vs
            .first()
            .map(|v| format!("{}: {}", v.field, v.description))
            .unwrap_or_default();
        format!("stored event {} does not parse: {first}", msg.sequence)
    })?;
    Ok(StoredEvent {
        sequence: msg.sequence,
        ingested_at,
        event,
    })
}

/// Encodes an event's wire form once, before it reaches the single writer
/// thread (the writer only wraps it with the sequence and ingestion time).
pub fn encode_event(e: &Event) -> Vec<u8> {
    pb_event(e).encode_to_vec()
}

/// Appends the `StoredEvent` encoding of (sequence, ingested_at, event) to
/// `out`, where `event_bytes` is [`encode_event`]'s output. Byte-identical to
/// [`encode_stored`] of the same stored event.
pub fn encode_stored_parts(
    sequence: u64,
    ingested_at: &Timestamp,
    event_bytes: &[u8],
    out: &mut Vec<u8>,
) {
    use prost::encoding::{encode_key, encode_varint, message, WireType};
    if sequence != 0 {
        encode_key(1, WireType::Varint, out);
        encode_varint(sequence, out);
    }
    message::encode(2, &pb_timestamp(ingested_at), out);
    encode_key(3, WireType::LengthDelimited, out);
    encode_varint(event_bytes.len() as u64, out);
    out.extend_from_slice(event_bytes);
}

/// The event id of an encoded `StoredEvent`, without parsing the rest.
pub fn stored_event_id(bytes: &[u8]) -> Result<String, String> {
    let msg = pb::StoredEvent::decode(bytes).map_err(|e| format!("undecodable event: {e}"))?;
    Ok(msg.event.map(|e| e.event_id).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::Event {
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
    fn parse_then_encode_round_trips_normalised() {
        let event = parse_event(&sample()).unwrap();
        let wire = pb_event(&event);
        let Some(pb::event::Payload::TradeRecord(r)) = &wire.payload else {
            panic!("payload lost")
        };
        assert_eq!((r.reporter.as_str(), r.partner.as_str()), ("CN", "KZ"));
        assert_eq!(r.note, "verified");
        assert_eq!(parse_event(&wire).unwrap(), event);
    }

    #[test]
    fn stored_parts_encode_like_the_whole_message() {
        let event = parse_event(&sample()).unwrap();
        let stored = StoredEvent {
            sequence: 42,
            ingested_at: Timestamp::new(1_700_000_000, 5).unwrap(),
            event,
        };
        let mut parts = Vec::new();
        encode_stored_parts(
            42,
            &stored.ingested_at,
            &encode_event(&stored.event),
            &mut parts,
        );
        assert_eq!(parts, encode_stored(&stored));
        assert_eq!(decode_stored(&parts).unwrap(), stored);
        assert_eq!(stored_event_id(&parts).unwrap(), "e-1");
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
