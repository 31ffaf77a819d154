//! View values → query answers: totals, growth, mirror statistics, slices,
//! agreements, figures and aggregate groups as the generated messages, and
//! the streamed messages that carry them with their cursors.
//!
//! Depends on the views' result types, `convert` and the generated messages.

use super::call::Snapshot;
use crate::convert;
use crate::domain::AgreementId;
use crate::grpc::stream::MESSAGE_BYTES;
use crate::proto::v1 as pb;
use crate::views::{
    growth_hundredths, percent_of_hundredths, AgreementState, FigureAt, FlowTotals, GroupKey,
    RecordPosition, SliceData,
};
use prost::Message;

fn money(nanos: u128) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        units: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

/// The wire form of a figure as of a snapshot.
pub(super) fn pb_figure(
    (reporter, partner, key): &RecordPosition,
    f: &FigureAt,
) -> pb::TradeRecord {
    let d = &f.details;
    pb::TradeRecord {
        reporter: reporter.alpha2().to_owned(),
        partner: partner.alpha2().to_owned(),
        flow: convert::pb_flow(key.flow) as i32,
        period: Some(convert::pb_period(&key.period)),
        commodity: Some(convert::pb_commodity(&key.scope)),
        value: Some(money(f.value)),
        quantity: d.quantity.as_ref().map(convert::pb_quantity),
        source: d.source.as_str().to_owned(),
        note: d.note.as_str().to_owned(),
    }
}

fn signed_money(n: i128) -> pb::SignedMoney {
    pb::SignedMoney {
        units: i64::try_from(n / 1_000_000_000).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX }),
        nanos: (n % 1_000_000_000) as i32,
    }
}

pub(super) fn pb_totals(t: &FlowTotals) -> pb::FlowTotals {
    pb::FlowTotals {
        exports: t.exports.map(money),
        imports: t.imports.map(money),
        re_exports: t.re_exports.map(money),
        re_imports: t.re_imports.map(money),
        turnover: t.turnover.map(money),
        total: t.total.map(money),
    }
}

fn percent(h: Option<i64>) -> Option<pb::Percent> {
    h.map(|hundredths| pb::Percent { hundredths })
}

fn growth(cur: &FlowTotals, prev: Option<&FlowTotals>) -> pb::Growth {
    let g = |c: Option<u128>, p: Option<u128>| percent(growth_hundredths(c?, p?));
    let p = |f: fn(&FlowTotals) -> Option<u128>| prev.and_then(f);
    pb::Growth {
        exports: g(cur.exports, p(|t| t.exports)),
        imports: g(cur.imports, p(|t| t.imports)),
        turnover: g(cur.turnover, p(|t| t.turnover)),
        total: g(cur.total, p(|t| t.total)),
    }
}

fn mirror_figure(own: Option<u128>, mirror: Option<u128>) -> pb::MirrorFigure {
    let gap = match (own, mirror) {
        (Some(o), Some(m)) => Some(o as i128 - m as i128),
        _ => None,
    };
    pb::MirrorFigure {
        own: own.map(money),
        mirror: mirror.map(money),
        gap: gap.map(signed_money),
        gap_percent: percent(
            gap.zip(mirror)
                .and_then(|(g, m)| percent_of_hundredths(g, m)),
        ),
    }
}

fn pb_mirror(own: &FlowTotals, mirror: Option<&FlowTotals>) -> pb::MirrorStatistics {
    let m = |f: fn(&FlowTotals) -> Option<u128>| mirror.and_then(f);
    pb::MirrorStatistics {
        exports: Some(mirror_figure(own.exports, m(|t| t.imports))),
        imports: Some(mirror_figure(own.imports, m(|t| t.exports))),
        turnover: Some(mirror_figure(own.turnover, m(|t| t.turnover))),
        total: Some(mirror_figure(own.total, m(|t| t.total))),
        partner_reported: mirror.map(pb_totals),
    }
}

pub(super) fn pb_agreement_view(s: &AgreementState) -> pb::AgreementView {
    let mut agreement = convert::pb_agreement(&s.agreement);
    agreement.status = convert::pb_status(s.status) as i32;
    pb::AgreementView {
        agreement: Some(agreement),
        history: s
            .history
            .iter()
            .map(|h| pb::AgreementStatusEntry {
                status: convert::pb_status(h.status) as i32,
                effective_on: Some(convert::pb_date(&h.effective_on)),
                sequence: h.sequence,
                note: h.note.clone(),
            })
            .collect(),
        sequence: s.sequence,
    }
}

pub(super) fn pb_slice(s: &SliceData) -> pb::CooperationSlice {
    pb::CooperationSlice {
        reporter: s.reporter.alpha2().to_owned(),
        partner: s.partner.alpha2().to_owned(),
        period: Some(convert::pb_period(&s.period)),
        totals: Some(pb_totals(&s.own)),
        growth: Some(growth(&s.own, s.previous.as_ref())),
        sectors: s
            .sectors
            .iter()
            .map(|(sector, t)| pb::SectorTotals {
                sector: convert::pb_sector(*sector) as i32,
                totals: Some(pb_totals(t)),
            })
            .collect(),
        agreements: s.agreements.iter().map(pb_agreement_view).collect(),
        mirror: Some(pb_mirror(&s.own, s.mirror.as_ref())),
    }
}

/// One StreamTradeRecords message: the figures of `found` (in order) up to
/// about [`MESSAGE_BYTES`], and the position of the last one it holds.
pub(super) fn records_message(
    found: &[(RecordPosition, FigureAt)],
    snapshot: &Snapshot,
) -> Option<(pb::StreamTradeRecordsResponse, RecordPosition)> {
    let mut records = Vec::with_capacity(found.len());
    let mut bytes = 0;
    let mut last = None;
    for (position, f) in found {
        let view = pb::TradeRecordView {
            record: Some(pb_figure(position, f)),
            revision: f.revision,
            sequence: f.sequence,
        };
        bytes += view.encoded_len();
        records.push(view);
        last = Some(*position);
        if bytes >= MESSAGE_BYTES {
            break;
        }
    }
    let last = last?;
    let message = pb::StreamTradeRecordsResponse {
        records,
        cursor: snapshot.cursor(&last),
        as_of_sequence: snapshot.sequence,
    };
    Some((message, last))
}

/// A country-view message: one slice, resumable after its (partner, period).
pub(super) fn country_message(
    s: &SliceData,
    snapshot: &Snapshot,
) -> pb::StreamCountryCooperationResponse {
    pb::StreamCountryCooperationResponse {
        slice: Some(pb_slice(s)),
        cursor: snapshot.cursor(&(s.partner, s.period)),
        as_of_sequence: snapshot.sequence,
    }
}

/// A sector-view message: one slice, resumable after its (reporter,
/// partner, period).
pub(super) fn sector_message(
    s: &SliceData,
    snapshot: &Snapshot,
) -> pb::StreamSectorCooperationResponse {
    pb::StreamSectorCooperationResponse {
        slice: Some(pb_slice(s)),
        cursor: snapshot.cursor(&(s.reporter, s.partner, s.period)),
        as_of_sequence: snapshot.sequence,
    }
}

/// A StreamAgreements message.
pub(super) fn agreement_message(
    id: &AgreementId,
    state: &AgreementState,
    snapshot: &Snapshot,
) -> pb::StreamAgreementsResponse {
    pb::StreamAgreementsResponse {
        agreement: Some(pb_agreement_view(state)),
        cursor: snapshot.cursor(id),
        as_of_sequence: snapshot.sequence,
    }
}

/// An Aggregate message: one group.
pub(super) fn group_message(
    k: &GroupKey,
    t: &FlowTotals,
    snapshot: &Snapshot,
) -> pb::AggregateResponse {
    pb::AggregateResponse {
        group: Some(pb::AggregateGroup {
            reporter: k
                .reporter
                .map(|c| c.alpha2().to_owned())
                .unwrap_or_default(),
            partner: k.partner.map(|c| c.alpha2().to_owned()).unwrap_or_default(),
            flow: k.flow.map_or(0, |f| convert::pb_flow(f) as i32),
            sector: k.sector.map_or(0, |s| convert::pb_sector(s) as i32),
            period: k.period.as_ref().map(convert::pb_period),
            totals: Some(pb_totals(t)),
            figures: t.figures,
            cells_without_total: t.cells_without_total,
        }),
        cursor: snapshot.cursor(k),
        as_of_sequence: snapshot.sequence,
    }
}
