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
pub(super) fn append(events: &[pb::Event], max_events: usize) -> Result<Vec<Prepared>, Error> {
    if events.len() > max_events {
        return Err(vec![FieldViolation::new(
            "events",
            format!(
                "at most {max_events} events per request; got {} (split the batch or use AppendStream)",
                events.len()
            ),
        )]
        .into());
    }
    let mut v = Violations::default();
    if events.is_empty() {
        v.bad("events", "at least one event is required");
    }
    let mut prepared = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        match convert::parse_event(e) {
            Ok(event) => prepared.push(Prepared::new(event)),
            // The path is written out only for a bad event.
            Err(vs) => {
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
