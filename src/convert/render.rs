//! Domain → wire: the protobuf form of domain values (countries as alpha-2,
//! exact money as units and nanos). Used for answers to clients and for the
//! stored form of an event.
//!
//! Depends on the domain and the generated messages only.

use crate::domain::{
    Agreement, AgreementKind, AgreementStatus, CommodityScope, Date, Event, Flow, Frequency,
    Payload, Period, Quantity, Sector, StoredEvent, Timestamp, TradeFigureKey, TradeRecord,
    UsdAmount,
};
use crate::proto::v1 as pb;

pub(crate) fn pb_flow(f: Flow) -> pb::Flow {
    match f {
        Flow::Export => pb::Flow::Export,
        Flow::Import => pb::Flow::Import,
        Flow::ReExport => pb::Flow::ReExport,
        Flow::ReImport => pb::Flow::ReImport,
        Flow::Turnover => pb::Flow::Turnover,
    }
}

/// The wire value of a sector.
pub(crate) fn pb_sector(s: Sector) -> pb::Sector {
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

pub(crate) fn pb_period(p: &Period) -> pb::Period {
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

pub(crate) fn pb_commodity(c: &CommodityScope) -> pb::CommodityScope {
    use pb::commodity_scope::Scope;
    let scope = match c {
        CommodityScope::All => Scope::All(pb::AllCommodities {}),
        CommodityScope::Hs(h) => Scope::HsCode(h.as_str().to_owned()),
        CommodityScope::Sector(s) => Scope::Sector(pb_sector(*s) as i32),
    };
    pb::CommodityScope { scope: Some(scope) }
}

/// The wire form of an exact USD amount.
pub(crate) fn pb_money(m: &UsdAmount) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        units: m.units(),
        nanos: m.sub_nanos() as i32,
    }
}

pub(crate) fn pb_date(d: &Date) -> pb::Date {
    pb::Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

pub(crate) fn pb_timestamp(t: &Timestamp) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.seconds(),
        nanos: t.nanos() as i32,
    }
}

pub(crate) fn pb_status(s: AgreementStatus) -> pb::AgreementStatus {
    match s {
        AgreementStatus::Signed => pb::AgreementStatus::Signed,
        AgreementStatus::InForce => pb::AgreementStatus::InForce,
        AgreementStatus::Expired => pb::AgreementStatus::Expired,
        AgreementStatus::Terminated => pb::AgreementStatus::Terminated,
    }
}

pub(crate) fn pb_kind(k: AgreementKind) -> pb::AgreementKind {
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

pub(crate) fn pb_key(k: &TradeFigureKey) -> pb::TradeFigureKey {
    pb::TradeFigureKey {
        reporter: k.reporter().alpha2().to_owned(),
        partner: k.partner().alpha2().to_owned(),
        flow: pb_flow(k.flow) as i32,
        period: Some(pb_period(&k.period)),
        commodity: Some(pb_commodity(&k.commodity)),
    }
}

/// The wire form of an event (normalised: countries as alpha-2).
pub(crate) fn pb_event(e: &Event) -> pb::Event {
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
pub(crate) fn pb_trade_record(r: &TradeRecord) -> pb::TradeRecord {
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
pub(crate) fn pb_quantity(q: &Quantity) -> pb::Quantity {
    pb::Quantity {
        whole: q.whole(),
        nanos: q.sub_nanos() as i32,
        unit: q.unit().to_owned(),
    }
}

/// The wire form of an agreement.
pub(crate) fn pb_agreement(a: &Agreement) -> pb::Agreement {
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
pub(crate) fn pb_stored_event(s: &StoredEvent) -> pb::StoredEvent {
    pb::StoredEvent {
        sequence: s.sequence,
        ingested_at: Some(pb_timestamp(&s.ingested_at)),
        event: Some(pb_event(&s.event)),
        written_by: s
            .written_by
            .as_ref()
            .map_or_else(String::new, |n| n.as_str().to_owned()),
    }
}
