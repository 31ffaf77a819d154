//! Ingest requests → what the store takes: an Append's events (all of them
//! valid, or INVALID_ARGUMENT naming every bad field as `events[i].…`; all
//! under feeds the caller may write, or PERMISSION_DENIED naming the first
//! that is not), one AppendStream event, a LookupEvents request's ids and
//! sequences.
//!
//! Depends on the generated requests, `convert`, the domain and the store's
//! `Prepared`.

use crate::auth::Identity;
use crate::convert;
use crate::domain::{EventId, FeedName, FieldViolation, Violations};
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
    caller: &Identity,
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
    // The first event under a feed the caller may not write: the whole
    // request is refused with it, unless it is invalid anyway.
    let mut denied = None;
    for (i, e) in request.events().enumerate() {
        let e = e.map_err(|e| Error::Undecodable(format!("events[{i}]: {e}")))?;
        match convert::parse_event(&e) {
            Ok(event) if !caller.may_write(&event.feed) => {
                prepared = Vec::new();
                denied.get_or_insert_with(|| feed_not_allowed(i, &event.feed, caller));
            }
            Ok(event) if v.is_empty() && denied.is_none() => prepared.push(Prepared::new(event)),
            // The request is refused: only its violations matter now.
            Ok(_) => {}
            // The path is written out only for a bad event.
            Err(vs) => {
                prepared = Vec::new();
                v.nested_many::<()>(&format!("events[{i}]"), Err(vs));
            }
        }
    }
    let prepared = v.finish(Some(prepared))?;
    match denied {
        Some(e) => Err(e),
        None => Ok(prepared),
    }
}

fn feed_not_allowed(index: usize, feed: &FeedName, caller: &Identity) -> Error {
    Error::FeedNotAllowed {
        index,
        feed: feed.to_string(),
        identity: caller.label().to_owned(),
    }
}

/// The event of one AppendStream request; violations are named `event.…`.
pub(super) fn stream_event(
    event: Option<&pb::Event>,
    caller: &Identity,
) -> Result<Prepared, Error> {
    let event =
        event.ok_or_else(|| Error::from(vec![FieldViolation::new("event", "is required")]))?;
    let event = convert::parse_event(event).map_err(|vs| Error::from(vs).nested("event"))?;
    if !caller.may_write(&event.feed) {
        return Err(feed_not_allowed(0, &event.feed, caller));
    }
    Ok(Prepared::new(event))
}

/// A LookupEvents request: the ids (of `feed`) and sequences to look up.
pub(super) struct Lookup {
    /// The request's feed, if it names one.
    pub feed: Option<FeedName>,
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
    let feed = match req.feed.as_str() {
        "" => None,
        f => v.check("feed", FeedName::parse(f)),
    };
    Ok(v.finish(Some(Lookup {
        feed,
        ids,
        sequences: req.sequences,
    }))?)
}
