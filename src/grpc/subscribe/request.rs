//! A subscribe request → where the subscription starts and what it delivers,
//! or INVALID_ARGUMENT naming every bad field (OUT_OF_RANGE for a start after
//! the newest durable event).
//!
//! Depends on the generated request, `convert` and the domain.

use super::filter::Filter;
use crate::convert;
use crate::domain::{Country, EventKind, Violations};
use crate::error::Error;
use crate::proto::v1 as pb;

/// A parsed subscription: the last sequence before its first event, and its
/// filter.
pub(super) struct Subscribe {
    pub after: u64,
    pub filter: Filter,
}

fn kind(raw: i32) -> Result<EventKind, String> {
    match pb::EventKind::try_from(raw) {
        Ok(pb::EventKind::TradeRecord) => Ok(EventKind::TradeRecord),
        Ok(pb::EventKind::TradeRecordRetracted) => Ok(EventKind::TradeRecordRetracted),
        Ok(pb::EventKind::Agreement) => Ok(EventKind::Agreement),
        Ok(pb::EventKind::AgreementStatusChanged) => Ok(EventKind::AgreementStatusChanged),
        _ => Err("is not a known event kind".into()),
    }
}

/// Parses `req` given the newest durable sequence.
pub(super) fn parse(req: &pb::SubscribeRequest, newest: u64) -> Result<Subscribe, Error> {
    use pb::subscribe_request::Start;
    let mut v = Violations::default();
    let after = match req.start {
        None => v.check(
            "start",
            Err("is required: from_beginning, after_sequence or from_now".into()),
        ),
        Some(Start::FromBeginning(_)) => Some(0),
        Some(Start::FromNow(_)) => Some(newest),
        Some(Start::AfterSequence(s)) if s > newest => {
            return Err(Error::OutOfRange(format!(
                "after_sequence {s} is after the newest durable sequence {newest}"
            )));
        }
        Some(Start::AfterSequence(s)) => Some(s),
    };
    let kinds = v.each("kinds", &req.kinds, |k| kind(*k));
    let countries = v.each("countries", &req.countries, |c| Country::parse(c));
    let sectors = v.each("sectors", &req.sectors, |s| convert::sector(*s));
    let filter = Filter {
        kinds,
        countries,
        sectors,
    };
    Ok(v.finish(after.map(|after| Subscribe { after, filter }))?)
}
