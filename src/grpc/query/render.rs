//! View values → query answers: totals, growth, mirror statistics, slices,
//! agreements, figures and aggregate groups as the generated messages, and
//! the streamed messages that carry them with their cursors.
//!
//! Depends on the views' result types, `convert` and the generated messages.

use super::call::Snapshot;
use crate::convert;
use crate::domain::{AgreementId, StoredEvent};
use crate::error::Error;
use crate::grpc::stream::MESSAGE_BYTES;
use crate::proto::v1 as pb;
use crate::views::{
    difference, growth_hundredths, percent_of_hundredths, AgreementState, FigureAt, FlowTotals,
    GroupKey, RecordPosition, SliceData, TooWide,
};
use prost::Message;
use std::collections::HashMap;

/// The wire form of exact money: whole dollars in an int64, billionths.
fn money(nanos: u128) -> Result<pb::Money, TooWide> {
    Ok(pb::Money {
        currency_code: "USD".into(),
        units: i64::try_from(nanos / 1_000_000_000).map_err(|_| TooWide)?,
        // Below 10^9.
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

fn some_money(nanos: Option<u128>) -> Result<Option<pb::Money>, TooWide> {
    nanos.map(money).transpose()
}

/// What an answer that does not fit its wire type says: which one, and why.
fn too_wide(subject: impl std::fmt::Display) -> Error {
    Error::OutOfRange(format!(
        "{subject}: a total, gap or growth is larger than its wire type carries \
         (int64 whole dollars, int64 hundredths of a percent); filter or group more finely"
    ))
}

/// The wire form of a figure as of a snapshot.
fn pb_figure(
    (reporter, partner, key): &RecordPosition,
    f: &FigureAt,
) -> Result<pb::TradeRecord, TooWide> {
    let d = &f.details;
    Ok(pb::TradeRecord {
        reporter: reporter.alpha2().to_owned(),
        partner: partner.alpha2().to_owned(),
        flow: convert::pb_flow(key.flow) as i32,
        period: Some(convert::pb_period(&key.period)),
        commodity: Some(convert::pb_commodity(&key.scope)),
        value: Some(money(f.value)?),
        quantity: d.quantity.as_ref().map(convert::pb_quantity),
        source: d.source.as_str().to_owned(),
        note: d.note.as_str().to_owned(),
    })
}

fn signed_money(n: i128) -> Result<pb::SignedMoney, TooWide> {
    Ok(pb::SignedMoney {
        units: i64::try_from(n / 1_000_000_000).map_err(|_| TooWide)?,
        // Within ±10^9, with the sign of `n`.
        nanos: (n % 1_000_000_000) as i32,
    })
}

fn pb_totals(t: &FlowTotals) -> Result<pb::FlowTotals, TooWide> {
    Ok(pb::FlowTotals {
        exports: some_money(t.exports)?,
        imports: some_money(t.imports)?,
        re_exports: some_money(t.re_exports)?,
        re_imports: some_money(t.re_imports)?,
        turnover: some_money(t.turnover)?,
        total: some_money(t.total)?,
    })
}

fn percent(h: Option<i64>) -> Option<pb::Percent> {
    h.map(|hundredths| pb::Percent { hundredths })
}

fn growth(cur: &FlowTotals, prev: Option<&FlowTotals>) -> Result<pb::Growth, TooWide> {
    let g = |c: Option<u128>, p: Option<u128>| -> Result<Option<pb::Percent>, TooWide> {
        match (c, p) {
            (Some(c), Some(p)) => Ok(percent(growth_hundredths(c, p)?)),
            _ => Ok(None),
        }
    };
    let p = |f: fn(&FlowTotals) -> Option<u128>| prev.and_then(f);
    Ok(pb::Growth {
        exports: g(cur.exports, p(|t| t.exports))?,
        imports: g(cur.imports, p(|t| t.imports))?,
        turnover: g(cur.turnover, p(|t| t.turnover))?,
        total: g(cur.total, p(|t| t.total))?,
    })
}

fn mirror_figure(own: Option<u128>, mirror: Option<u128>) -> Result<pb::MirrorFigure, TooWide> {
    let (gap, gap_percent) = match (own, mirror) {
        (Some(o), Some(m)) => {
            let gap = difference(o, m)?;
            (
                Some(signed_money(gap)?),
                percent(percent_of_hundredths(gap, m)?),
            )
        }
        _ => (None, None),
    };
    Ok(pb::MirrorFigure {
        own: some_money(own)?,
        mirror: some_money(mirror)?,
        gap,
        gap_percent,
    })
}

fn pb_mirror(
    own: &FlowTotals,
    mirror: Option<&FlowTotals>,
) -> Result<pb::MirrorStatistics, TooWide> {
    let m = |f: fn(&FlowTotals) -> Option<u128>| mirror.and_then(f);
    Ok(pb::MirrorStatistics {
        exports: Some(mirror_figure(own.exports, m(|t| t.imports))?),
        imports: Some(mirror_figure(own.imports, m(|t| t.exports))?),
        turnover: Some(mirror_figure(own.turnover, m(|t| t.turnover))?),
        total: Some(mirror_figure(own.total, m(|t| t.total))?),
        partner_reported: mirror.map(pb_totals).transpose()?,
    })
}

fn pb_agreement_view(s: &AgreementState) -> pb::AgreementView {
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

fn pb_slice(s: &SliceData) -> Result<pb::CooperationSlice, Error> {
    let wide = |_| {
        too_wide(format_args!(
            "the slice of {} → {} in {}",
            s.reporter, s.partner, s.period
        ))
    };
    let sectors = s
        .sectors
        .iter()
        .map(|(sector, t)| {
            Ok(pb::SectorTotals {
                sector: convert::pb_sector(*sector) as i32,
                totals: Some(pb_totals(t)?),
            })
        })
        .collect::<Result<Vec<_>, TooWide>>()
        .map_err(wide)?;
    Ok(pb::CooperationSlice {
        reporter: s.reporter.alpha2().to_owned(),
        partner: s.partner.alpha2().to_owned(),
        period: Some(convert::pb_period(&s.period)),
        totals: Some(pb_totals(&s.own).map_err(wide)?),
        growth: Some(growth(&s.own, s.previous.as_ref()).map_err(wide)?),
        sectors,
        agreements: s.agreements.iter().map(pb_agreement_view).collect(),
        mirror: Some(pb_mirror(&s.own, s.mirror.as_ref()).map_err(wide)?),
    })
}

/// One StreamTradeRecords message: the figures of `found` (in order) up to
/// about [`MESSAGE_BYTES`], and the position of the last one it holds.
pub(super) fn records_message(
    found: &[(RecordPosition, FigureAt)],
    snapshot: &Snapshot,
    events: Option<&HashMap<u64, StoredEvent>>,
) -> Result<Option<(pb::StreamTradeRecordsResponse, RecordPosition)>, Error> {
    let mut records = Vec::with_capacity(found.len());
    let mut bytes = 0;
    let mut last = None;
    for (position, f) in found {
        let (reporter, partner, key) = position;
        let record = pb_figure(position, f).map_err(|_| {
            too_wide(format_args!(
                "the figure {reporter} → {partner} {:?} {}",
                key.scope, key.period
            ))
        })?;
        let provenance = match events {
            None => None,
            Some(events) => {
                let e = events.get(&f.sequence).ok_or_else(|| {
                    Error::Internal(format!(
                        "the views hold a revision at sequence {} that the log does not",
                        f.sequence
                    ))
                })?;
                Some(pb::Provenance {
                    event_id: e.event.id.as_str().to_owned(),
                    feed: e.event.feed.as_str().to_owned(),
                    written_by: e
                        .written_by
                        .as_ref()
                        .map_or_else(String::new, |n| n.as_str().to_owned()),
                    ingested_at: Some(convert::pb_timestamp(&e.ingested_at)),
                })
            }
        };
        let view = pb::TradeRecordView {
            record: Some(record),
            revision: f.revision,
            sequence: f.sequence,
            provenance,
        };
        bytes += view.encoded_len();
        records.push(view);
        last = Some(*position);
        if bytes >= MESSAGE_BYTES {
            break;
        }
    }
    let Some(last) = last else { return Ok(None) };
    let message = pb::StreamTradeRecordsResponse {
        records,
        cursor: snapshot.cursor(&last),
        as_of_sequence: snapshot.sequence,
    };
    Ok(Some((message, last)))
}

/// A country-view message: one slice, resumable after its (partner, period).
pub(super) fn country_message(
    s: &SliceData,
    snapshot: &Snapshot,
) -> Result<pb::StreamCountryCooperationResponse, Error> {
    Ok(pb::StreamCountryCooperationResponse {
        slice: Some(pb_slice(s)?),
        cursor: snapshot.cursor(&(s.partner, s.period)),
        as_of_sequence: snapshot.sequence,
    })
}

/// A sector-view message: one slice, resumable after its (reporter,
/// partner, period).
pub(super) fn sector_message(
    s: &SliceData,
    snapshot: &Snapshot,
) -> Result<pb::StreamSectorCooperationResponse, Error> {
    Ok(pb::StreamSectorCooperationResponse {
        slice: Some(pb_slice(s)?),
        cursor: snapshot.cursor(&(s.reporter, s.partner, s.period)),
        as_of_sequence: snapshot.sequence,
    })
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

/// How a group key reads in a message: `reporter CN, partner any, …`.
fn group_text(k: &GroupKey) -> String {
    let part = |name: &str, v: Option<String>| format!("{name} {}", v.as_deref().unwrap_or("any"));
    [
        part("reporter", k.reporter.map(|c| c.to_string())),
        part("partner", k.partner.map(|c| c.to_string())),
        part("flow", k.flow.map(|f| format!("{f:?}"))),
        part("sector", k.sector.map(|s| s.name().to_owned())),
        part("period", k.period.map(|p| p.to_string())),
    ]
    .join(", ")
}

/// An Aggregate message: one group.
pub(super) fn group_message(
    k: &GroupKey,
    t: &FlowTotals,
    snapshot: &Snapshot,
) -> Result<pb::AggregateResponse, Error> {
    let totals =
        pb_totals(t).map_err(|_| too_wide(format_args!("the group ({})", group_text(k))))?;
    Ok(pb::AggregateResponse {
        group: Some(pb::AggregateGroup {
            reporter: k
                .reporter
                .map(|c| c.alpha2().to_owned())
                .unwrap_or_default(),
            partner: k.partner.map(|c| c.alpha2().to_owned()).unwrap_or_default(),
            flow: k.flow.map_or(0, |f| convert::pb_flow(f) as i32),
            sector: k.sector.map_or(0, |s| convert::pb_sector(s) as i32),
            period: k.period.as_ref().map(convert::pb_period),
            totals: Some(totals),
            figures: t.figures,
            cells_without_total: t.cells_without_total,
        }),
        cursor: snapshot.cursor(k),
        as_of_sequence: snapshot.sequence,
    })
}
