//! Bounds on what a request may repeat, checked on its encoded bytes before
//! prost builds it: prost decodes a whole message before any handler sees it,
//! and a 4 MiB message of two-byte empty elements would otherwise become
//! millions of structs. Each request type has a [`Shape`]: which of its
//! fields repeat, how often they may, and which nested messages to look into.
//! The scan reads the protobuf wire format without allocating, so its cost is
//! linear in the message's size whatever it holds.
//!
//! The caps on filter lists are constants of the contract (documented in the
//! proto files); the caps on an Append's events and a LookupEvents' ids and
//! sequences are settings (`--max-batch-events`, `--max-lookup`).
//!
//! Depends on prost's wire-format primitives and the domain's violations.

use crate::domain::{FieldViolation, Violations};
use crate::error::Error;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

/// Most countries in any list of a request (there are 249 ISO 3166-1 codes).
pub(crate) const MAX_COUNTRIES: usize = 256;
/// Most sectors in any list of a request (there are 14 sectors).
pub(crate) const MAX_SECTORS: usize = 16;
/// Most flows in a filter (there are 5).
pub(crate) const MAX_FLOWS: usize = 8;
/// Most agreement kinds, statuses, event kinds or groupings in a list.
pub(crate) const MAX_ENUM_LIST: usize = 8;

/// The caps that are settings of the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most events in one Append (`--max-batch-events`).
    pub batch_events: usize,
    /// Most ids, and most sequences, in one LookupEvents (`--max-lookup`).
    pub lookup: usize,
}

impl Limits {
    /// For shapes whose caps are all fixed by the contract.
    pub(crate) const FIXED_ONLY: Limits = Limits {
        batch_events: 0,
        lookup: 0,
    };
}

/// How often a repeated field may occur.
#[derive(Clone, Copy)]
enum Max {
    Fixed(usize),
    BatchEvents,
    Lookup,
}

/// What a field holds.
#[derive(Clone, Copy)]
enum Holds {
    /// Strings or bytes: one element per occurrence.
    Bytes,
    /// Varint numbers or enums, possibly packed: one element per varint.
    Varints,
    /// Messages of this shape.
    Message(&'static Shape),
}

struct Rule {
    number: u32,
    name: &'static str,
    /// `None` for a field that does not repeat.
    repeated: Option<Max>,
    holds: Holds,
}

/// The fields of a message type that the scan bounds or looks into; every
/// other field is skipped.
pub(crate) struct Shape {
    rules: &'static [Rule],
    /// The most bytes one message of this type may take, with what the
    /// violation says.
    max_bytes: Option<(usize, &'static str)>,
    /// The bytes one message of this type takes in memory once decoded (its
    /// struct), where that is far more than it can take on the wire.
    decoded: usize,
}

const fn repeated(number: u32, name: &'static str, max: Max, holds: Holds) -> Rule {
    Rule {
        number,
        name,
        repeated: Some(max),
        holds,
    }
}

const fn single(number: u32, name: &'static str, shape: &'static Shape) -> Rule {
    Rule {
        number,
        name,
        repeated: None,
        holds: Holds::Message(shape),
    }
}

const fn shape(rules: &'static [Rule]) -> Shape {
    Shape {
        rules,
        max_bytes: None,
        decoded: 0,
    }
}

const COUNTRIES: Max = Max::Fixed(MAX_COUNTRIES);
const SECTORS: Max = Max::Fixed(MAX_SECTORS);
const ENUMS: Max = Max::Fixed(MAX_ENUM_LIST);

static AGREEMENT: Shape = shape(&[
    repeated(3, "parties", COUNTRIES, Holds::Bytes),
    repeated(7, "sectors", SECTORS, Holds::Varints),
]);
/// An event of an AppendStream: an oversized one is answered with its own
/// rejection, after decoding (one message, no amplification).
static EVENT: Shape = shape(&[single(12, "agreement", &AGREEMENT)]);
/// An event of an Append, refused before decoding when oversized.
static BATCH_EVENT: Shape = Shape {
    rules: &[single(12, "agreement", &AGREEMENT)],
    max_bytes: Some((
        crate::convert::MAX_EVENT_BYTES,
        "the encoded event is too large",
    )),
    // Events are decoded one at a time (`proto::append_request`); a good
    // one is then held, parsed for the writer, until the batch is stored:
    // about 320 bytes, for an element that can take 2 on the wire.
    decoded: std::mem::size_of::<crate::storage::Prepared>(),
};
static FIGURE_FILTER: Shape = shape(&[
    repeated(1, "reporters", COUNTRIES, Holds::Bytes),
    repeated(2, "partners", COUNTRIES, Holds::Bytes),
    repeated(3, "flows", Max::Fixed(MAX_FLOWS), Holds::Varints),
    repeated(6, "sectors", SECTORS, Holds::Varints),
]);

pub(crate) static APPEND: Shape = shape(&[repeated(
    1,
    "events",
    Max::BatchEvents,
    Holds::Message(&BATCH_EVENT),
)]);
pub(crate) static APPEND_STREAM: Shape = shape(&[single(1, "event", &EVENT)]);
pub(crate) static LOOKUP: Shape = shape(&[
    repeated(1, "event_ids", Max::Lookup, Holds::Bytes),
    repeated(2, "sequences", Max::Lookup, Holds::Varints),
]);
pub(crate) static RECORDS: Shape = shape(&[single(1, "filter", &FIGURE_FILTER)]);
pub(crate) static COUNTRY: Shape = shape(&[
    repeated(2, "partners", COUNTRIES, Holds::Bytes),
    repeated(3, "sectors", SECTORS, Holds::Varints),
]);
pub(crate) static SECTOR: Shape = shape(&[repeated(2, "countries", COUNTRIES, Holds::Bytes)]);
pub(crate) static AGREEMENTS: Shape = shape(&[
    repeated(1, "parties", COUNTRIES, Holds::Bytes),
    repeated(2, "sectors", SECTORS, Holds::Varints),
    repeated(3, "kinds", ENUMS, Holds::Varints),
    repeated(4, "statuses", ENUMS, Holds::Varints),
]);
pub(crate) static AGGREGATE: Shape = shape(&[
    single(1, "filter", &FIGURE_FILTER),
    repeated(2, "group_by", ENUMS, Holds::Varints),
]);
pub(crate) static SUBSCRIBE: Shape = shape(&[
    repeated(4, "kinds", ENUMS, Holds::Varints),
    repeated(5, "countries", COUNTRIES, Holds::Bytes),
    repeated(6, "sectors", SECTORS, Holds::Varints),
]);

/// Backup and Verify: scalars only.
pub(crate) static SCALARS_ONLY: Shape = shape(&[]);

/// The shape of the request of a caravan method (its gRPC path).
pub(crate) fn request_shape(path: &str) -> Option<&'static Shape> {
    Some(match path {
        "/caravan.v1.IngestService/Append" => &APPEND,
        "/caravan.v1.IngestService/AppendStream" => &APPEND_STREAM,
        "/caravan.v1.IngestService/LookupEvents" => &LOOKUP,
        "/caravan.v1.QueryService/StreamTradeRecords" => &RECORDS,
        "/caravan.v1.QueryService/StreamCountryCooperation" => &COUNTRY,
        "/caravan.v1.QueryService/StreamSectorCooperation" => &SECTOR,
        "/caravan.v1.QueryService/StreamAgreements" => &AGREEMENTS,
        "/caravan.v1.QueryService/Aggregate" => &AGGREGATE,
        "/caravan.v1.SubscriptionService/Subscribe" => &SUBSCRIBE,
        "/caravan.v1.OperationsService/Backup" | "/caravan.v1.OperationsService/Verify" => {
            &SCALARS_ONLY
        }
        _ => return None,
    })
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::Undecodable(format!("not a valid protobuf message: {what}"))
}

/// Checks an encoded message of `shape`: well-formed wire format, no
/// repeated field over its cap, no message over its size. Allocates only for
/// the violations it reports. Returns how many bytes the repeated messages
/// in it will take once decoded (their structs, with the spare capacity of
/// the vectors that hold them), where that exceeds their bytes on the wire.
pub(crate) fn check(bytes: &[u8], shape: &Shape, limits: &Limits) -> Result<usize, Error> {
    let mut v = Violations::default();
    let decoded = scan(bytes, shape, limits, None, &mut v)?;
    v.finish(Some(()))?;
    Ok(decoded)
}

/// Where a nested message sits: its field (and element) inside its parent.
/// Written out only for a violation, so the scan allocates nothing else.
struct At<'a> {
    parent: Option<&'a At<'a>>,
    name: &'static str,
    element: Option<usize>,
}

/// The field path of `name` inside `at`, e.g. `events[3].agreement.parties`.
fn path(at: Option<&At<'_>>, name: &str) -> String {
    let mut parts = Vec::new();
    let mut next = at;
    while let Some(a) = next {
        parts.push(match a.element {
            Some(i) => format!("{}[{i}]", a.name),
            None => a.name.to_owned(),
        });
        next = a.parent;
    }
    parts.reverse();
    if !name.is_empty() {
        parts.push(name.to_owned());
    }
    parts.join(".")
}

fn scan<'a>(
    mut buf: &[u8],
    shape: &Shape,
    limits: &Limits,
    at: Option<&'a At<'a>>,
    v: &mut Violations,
) -> Result<usize, Error> {
    if let Some((max, what)) = shape.max_bytes {
        if buf.len() > max {
            v.push(FieldViolation::new(
                path(at, ""),
                format!("{what}: {} bytes; the limit is {max}", buf.len()),
            ));
            return Ok(0);
        }
    }
    let mut decoded = 0usize;
    let mut counts = [0usize; 8];
    while !buf.is_empty() {
        let (number, wire_type) = decode_key(&mut buf).map_err(malformed)?;
        let Some((slot, rule)) = shape
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.number == number)
        else {
            skip_field(wire_type, number, &mut buf, DecodeContext::default()).map_err(malformed)?;
            continue;
        };
        let element = counts[slot];
        let payload: Option<&[u8]> = match wire_type {
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(malformed)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| *l <= buf.len())
                    .ok_or_else(|| malformed(format!("field {} runs past the end", rule.name)))?;
                let (payload, rest) = buf.split_at(len);
                buf = rest;
                Some(payload)
            }
            WireType::Varint if matches!(rule.holds, Holds::Varints) => {
                decode_varint(&mut buf).map_err(malformed)?;
                None
            }
            other => {
                return Err(malformed(format!(
                    "field {} has wire type {other:?}",
                    rule.name
                )))
            }
        };
        counts[slot] += match (rule.holds, payload) {
            // A packed run: one element per varint.
            (Holds::Varints, Some(mut packed)) => {
                let mut n = 0;
                while !packed.is_empty() {
                    decode_varint(&mut packed).map_err(malformed)?;
                    n += 1;
                }
                n
            }
            _ => 1,
        };
        if let (Holds::Message(inner), Some(payload)) = (rule.holds, payload) {
            let within = rule.repeated.is_none_or(|max| element < cap(max, limits));
            if within {
                let inside = At {
                    parent: at,
                    name: rule.name,
                    element: rule.repeated.map(|_| element),
                };
                decoded += scan(payload, inner, limits, Some(&inside), v)?;
            }
        }
    }
    for (rule, count) in shape.rules.iter().zip(counts) {
        if let Some(max) = rule.repeated {
            let cap = cap(max, limits);
            if count > cap {
                v.push(FieldViolation::new(
                    path(at, rule.name),
                    too_many(max, cap, count),
                ));
            } else if let Holds::Message(inner) = rule.holds {
                // A vector grows by doubling: up to twice its elements.
                decoded += count.next_power_of_two() * inner.decoded;
            }
        }
    }
    Ok(decoded)
}

fn cap(max: Max, limits: &Limits) -> usize {
    match max {
        Max::Fixed(n) => n,
        Max::BatchEvents => limits.batch_events,
        Max::Lookup => limits.lookup,
    }
}

fn too_many(max: Max, cap: usize, count: usize) -> String {
    match max {
        Max::BatchEvents => format!(
            "at most {cap} events per request; got {count} (split the batch or use AppendStream)"
        ),
        Max::Lookup => format!("at most {cap} per request; got {count}"),
        Max::Fixed(_) => format!("at most {cap} are allowed; got {count}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1 as pb;
    use prost::Message;

    const LIMITS: Limits = Limits {
        batch_events: 3,
        lookup: 2,
    };

    fn fields(e: Error) -> Vec<String> {
        match e {
            Error::InvalidArgument(vs) => vs.into_iter().map(|v| v.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeated_fields_over_their_cap_are_refused_without_decoding() {
        // Four empty events, two bytes each.
        let bytes = [0x0a, 0x00].repeat(4);
        let err = check(&bytes, &APPEND, &LIMITS).unwrap_err();
        assert_eq!(fields(err), ["events"]);
        // Three fit, and may take four parsed events' room (a vector grows
        // by doubling) once parsed for the writer.
        let decoded = check(&[0x0a, 0x00].repeat(3), &APPEND, &LIMITS).unwrap();
        assert_eq!(decoded, 4 * std::mem::size_of::<crate::storage::Prepared>());
    }

    #[test]
    fn packed_and_unpacked_numbers_count_alike() {
        let packed = pb::LookupEventsRequest {
            event_ids: vec![],
            sequences: vec![1, 2, 3],
            feed: String::new(),
        }
        .encode_to_vec();
        assert_eq!(
            fields(check(&packed, &LOOKUP, &LIMITS).unwrap_err()),
            ["sequences"]
        );
        // The same three sequences unpacked: tag 2 as a varint, three times.
        let unpacked = [0x10, 1, 0x10, 2, 0x10, 3];
        assert_eq!(
            fields(check(&unpacked, &LOOKUP, &LIMITS).unwrap_err()),
            ["sequences"]
        );
    }

    #[test]
    fn nested_lists_are_bounded_with_their_path() {
        let agreement = pb::Agreement {
            parties: vec!["CN".into(); MAX_COUNTRIES + 1],
            ..Default::default()
        };
        let request = pb::AppendRequest::new(vec![pb::Event {
            payload: Some(pb::event::Payload::Agreement(agreement)),
            ..Default::default()
        }]);
        let bytes = request.encode_to_vec();
        let err = check(
            &bytes,
            &APPEND,
            &Limits {
                batch_events: 10,
                lookup: 10,
            },
        )
        .unwrap_err();
        assert_eq!(fields(err), ["events[0].agreement.parties"]);
        // An event over its size limit is refused as a whole.
        let big = pb::AppendRequest::new(vec![pb::Event {
            event_id: "x".repeat(4000),
            ..Default::default()
        }]);
        let err = check(&big.encode_to_vec(), &APPEND, &LIMITS).unwrap_err();
        assert_eq!(fields(err), ["events[0]"]);
        let bytes = pb::AppendStreamRequest {
            event: request.into_events().unwrap().into_iter().next(),
        }
        .encode_to_vec();
        assert_eq!(
            fields(check(&bytes, &APPEND_STREAM, &LIMITS).unwrap_err()),
            ["event.agreement.parties"]
        );
        let filter = pb::StreamTradeRecordsRequest {
            filter: Some(pb::FigureFilter {
                flows: vec![1; MAX_FLOWS + 1],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            fields(check(&filter, &RECORDS, &LIMITS).unwrap_err()),
            ["filter.flows"]
        );
    }

    #[test]
    fn malformed_bytes_are_undecodable() {
        for bytes in [&[0x08, 0xff][..], &[0x0a, 0x05, 0x01], &[0x0b], &[0x0a]] {
            assert!(
                matches!(check(bytes, &APPEND, &LIMITS), Err(Error::Undecodable(_))),
                "{bytes:?}"
            );
        }
    }
}
