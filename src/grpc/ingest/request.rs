//! Ingest requests → what the store takes: an Append's events (all of them
//! valid, or INVALID_ARGUMENT naming every bad field as `events[i].…`), one
//! AppendStream event, a LookupEvents request's ids and sequences.
//!
//! Depends on the generated requests, `convert`, the domain and the store's
//! `Prepared`.

use crate::convert;
use crate::domain::{EventId, FieldViolation, Violations};
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::storage::Prepared;

/// The events of an Append, parsed and encoded for the writer, in order.
///
/// A received request's events are decoded one at a time, and once one is
/// bad the good ones are let go: what a request holds in memory is its own
/// bytes, the good events before its first bad one, and at most
/// `MAX_VIOLATIONS` violations.
pub(super) fn append(
    request: &pb::AppendRequest,
    max_events: usize,
) -> Result<Vec<Prepared>, Error> {
    let undecodable =
        |e: crate::proto::append_request::Undecodable| Error::Undecodable(format!("events: {e}"));
    // (`admission` has counted them already; a request that did not pass
    // through it is counted here, without decoding.)
    let count = request.len().map_err(undecodable)?;
    if count > max_events {
        return Err(vec![FieldViolation::new(
            "events",
            format!(
                "at most {max_events} events per request; got {count} (split the batch or use AppendStream)"
            ),
        )]
        .into());
    }
    let mut v = Violations::default();
    if count == 0 {
        v.bad("events", "at least one event is required");
    }
    let mut prepared = Vec::new();
    for (i, e) in request.events().enumerate() {
        let e = e.map_err(|e| Error::Undecodable(format!("events[{i}]: {e}")))?;
        match convert::parse_event(&e) {
            Ok(event) if v.is_empty() => prepared.push(Prepared::new(event)),
            // The request is refused: only its violations matter now.
            Ok(_) => {}
            // The path is written out only for a bad event.
            Err(vs) => {
                prepared = Vec::new();
                v.nested_many::<()>(&format!("events[{i}]"), Err(vs));
            }
        }
    }
    Ok(v.finish(Some(prepared))?)
}

/// The event of one AppendStream request; violations are named `event.…`.
pub(super) fn stream_event(event: Option<&pb::Event>) -> Result<Prepared, Error> {
    let event =
        event.ok_or_else(|| Error::from(vec![FieldViolation::new("event", "is required")]))?;
    convert::parse_event(event)
        .map(Prepared::new)
        .map_err(|vs| Error::from(vs).nested("event"))
}

/// A LookupEvents request: the ids and sequences to look up.
pub(super) struct Lookup {
    pub ids: Vec<EventId>,
    pub sequences: Vec<u64>,
}

pub(super) fn lookup(req: pb::LookupEventsRequest, max: usize) -> Result<Lookup, Error> {
    // Nothing to look up asks only for the newest durable sequence.
    let mut v = Violations::default();
    if req.event_ids.len() > max {
        v.bad(
            "event_ids",
            format!("at most {max} per request; got {}", req.event_ids.len()),
        );
    }
    if req.sequences.len() > max {
        v.bad(
            "sequences",
            format!("at most {max} per request; got {}", req.sequences.len()),
        );
    }
    let ids = v.each("event_ids", &req.event_ids, |id| EventId::parse(id));
    Ok(v.finish(Some(Lookup {
        ids,
        sequences: req.sequences,
    }))?)
}
