//! The `QueryService`: server-streaming reads over the in-memory views.
//!
//! Every handler reads in three steps:
//! 1. **parse** (`request`): the request becomes a domain query, or
//!    INVALID_ARGUMENT naming every bad field;
//! 2. **begin** (`call`): deadline, request fingerprint, snapshot (the as-of
//!    sequence), a stream slot, and the position to resume after (`cursor`);
//! 3. **stream** (`call`): a producer task computes the answer one bounded
//!    chunk at a time under a short read lock and renders it (`render`) into a
//!    bounded stream; a slow client only slows its own producer, a gone client,
//!    an expired deadline or shutdown stops it.
//!
//! Depends on the views, the store handle, `convert` and the generated code;
//! never on sled.

mod call;
mod cursor;
mod render;
mod request;

use crate::domain::{AgreementId, Country, Period};
use crate::error::Error;
use crate::grpc::shutdown::Shutdown;
use crate::grpc::stream::Answer;
use crate::proto::v1 as pb;
use crate::proto::v1::query_service_server::QueryService;
use crate::storage::StoreHandle;
use crate::views::{
    self, FlowTotals, GroupKey, Index, RecordPosition, SliceData, SliceSpec, Views,
};
use call::Snapshot;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
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
    /// A stream whose client accepts nothing for this long is ended and its
    /// slot released.
    pub stall_timeout: Duration,
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
/// Default stall timeout of query streams and subscriptions: 60 seconds.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Records per StreamTradeRecords message.
const RECORDS_PER_MESSAGE: usize = 1024;
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
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

pub(crate) struct QueryApi {
    views: Arc<Views>,
    store: StoreHandle,
    limits: QueryLimits,
    /// The `--max-query-streams` slots. A call takes one in `begin` without
    /// waiting (RESOURCE_EXHAUSTED when none is free) and its producer holds
    /// it until the stream ends.
    streams: Arc<Semaphore>,
    shutdown: Shutdown,
    /// The running producers, which the server waits for at shutdown.
    tasks: TaskTracker,
}

impl QueryApi {
    pub(crate) fn new(
        views: Arc<Views>,
        store: StoreHandle,
        shutdown: Shutdown,
        tasks: TaskTracker,
        limits: QueryLimits,
    ) -> Self {
        let streams = Arc::new(Semaphore::new(limits.max_streams.max(1)));
        QueryApi {
            views,
            store,
            limits,
            streams,
            shutdown,
            tasks,
        }
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    type StreamTradeRecordsStream = Answer<pb::StreamTradeRecordsResponse>;

    async fn stream_trade_records(
        &self,
        request: Request<pb::StreamTradeRecordsRequest>,
    ) -> Result<Response<Self::StreamTradeRecordsStream>, Status> {
        let (query, mut after, call) =
            self.begin::<_, _, RecordPosition>(&request, request::records)?;
        let store = self.store.clone();
        Ok(Response::new(self.stream(call, move |views, snapshot| {
            let found = views::next_records(
                &views.read(),
                snapshot.sequence,
                &query.filter,
                after,
                RECORDS_PER_MESSAGE,
            )
            .map_err(unreadable)?;
            // The events that hold these revisions, read from the log (after
            // the views' lock is let go).
            let events = match query.provenance {
                true => Some(store.events_at(found.iter().map(|(_, f)| f.sequence))?),
                false => None,
            };
            let Some((message, last)) = render::records_message(&found, snapshot, events.as_ref())?
            else {
                return Ok(None);
            };
            after = Some(last);
            Ok(Some(vec![message]))
        })))
    }

    type StreamCountryCooperationStream = Answer<pb::StreamCountryCooperationResponse>;

    async fn stream_country_cooperation(
        &self,
        request: Request<pb::StreamCountryCooperationRequest>,
    ) -> Result<Response<Self::StreamCountryCooperationStream>, Status> {
        let (q, after, call) = self.begin::<_, _, (Country, Period)>(&request, request::country)?;
        let mut pairs = PairSlices::after(after.map(|(partner, p)| ((q.country, partner), p)));
        Ok(Response::new(self.stream(call, move |views, snapshot| {
            let index = views.read();
            let spec = SliceSpec {
                range: q.range,
                level: q.level,
                breakdown: Some(q.breakdown),
                sectors: q.sectors,
                agreement_sector: None,
                mirror_only: true,
            };
            let visit = || {
                views::partners_of(&index, q.country)
                    .into_iter()
                    .filter(|p| q.partners.admits(*p))
                    .map(|p| (q.country, p))
                    .collect()
            };
            pairs.next_chunk(&index, snapshot, &spec, visit, render::country_message)
        })))
    }

    type StreamSectorCooperationStream = Answer<pb::StreamSectorCooperationResponse>;

    async fn stream_sector_cooperation(
        &self,
        request: Request<pb::StreamSectorCooperationRequest>,
    ) -> Result<Response<Self::StreamSectorCooperationStream>, Status> {
        let (q, after, call) =
            self.begin::<_, _, (Country, Country, Period)>(&request, request::sector)?;
        let mut pairs = PairSlices::after(after.map(|(r, p, period)| ((r, p), period)));
        Ok(Response::new(self.stream(call, move |views, snapshot| {
            let index = views.read();
            let spec = SliceSpec {
                range: q.range,
                level: q.level,
                breakdown: None,
                sectors: [q.sector].into_iter().collect(),
                agreement_sector: Some(q.sector),
                mirror_only: false,
            };
            let countries = &q.countries;
            let visit = || {
                views::sector_pairs(&index, q.sector, &q.range)
                    .into_iter()
                    .filter(|(r, p)| {
                        countries.is_empty() || countries.contains(*r) || countries.contains(*p)
                    })
                    .collect()
            };
            pairs.next_chunk(&index, snapshot, &spec, visit, render::sector_message)
        })))
    }

    type StreamAgreementsStream = Answer<pb::StreamAgreementsResponse>;

    async fn stream_agreements(
        &self,
        request: Request<pb::StreamAgreementsRequest>,
    ) -> Result<Response<Self::StreamAgreementsStream>, Status> {
        let (q, mut after, call) =
            self.begin::<_, _, AgreementId>(&request, request::agreements)?;
        Ok(Response::new(self.stream(call, move |views, snapshot| {
            let index = views.read();
            let mut out = Vec::new();
            let lower = after.clone().map_or(Bound::Unbounded, Bound::Excluded);
            let mut examined = 0;
            for (id, entries) in index.agreements.range((lower, Bound::Unbounded)) {
                examined += 1;
                after = Some(id.clone());
                let Some(state) = views::agreement_state(entries, snapshot.sequence) else {
                    continue;
                };
                let a = &state.agreement;
                let keep = (q.parties.is_empty()
                    || a.parties().iter().any(|p| q.parties.contains(*p)))
                    && (q.sectors.is_empty() || a.sectors().iter().any(|s| q.sectors.contains(*s)))
                    && q.kinds.admits(a.kind)
                    && q.statuses.admits(state.status)
                    && q.signed_from.is_none_or(|f| a.signed_on >= f)
                    && q.signed_to.is_none_or(|t| a.signed_on <= t);
                if keep {
                    out.push(render::agreement_message(id, &state, snapshot));
                }
                if examined >= ITEMS_PER_CHUNK {
                    break;
                }
            }
            Ok((examined > 0).then_some(out))
        })))
    }

    type AggregateStream = Answer<pb::AggregateResponse>;

    async fn aggregate(
        &self,
        request: Request<pb::AggregateRequest>,
    ) -> Result<Response<Self::AggregateStream>, Status> {
        let (q, mut after, call) = self.begin::<_, _, GroupKey>(&request, request::aggregate)?;
        let max_groups = self.limits.max_groups;
        // Every figure is seen before the first group is sent.
        let mut groups: Option<BTreeMap<GroupKey, FlowTotals>> = None;
        Ok(Response::new(self.stream(call, move |views, snapshot| {
            let all = match &mut groups {
                Some(all) => all,
                None => groups.insert(
                    views::aggregate(
                        &views.read(),
                        snapshot.sequence,
                        &q.filter,
                        &q.dims,
                        max_groups,
                    )
                    .map_err(unreadable)?
                    .map_err(|max| {
                        Error::ResourceExhausted(format!(
                            "more than {max} groups (--max-groups): filter more or group by less"
                        ))
                    })?,
                ),
            };
            let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
            let chunk: Vec<_> = all
                .range((lower, Bound::Unbounded))
                .take(ITEMS_PER_CHUNK)
                .map(|(k, t)| {
                    after = Some(*k);
                    render::group_message(k, t, snapshot)
                })
                .collect::<Result<_, Error>>()?;
            Ok((!chunk.is_empty()).then_some(chunk))
        })))
    }
}

/// A view page that failed its checksum or could not be read: the query
/// ends with INTERNAL (the cause is logged), nothing from it is served.
pub(crate) fn unreadable(e: views::Unreadable) -> Error {
    Error::Internal(format!("storage: {e}"))
}

/// The (reporter, partner) pairs a country or sector view visits, listed on
/// its first chunk, and the position it resumes after.
struct PairSlices {
    pending: Option<VecDeque<(Country, Country)>>,
    resume: Option<((Country, Country), Period)>,
}

impl PairSlices {
    fn after(resume: Option<((Country, Country), Period)>) -> Self {
        PairSlices {
            pending: None,
            resume,
        }
    }

    /// The next slices, pair by pair in order, until a chunk is full; `None`
    /// once every pair is done. `visit` lists the pairs (in order) the first
    /// time.
    fn next_chunk<T>(
        &mut self,
        index: &Index,
        snapshot: &Snapshot,
        spec: &SliceSpec,
        visit: impl FnOnce() -> Vec<(Country, Country)>,
        render: impl Fn(&SliceData, &Snapshot) -> Result<T, Error>,
    ) -> Result<Option<Vec<T>>, Error> {
        let resume = self.resume;
        let pending = self.pending.get_or_insert_with(|| {
            visit()
                .into_iter()
                .filter(|pair| resume.is_none_or(|(at, _)| *pair >= at))
                .collect()
        });
        let mut out = Vec::new();
        while let Some((reporter, partner)) = pending.pop_front() {
            let after = resume
                .filter(|(at, _)| *at == (reporter, partner))
                .map(|(_, period)| period);
            let slices =
                views::pair_slices(index, snapshot.sequence, reporter, partner, spec, after)
                    .map_err(unreadable)?;
            for s in &slices {
                out.push(render(s, snapshot)?);
            }
            if out.len() >= SLICES_PER_CHUNK {
                break;
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}
