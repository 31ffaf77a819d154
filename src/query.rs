//! The `QueryService`: server-streaming reads over the in-memory views.
//!
//! Each call parses its request into a domain query (field violations on
//! bad input), fixes its snapshot (the as-of sequence), then a producer task
//! computes the answer one bounded chunk at a time under a short read lock and
//! sends it through a bounded channel: a slow client only slows its own
//! producer, a gone client or an expired deadline stops it. Cursors are opaque
//! bytes pinning (kind, snapshot, request fingerprint, position).
//!
//! Depends on the views, `convert`, `error` and the generated code; never on
//! sled.

use crate::convert;
use crate::domain::{
    AgreementId, AgreementKind, AgreementStatus, CommodityScope, Country, Date, FieldViolation,
    Flow, HsCode, Period, Sector,
};
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::proto::v1::query_service_server::QueryService;
use crate::shutdown::Shutdown;
use crate::storage::StoreHandle;
use crate::stream::{self, Answer};
use crate::views::{
    self, AgreementState, CommodityLevel, FigureFilter, FigureKey, FlowTotals, GroupDim, GroupKey,
    PeriodRange, RecordPosition, SliceData, SliceSpec, Views,
};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Limits of the query API (settings of `caravan serve`).
#[derive(Clone, Debug)]
pub struct QueryLimits {
    /// Query streams running at once; RESOURCE_EXHAUSTED beyond.
    pub max_streams: usize,
    /// Most groups one Aggregate may build.
    pub max_groups: usize,
    /// Messages buffered per stream before the producer waits for the client.
    pub stream_buffer: usize,
    /// Encoded bytes those buffered messages may hold together (a single
    /// larger message is still sent, alone).
    pub stream_buffer_bytes: usize,
}

/// Default: 64 concurrent query streams.
pub const DEFAULT_MAX_QUERY_STREAMS: usize = 64;
/// Default: 100,000 groups per Aggregate.
pub const DEFAULT_MAX_GROUPS: usize = 100_000;
/// Default: up to 256 messages buffered per query stream…
pub const DEFAULT_STREAM_BUFFER: usize = 256;
/// …holding at most 8 MiB together: 8 full StreamTradeRecords messages, or
/// hundreds of cooperation slices (about 1 KiB each).
pub const DEFAULT_STREAM_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// A message is closed once its records reach this many encoded bytes (well
/// under the 4 MiB default message limit, whatever the records' sizes).
pub const MESSAGE_BYTES: usize = 1024 * 1024;
/// Records per StreamTradeRecords message.
pub const RECORDS_PER_MESSAGE: usize = 1024;
/// Slices computed per chunk (under one read lock).
const SLICES_PER_CHUNK: usize = 64;
/// Agreements or groups computed per chunk.
const ITEMS_PER_CHUNK: usize = 256;

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_streams: DEFAULT_MAX_QUERY_STREAMS,
            max_groups: DEFAULT_MAX_GROUPS,
            stream_buffer: DEFAULT_STREAM_BUFFER,
            stream_buffer_bytes: DEFAULT_STREAM_BUFFER_BYTES,
        }
    }
}

pub struct QueryApi {
    views: Arc<Views>,
    store: StoreHandle,
    limits: QueryLimits,
    streams: Arc<Semaphore>,
    shutdown: Shutdown,
}

impl QueryApi {
    pub fn new(
        views: Arc<Views>,
        store: StoreHandle,
        shutdown: Shutdown,
        limits: QueryLimits,
    ) -> Self {
        let streams = Arc::new(Semaphore::new(limits.max_streams.max(1)));
        QueryApi {
            views,
            store,
            limits,
            streams,
            shutdown,
        }
    }
}

// ---- request parsing ---------------------------------------------------------

#[derive(Default)]
struct Check(Vec<FieldViolation>);

impl Check {
    fn field<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|d| self.0.push(FieldViolation::new(field, d)))
            .ok()
    }
    fn bad(&mut self, field: &str, d: impl Into<String>) {
        self.0.push(FieldViolation::new(field, d));
    }
    fn countries(&mut self, field: &str, raw: &[String]) -> Vec<Country> {
        raw.iter()
            .enumerate()
            .filter_map(|(i, c)| self.field(&format!("{field}[{i}]"), Country::parse(c)))
            .collect()
    }
    fn sectors(&mut self, field: &str, raw: &[i32]) -> Vec<Sector> {
        raw.iter()
            .enumerate()
            .filter_map(|(i, s)| self.field(&format!("{field}[{i}]"), convert::sector(*s)))
            .collect()
    }
    fn done(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

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

fn periods(c: &mut Check, field: &str, raw: Option<&pb::PeriodRange>) -> Option<PeriodRange> {
    let Some(r) = raw else {
        c.bad(field, "is required (at least its frequency)");
        return None;
    };
    let frequency = c.field(
        &format!("{field}.frequency"),
        convert::frequency(r.frequency),
    )?;
    let mut bound = |name: &str, p: Option<&pb::Period>| -> Result<Option<Period>, ()> {
        let Some(p) = p else { return Ok(None) };
        match convert::period(p) {
            Ok(p) if p.frequency() == frequency => Ok(Some(p)),
            Ok(_) => {
                c.bad(
                    &format!("{field}.{name}"),
                    "must have the range's frequency",
                );
                Err(())
            }
            Err(v) => {
                c.0.push(v.nested(&format!("{field}.{name}")));
                Err(())
            }
        }
    };
    let from = bound("from", r.from.as_ref()).ok()?;
    let to = bound("to", r.to.as_ref()).ok()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            c.bad(&format!("{field}.to"), "must not be before `from`");
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
    c: &mut Check,
    field: &str,
    raw: Option<&pb::FigureFilter>,
) -> Option<FigureFilter> {
    let Some(f) = raw else {
        c.bad(field, "is required (at least periods.frequency)");
        return None;
    };
    let reporters = c.countries(&format!("{field}.reporters"), &f.reporters);
    let partners = c.countries(&format!("{field}.partners"), &f.partners);
    let flows: Vec<Flow> = f
        .flows
        .iter()
        .enumerate()
        .filter_map(|(i, x)| c.field(&format!("{field}.flows[{i}]"), convert::flow(*x)))
        .collect();
    let lvl = c.field(
        &format!("{field}.level"),
        level(f.level, CommodityLevel::All),
    )?;
    let hs_prefix = if f.hs_prefix.is_empty() {
        None
    } else if !lvl.is_hs() {
        c.bad(&format!("{field}.hs_prefix"), "needs level HS2, HS4 or HS6");
        None
    } else if f.hs_prefix.len() > 6 || !f.hs_prefix.bytes().all(|b| b.is_ascii_digit()) {
        c.bad(&format!("{field}.hs_prefix"), "must be 1 to 6 digits");
        None
    } else {
        Some(f.hs_prefix.clone())
    };
    let sectors = c.sectors(&format!("{field}.sectors"), &f.sectors);
    if !sectors.is_empty() && lvl == CommodityLevel::All {
        c.bad(
            &format!("{field}.sectors"),
            "needs level HS2, HS4, HS6 or SECTOR (all-commodities figures have no sector)",
        );
    }
    let periods = periods(c, &format!("{field}.periods"), f.periods.as_ref())?;
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

// ---- cursors -----------------------------------------------------------------

const CURSOR_VERSION: u8 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Records = 1,
    Country = 2,
    Sector = 3,
    Agreements = 4,
    Aggregate = 5,
}

/// Where a call stands: its snapshot and, when resuming, the position after
/// which it continues.
struct Start {
    snapshot: u64,
    position: Option<Vec<u8>>,
    fingerprint: u64,
    kind: Kind,
}

impl Start {
    fn cursor(&self, position: Vec<u8>) -> Vec<u8> {
        let mut c = Vec::with_capacity(18 + position.len());
        c.push(CURSOR_VERSION);
        c.push(self.kind as u8);
        c.extend_from_slice(&self.snapshot.to_be_bytes());
        c.extend_from_slice(&self.fingerprint.to_be_bytes());
        c.extend_from_slice(&position);
        c
    }
}

/// Fixes the snapshot of a call: from its cursor when resuming, else its
/// `as_of_sequence` (0 = newest durable).
fn start(
    kind: Kind,
    store: &StoreHandle,
    as_of: u64,
    resume_after: &[u8],
    fingerprint: u64,
) -> Result<Start, Error> {
    let newest = store.last_sequence();
    if as_of > newest {
        return Err(Error::OutOfRange(format!(
            "as_of_sequence {as_of} is after the newest durable sequence {newest}"
        )));
    }
    if resume_after.is_empty() {
        return Ok(Start {
            snapshot: if as_of == 0 { newest } else { as_of },
            position: None,
            fingerprint,
            kind,
        });
    }
    let bad = |d: &str| Error::InvalidArgument(vec![FieldViolation::new("resume_after", d)]);
    if resume_after.len() < 18 || resume_after[0] != CURSOR_VERSION || resume_after[1] != kind as u8
    {
        return Err(bad("is not a cursor of this call"));
    }
    let snapshot = u64::from_be_bytes(
        resume_after[2..10]
            .try_into()
            .map_err(|_| bad("is truncated"))?,
    );
    let print = u64::from_be_bytes(
        resume_after[10..18]
            .try_into()
            .map_err(|_| bad("is truncated"))?,
    );
    if print != fingerprint {
        return Err(bad(
            "belongs to a different request: send the same request with the cursor",
        ));
    }
    if as_of != 0 && as_of != snapshot {
        return Err(bad("pins another as_of_sequence than the request's"));
    }
    if snapshot > newest {
        return Err(bad("is from the future"));
    }
    Ok(Start {
        snapshot,
        position: Some(resume_after[18..].to_vec()),
        fingerprint,
        kind,
    })
}

/// Fingerprint of a request without its cursor and as-of fields.
fn fingerprint<M: Message>(m: &M) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&m.encode_to_vec())
}

fn flow_byte(f: Flow) -> u8 {
    match f {
        Flow::Export => 1,
        Flow::Import => 2,
        Flow::ReExport => 3,
        Flow::ReImport => 4,
        Flow::Turnover => 5,
    }
}

fn byte_flow(b: u8) -> Option<Flow> {
    Some(match b {
        1 => Flow::Export,
        2 => Flow::Import,
        3 => Flow::ReExport,
        4 => Flow::ReImport,
        5 => Flow::Turnover,
        _ => return None,
    })
}

fn sector_byte(s: Sector) -> u8 {
    Sector::ALL
        .iter()
        .position(|x| *x == s)
        .map_or(0, |i| i as u8 + 1)
}

fn byte_sector(b: u8) -> Option<Sector> {
    Sector::ALL.get(usize::from(b).checked_sub(1)?).copied()
}

fn put_country(out: &mut Vec<u8>, c: Country) {
    out.extend_from_slice(c.alpha2().as_bytes());
}

fn put_period(out: &mut Vec<u8>, p: &Period) {
    let freq = match p.frequency() {
        crate::domain::Frequency::Annual => 1,
        crate::domain::Frequency::Quarterly => 2,
        crate::domain::Frequency::Monthly => 3,
        crate::domain::Frequency::YearToDate => 4,
    };
    out.extend_from_slice(&p.year().to_be_bytes());
    out.push(freq);
    out.push(p.number());
}

/// Reads positions back; every byte is checked (a cursor is client input).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn country(&mut self) -> Option<Country> {
        let b = self.take(2)?;
        Country::parse(std::str::from_utf8(b).ok()?).ok()
    }
    fn period(&mut self) -> Option<Period> {
        let b = self.take(4)?;
        let freq = match b[2] {
            1 => crate::domain::Frequency::Annual,
            2 => crate::domain::Frequency::Quarterly,
            3 => crate::domain::Frequency::Monthly,
            4 => crate::domain::Frequency::YearToDate,
            _ => return None,
        };
        Period::new(
            i32::from(u16::from_be_bytes([b[0], b[1]])),
            freq,
            i32::from(b[3]),
        )
        .ok()
    }
    fn scope(&mut self) -> Option<CommodityScope> {
        match self.byte()? {
            0 => Some(CommodityScope::All),
            1 => {
                let len = usize::from(self.byte()?);
                let digits = self.take(len)?;
                HsCode::parse(std::str::from_utf8(digits).ok()?)
                    .ok()
                    .map(CommodityScope::Hs)
            }
            2 => byte_sector(self.byte()?).map(CommodityScope::Sector),
            _ => None,
        }
    }
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

fn bad_cursor() -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(
        "resume_after",
        "is not a valid cursor",
    )])
}

fn encode_record_position(p: &RecordPosition) -> Vec<u8> {
    let (
        r,
        q,
        FigureKey {
            period,
            flow,
            scope,
        },
    ) = p;
    let mut out = Vec::with_capacity(20);
    put_country(&mut out, *r);
    put_country(&mut out, *q);
    out.push(flow_byte(*flow));
    put_period(&mut out, period);
    match scope {
        CommodityScope::All => out.push(0),
        CommodityScope::Hs(h) => {
            out.push(1);
            out.push(h.as_str().len() as u8);
            out.extend_from_slice(h.as_str().as_bytes());
        }
        CommodityScope::Sector(s) => {
            out.push(2);
            out.push(sector_byte(*s));
        }
    }
    out
}

fn decode_record_position(b: &[u8]) -> Result<RecordPosition, Error> {
    let mut r = Reader(b);
    (|| {
        let (reporter, partner) = (r.country()?, r.country()?);
        let flow = byte_flow(r.byte()?)?;
        let key = FigureKey {
            period: r.period()?,
            flow,
            scope: r.scope()?,
        };
        let p = (reporter, partner, key);
        r.end()?;
        Some(p)
    })()
    .ok_or_else(bad_cursor)
}

fn encode_group_key(k: &GroupKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    match k.reporter {
        Some(c) => put_country(&mut out, c),
        None => out.extend_from_slice(b"--"),
    }
    match k.partner {
        Some(c) => put_country(&mut out, c),
        None => out.extend_from_slice(b"--"),
    }
    out.push(k.flow.map_or(0, flow_byte));
    out.push(k.sector.map_or(0, sector_byte));
    match &k.period {
        Some(p) => put_period(&mut out, p),
        None => out.extend_from_slice(&[0, 0, 0, 0]),
    }
    out
}

fn decode_group_key(b: &[u8]) -> Result<GroupKey, Error> {
    let mut r = Reader(b);
    (|| {
        let country = |r: &mut Reader| -> Option<Option<Country>> {
            if r.0.starts_with(b"--") {
                r.take(2)?;
                Some(None)
            } else {
                r.country().map(Some)
            }
        };
        let reporter = country(&mut r)?;
        let partner = country(&mut r)?;
        let flow = match r.byte()? {
            0 => None,
            b => Some(byte_flow(b)?),
        };
        let sector = match r.byte()? {
            0 => None,
            b => Some(byte_sector(b)?),
        };
        let period = if r.0.starts_with(&[0, 0, 0, 0]) {
            r.take(4)?;
            None
        } else {
            Some(r.period()?)
        };
        r.end()?;
        Some(GroupKey {
            reporter,
            partner,
            flow,
            sector,
            period,
        })
    })()
    .ok_or_else(bad_cursor)
}

// ---- rendering ---------------------------------------------------------------

fn money(nanos: u128) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        units: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

/// The wire form of a figure as of a snapshot.
fn pb_figure((reporter, partner, key): &RecordPosition, f: &views::FigureAt) -> pb::TradeRecord {
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

fn pb_totals(t: &FlowTotals) -> pb::FlowTotals {
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
    let g = |c: Option<u128>, p: Option<u128>| percent(views::growth_hundredths(c?, p?));
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
                .and_then(|(g, m)| views::percent_of_hundredths(g, m)),
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

fn pb_slice(s: &SliceData) -> pb::CooperationSlice {
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

// ---- the streaming driver ----------------------------------------------------

type Chunk<T> = Result<Option<Vec<T>>, Error>;

/// Parses a `grpc-timeout` header ("100m", "5S", …) into a deadline.
fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let raw = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

impl QueryApi {
    fn permit(&self) -> Result<OwnedSemaphorePermit, Error> {
        if self.shutdown.is_shutdown() {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "{} query streams are running, the most allowed (--max-query-streams); retry later",
                self.limits.max_streams
            ))
        })
    }

    /// Runs `next_chunk` until it returns `Ok(None)`, sending each item while
    /// the client reads; stops at a disconnect, the deadline or shutdown.
    fn stream<T: Message + Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        deadline: Option<Instant>,
        mut next_chunk: impl FnMut(&Views) -> Chunk<T> + Send + 'static,
    ) -> Response<Answer<T>> {
        let (producer, answer) = stream::channel(
            self.limits.stream_buffer,
            Some(self.limits.stream_buffer_bytes),
        );
        let views = Arc::clone(&self.views);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expired);
            let expired_status = || Status::deadline_exceeded("the deadline expired");
            let shutdown_status =
                || Status::unavailable("the server is shutting down; resume with the last cursor");
            loop {
                // Checked here too: while the client keeps up, items never wait
                // in the `select!` below.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return producer.fail(expired_status());
                }
                if shutdown.is_shutdown() {
                    return producer.fail(shutdown_status());
                }
                let items = match next_chunk(&views) {
                    Ok(Some(items)) => items,
                    Ok(None) => return,
                    Err(e) => return producer.fail(e.into_status()),
                };
                for item in items {
                    let bytes = item.encoded_len();
                    // Room in the buffer: no waiting, nothing to race.
                    let item = match producer.try_send(item, bytes) {
                        Ok(()) => continue,
                        Err(stream::TrySend::Closed) => return,
                        Err(stream::TrySend::Full(item)) => item,
                    };
                    tokio::select! {
                        sent = producer.send(item, bytes) => if sent.is_err() { return },
                        _ = &mut expired => return producer.fail(expired_status()),
                        _ = shutdown.wait() => return producer.fail(shutdown_status()),
                    }
                }
                tokio::task::yield_now().await;
            }
        });
        Response::new(answer)
    }
}

type QStream<T> = Answer<T>;

#[tonic::async_trait]
impl QueryService for QueryApi {
    type StreamTradeRecordsStream = QStream<pb::StreamTradeRecordsResponse>;

    async fn stream_trade_records(
        &self,
        request: Request<pb::StreamTradeRecordsRequest>,
    ) -> Result<Response<Self::StreamTradeRecordsStream>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let mut c = Check::default();
        let filter = figure_filter(&mut c, "filter", req.filter.as_ref());
        c.done()?;
        let filter = filter.ok_or_else(|| Error::Internal("filter lost".into()))?;
        let print = fingerprint(&pb::StreamTradeRecordsRequest {
            resume_after: Vec::new(),
            as_of_sequence: 0,
            ..req.clone()
        });
        let start = start(
            Kind::Records,
            &self.store,
            req.as_of_sequence,
            &req.resume_after,
            print,
        )?;
        let mut after = match &start.position {
            Some(p) => Some(decode_record_position(p)?),
            None => None,
        };
        let permit = self.permit()?;
        Ok(self.stream(permit, deadline, move |views| {
            let found = views::next_records(
                &views.read(),
                start.snapshot,
                &filter,
                after,
                RECORDS_PER_MESSAGE,
            );
            if found.is_empty() {
                return Ok(None);
            }
            // Up to RECORDS_PER_MESSAGE records and about MESSAGE_BYTES bytes.
            let mut records = Vec::with_capacity(found.len());
            let mut bytes = 0;
            let mut last = found[0].0;
            for (position, f) in &found {
                let view = pb::TradeRecordView {
                    record: Some(pb_figure(position, f)),
                    revision: f.revision,
                    sequence: f.sequence,
                };
                bytes += view.encoded_len();
                records.push(view);
                last = *position;
                if bytes >= MESSAGE_BYTES {
                    break;
                }
            }
            after = Some(last);
            Ok(Some(vec![pb::StreamTradeRecordsResponse {
                records,
                cursor: start.cursor(encode_record_position(&last)),
                as_of_sequence: start.snapshot,
            }]))
        }))
    }

    type StreamCountryCooperationStream = QStream<pb::StreamCountryCooperationResponse>;

    async fn stream_country_cooperation(
        &self,
        request: Request<pb::StreamCountryCooperationRequest>,
    ) -> Result<Response<Self::StreamCountryCooperationStream>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let mut c = Check::default();
        let country = c.field("country", Country::parse(&req.country));
        let partners = c.countries("partners", &req.partners);
        let sectors = c.sectors("sectors", &req.sectors);
        let range = periods(&mut c, "periods", req.periods.as_ref());
        let lvl = c.field("level", level(req.level, CommodityLevel::All));
        if !sectors.is_empty() && lvl == Some(CommodityLevel::All) {
            c.bad(
                "sectors",
                "needs level HS2, HS4, HS6 or SECTOR (all-commodities figures have no sector)",
            );
        }
        let breakdown = c.field(
            "breakdown_level",
            level(req.breakdown_level, CommodityLevel::Sector),
        );
        if breakdown == Some(CommodityLevel::All) {
            c.bad("breakdown_level", "must be HS2, HS4, HS6 or SECTOR");
        }
        c.done()?;
        let (Some(country), Some(range), Some(lvl), Some(breakdown)) =
            (country, range, lvl, breakdown)
        else {
            return Err(Error::Internal("parsed request lost".into()).into());
        };
        let print = fingerprint(&pb::StreamCountryCooperationRequest {
            resume_after: Vec::new(),
            as_of_sequence: 0,
            ..req.clone()
        });
        let start = start(
            Kind::Country,
            &self.store,
            req.as_of_sequence,
            &req.resume_after,
            print,
        )?;
        let mut after: Option<(Country, Period)> = match &start.position {
            Some(p) => {
                let mut r = Reader(p);
                Some(
                    (|| {
                        let x = (r.country()?, r.period()?);
                        r.end()?;
                        Some(x)
                    })()
                    .ok_or_else(bad_cursor)?,
                )
            }
            None => None,
        };
        let mut queue: Option<std::collections::VecDeque<Country>> = None;
        let permit = self.permit()?;
        Ok(self.stream(permit, deadline, move |views| {
            let index = views.read();
            let pending = queue.get_or_insert_with(|| {
                views::partners_of(&index, country)
                    .into_iter()
                    .filter(|p| partners.is_empty() || partners.contains(p))
                    .filter(|p| after.is_none_or(|(a, _)| *p >= a))
                    .collect()
            });
            let spec = SliceSpec {
                range,
                level: lvl,
                breakdown: Some(breakdown),
                sectors: &sectors,
                agreement_sector: None,
                mirror_only: true,
            };
            let mut out = Vec::new();
            while let Some(partner) = pending.pop_front() {
                let resume = after.filter(|(a, _)| *a == partner).map(|(_, p)| p);
                let slices =
                    views::pair_slices(&index, start.snapshot, country, partner, &spec, resume);
                out.extend(slices.iter().map(|s| {
                    let mut pos = Vec::with_capacity(6);
                    put_country(&mut pos, s.partner);
                    put_period(&mut pos, &s.period);
                    pb::StreamCountryCooperationResponse {
                        slice: Some(pb_slice(s)),
                        cursor: start.cursor(pos),
                        as_of_sequence: start.snapshot,
                    }
                }));
                if out.len() >= SLICES_PER_CHUNK {
                    break;
                }
            }
            after = None;
            Ok((!out.is_empty()).then_some(out))
        }))
    }

    type StreamSectorCooperationStream = QStream<pb::StreamSectorCooperationResponse>;

    async fn stream_sector_cooperation(
        &self,
        request: Request<pb::StreamSectorCooperationRequest>,
    ) -> Result<Response<Self::StreamSectorCooperationStream>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let mut c = Check::default();
        let sector = c.field("sector", convert::sector(req.sector));
        let countries = c.countries("countries", &req.countries);
        let range = periods(&mut c, "periods", req.periods.as_ref());
        let lvl = c.field("level", level(req.level, CommodityLevel::Sector));
        if lvl == Some(CommodityLevel::All) {
            c.bad("level", "must be HS2, HS4, HS6 or SECTOR");
        }
        c.done()?;
        let (Some(sector), Some(range), Some(lvl)) = (sector, range, lvl) else {
            return Err(Error::Internal("parsed request lost".into()).into());
        };
        let print = fingerprint(&pb::StreamSectorCooperationRequest {
            resume_after: Vec::new(),
            as_of_sequence: 0,
            ..req.clone()
        });
        let start = start(
            Kind::Sector,
            &self.store,
            req.as_of_sequence,
            &req.resume_after,
            print,
        )?;
        let resume: Option<(Country, Country, Period)> = match &start.position {
            Some(p) => {
                let mut r = Reader(p);
                Some(
                    (|| {
                        let x = (r.country()?, r.country()?, r.period()?);
                        r.end()?;
                        Some(x)
                    })()
                    .ok_or_else(bad_cursor)?,
                )
            }
            None => None,
        };
        let mut queue: Option<std::collections::VecDeque<(Country, Country)>> = None;
        let permit = self.permit()?;
        let sectors = [sector];
        Ok(self.stream(permit, deadline, move |views| {
            let index = views.read();
            let pending = queue.get_or_insert_with(|| {
                views::sector_pairs(&index, sector, &range)
                    .into_iter()
                    .filter(|(r, p)| {
                        countries.is_empty() || countries.contains(r) || countries.contains(p)
                    })
                    .filter(|pair| resume.is_none_or(|(r, p, _)| *pair >= (r, p)))
                    .collect()
            });
            let spec = SliceSpec {
                range,
                level: lvl,
                breakdown: None,
                sectors: &sectors,
                agreement_sector: Some(sector),
                mirror_only: false,
            };
            let mut out = Vec::new();
            while let Some((reporter, partner)) = pending.pop_front() {
                let after_period = resume
                    .filter(|(r, p, _)| (*r, *p) == (reporter, partner))
                    .map(|(_, _, period)| period);
                let slices = views::pair_slices(
                    &index,
                    start.snapshot,
                    reporter,
                    partner,
                    &spec,
                    after_period,
                );
                out.extend(slices.iter().map(|s| {
                    let mut pos = Vec::with_capacity(8);
                    put_country(&mut pos, s.reporter);
                    put_country(&mut pos, s.partner);
                    put_period(&mut pos, &s.period);
                    pb::StreamSectorCooperationResponse {
                        slice: Some(pb_slice(s)),
                        cursor: start.cursor(pos),
                        as_of_sequence: start.snapshot,
                    }
                }));
                if out.len() >= SLICES_PER_CHUNK {
                    break;
                }
            }
            Ok((!out.is_empty()).then_some(out))
        }))
    }

    type StreamAgreementsStream = QStream<pb::StreamAgreementsResponse>;

    async fn stream_agreements(
        &self,
        request: Request<pb::StreamAgreementsRequest>,
    ) -> Result<Response<Self::StreamAgreementsStream>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let mut c = Check::default();
        let parties = c.countries("parties", &req.parties);
        let sectors = c.sectors("sectors", &req.sectors);
        let kinds: Vec<AgreementKind> = req
            .kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| c.field(&format!("kinds[{i}]"), convert::kind(*k)))
            .collect();
        let statuses: Vec<AgreementStatus> = req
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| c.field(&format!("statuses[{i}]"), convert::status(*s)))
            .collect();
        let from: Option<Date> = req
            .signed_from
            .as_ref()
            .and_then(|d| c.field("signed_from", convert::date(d)));
        let to: Option<Date> = req
            .signed_to
            .as_ref()
            .and_then(|d| c.field("signed_to", convert::date(d)));
        c.done()?;
        let print = fingerprint(&pb::StreamAgreementsRequest {
            resume_after: Vec::new(),
            as_of_sequence: 0,
            ..req.clone()
        });
        let start = start(
            Kind::Agreements,
            &self.store,
            req.as_of_sequence,
            &req.resume_after,
            print,
        )?;
        let mut after: Option<AgreementId> = match &start.position {
            Some(p) => Some(
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| AgreementId::parse(s).ok())
                    .ok_or_else(bad_cursor)?,
            ),
            None => None,
        };
        let permit = self.permit()?;
        Ok(self.stream(permit, deadline, move |views| {
            let index = views.read();
            let mut out = Vec::new();
            let lower = after
                .clone()
                .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
            let mut examined = 0;
            for (id, entries) in index.agreements.range((lower, std::ops::Bound::Unbounded)) {
                examined += 1;
                after = Some(id.clone());
                let Some(state) = views::agreement_state(entries, start.snapshot) else {
                    continue;
                };
                let a = &state.agreement;
                let keep = (parties.is_empty() || a.parties().iter().any(|p| parties.contains(p)))
                    && (sectors.is_empty() || a.sectors().iter().any(|s| sectors.contains(s)))
                    && (kinds.is_empty() || kinds.contains(&a.kind))
                    && (statuses.is_empty() || statuses.contains(&state.status))
                    && from.is_none_or(|f| a.signed_on >= f)
                    && to.is_none_or(|t| a.signed_on <= t);
                if keep {
                    out.push(pb::StreamAgreementsResponse {
                        agreement: Some(pb_agreement_view(&state)),
                        cursor: start.cursor(id.as_str().as_bytes().to_vec()),
                        as_of_sequence: start.snapshot,
                    });
                }
                if examined >= ITEMS_PER_CHUNK {
                    break;
                }
            }
            if examined == 0 {
                return Ok(None);
            }
            Ok(Some(out))
        }))
    }

    type AggregateStream = QStream<pb::AggregateResponse>;

    async fn aggregate(
        &self,
        request: Request<pb::AggregateRequest>,
    ) -> Result<Response<Self::AggregateStream>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let mut c = Check::default();
        let filter = figure_filter(&mut c, "filter", req.filter.as_ref());
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
                    c.bad(&field, "is not a known grouping");
                    continue;
                }
            };
            if dims.contains(&dim) {
                c.bad(&field, "is listed more than once");
            }
            dims.push(dim);
        }
        if dims.contains(&GroupDim::Sector)
            && filter
                .as_ref()
                .is_some_and(|f| f.level == CommodityLevel::All)
        {
            c.bad(
                "group_by",
                "grouping by sector needs filter.level HS2, HS4, HS6 or SECTOR",
            );
        }
        c.done()?;
        let filter = filter.ok_or_else(|| Error::Internal("filter lost".into()))?;
        let print = fingerprint(&pb::AggregateRequest {
            resume_after: Vec::new(),
            as_of_sequence: 0,
            ..req.clone()
        });
        let start = start(
            Kind::Aggregate,
            &self.store,
            req.as_of_sequence,
            &req.resume_after,
            print,
        )?;
        let mut after: Option<GroupKey> = match &start.position {
            Some(p) => Some(decode_group_key(p)?),
            None => None,
        };
        let max_groups = self.limits.max_groups;
        let mut groups: Option<std::collections::BTreeMap<GroupKey, FlowTotals>> = None;
        let permit = self.permit()?;
        Ok(self.stream(permit, deadline, move |views| {
            if groups.is_none() {
                let g = views::aggregate(&views.read(), start.snapshot, &filter, &dims, max_groups)
                    .map_err(|max| {
                        Error::ResourceExhausted(format!(
                            "more than {max} groups (--max-groups): filter more or group by less"
                        ))
                    })?;
                groups = Some(g);
            }
            let all = groups
                .as_ref()
                .ok_or_else(|| Error::Internal("groups lost".into()))?;
            let lower = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
            let chunk: Vec<_> = all
                .range((lower, std::ops::Bound::Unbounded))
                .take(ITEMS_PER_CHUNK)
                .map(|(k, t)| {
                    after = Some(*k);
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
                        cursor: start.cursor(encode_group_key(k)),
                        as_of_sequence: start.snapshot,
                    }
                })
                .collect();
            Ok((!chunk.is_empty()).then_some(chunk))
        }))
    }
}
