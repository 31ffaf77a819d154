//! The parser threads of `caravan ingest`: a chunk of lines or records
//! becomes events (JSON Lines straight into the generated types; Comtrade
//! rows read in place), each completed (feed, derived id) and encoded once
//! into the Append batch of the connection its figure or agreement belongs
//! to, so that the events of one figure reach the server in file order.
//!
//! Depends on the JSON Lines and Comtrade parsers and the generated
//! messages; never on the network.

use super::input::{Chunk, Kind};
use super::{Batch, Rejection};
use crate::proto::v1 as pb;
use prost::Message;

/// What a chunk became: one batch per connection (some may be empty), and
/// the lines that are not events.
pub(crate) struct Parsed {
    pub(crate) batches: Vec<Batch>,
    pub(crate) rejected: Vec<Rejection>,
}

/// Fills in the feed (when the event names none) and the id (when it has
/// none), exactly as every earlier version did, so ids stay stable: the id is
/// `feed:` and the XXH3-128 of the feed, a zero byte and the event's encoding
/// without an id; the same record read twice gets the same id. Returns the
/// length of that prefix when it derived the id: `scratch` then ends with
/// the event's encoding without its id.
fn finish(event: &mut pb::Event, feed: &str, scratch: &mut Vec<u8>) -> Option<usize> {
    if event.feed.is_empty() {
        event.feed = feed.to_owned();
    }
    if !event.event_id.is_empty() {
        return None;
    }
    scratch.clear();
    scratch.extend_from_slice(event.feed.as_bytes());
    scratch.push(0);
    let prefix = scratch.len();
    event.encode_raw(scratch);
    event.event_id = format!(
        "{}:{:032x}",
        event.feed,
        xxhash_rust::xxh3::xxh3_128(scratch)
    );
    Some(prefix)
}

/// Appends `event` to an `AppendRequest` body as its field 1, as prost writes
/// a repeated message. When `finish` derived its id, the encoding without
/// the id is already in `scratch` after `prefix`: prost writes fields in tag
/// order and `event_id` is field 1, so the full encoding is the id's field
/// followed by those bytes, and the event is not encoded a second time.
fn append_event(body: &mut Vec<u8>, event: &pb::Event, derived: Option<(usize, &[u8])>) {
    use prost::encoding::{encode_key, encode_varint, string, WireType};
    let Some((prefix, scratch)) = derived else {
        prost::encoding::message::encode(1, event, body);
        return;
    };
    let rest = &scratch[prefix..];
    encode_key(1, WireType::LengthDelimited, body);
    encode_varint(
        (string::encoded_len(1, &event.event_id) + rest.len()) as u64,
        body,
    );
    string::encode(1, &event.event_id, body);
    body.extend_from_slice(rest);
}

/// Which of `n` connections an event goes to: by its figure's key (country
/// codes in either ISO form count as one) or its agreement's id, so that a
/// revision never overtakes what it revises.
fn connection(event: &pb::Event, n: usize) -> usize {
    use pb::event::Payload;
    use std::hash::Hasher;
    if n <= 1 {
        return 0;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let country = |h: &mut xxhash_rust::xxh3::Xxh3, code: &str| {
        match crate::domain::Country::parse(code) {
            Ok(c) => h.write(c.alpha2().as_bytes()),
            Err(_) => h.write(code.as_bytes()),
        }
        h.write_u8(0);
    };
    let key = |h: &mut xxhash_rust::xxh3::Xxh3,
               reporter: &str,
               partner: &str,
               flow: i32,
               period: Option<&pb::Period>,
               commodity: Option<&pb::CommodityScope>| {
        country(h, reporter);
        country(h, partner);
        h.write_i32(flow);
        if let Some(p) = period {
            h.write_i32(p.year);
            h.write_i32(p.frequency);
            h.write_i32(p.number);
        }
        match commodity.and_then(|c| c.scope.as_ref()) {
            Some(pb::commodity_scope::Scope::HsCode(code)) => h.write(code.as_bytes()),
            Some(pb::commodity_scope::Scope::Sector(s)) => h.write_i32(*s),
            Some(pb::commodity_scope::Scope::All(_)) | None => {}
        }
    };
    match &event.payload {
        Some(Payload::TradeRecord(r)) => key(
            &mut h,
            &r.reporter,
            &r.partner,
            r.flow,
            r.period.as_ref(),
            r.commodity.as_ref(),
        ),
        Some(Payload::TradeRecordRetracted(r)) => {
            if let Some(k) = &r.key {
                key(
                    &mut h,
                    &k.reporter,
                    &k.partner,
                    k.flow,
                    k.period.as_ref(),
                    k.commodity.as_ref(),
                )
            }
        }
        Some(Payload::Agreement(a)) => h.write(a.agreement_id.as_bytes()),
        Some(Payload::AgreementStatusChanged(s)) => h.write(s.agreement_id.as_bytes()),
        None => h.write(event.event_id.as_bytes()),
    }
    (h.finish() % n as u64) as usize
}

/// Parses a chunk into `connections` batches.
pub(crate) fn parse(chunk: Chunk, feed: &str, connections: usize) -> Parsed {
    let mut out = Parsed {
        batches: (0..connections).map(|_| Batch::new(chunk.file)).collect(),
        rejected: Vec::new(),
    };
    let mut scratch = Vec::new();
    let mut bodies: Vec<Vec<u8>> =
        vec![Vec::with_capacity(chunk.bytes.len() / connections); connections];
    let mut add = |result: Result<pb::Event, String>, line: u64, out: &mut Parsed| match result {
        Ok(mut event) => {
            let derived = finish(&mut event, feed, &mut scratch);
            let to = connection(&event, connections);
            append_event(
                &mut bodies[to],
                &event,
                derived.map(|p| (p, scratch.as_slice())),
            );
            out.batches[to].lines.push(line);
        }
        Err(reason) => out.rejected.push(Rejection {
            file: chunk.file,
            line,
            reason,
        }),
    };
    match &chunk.kind {
        Kind::Jsonl => {
            let lines = (chunk.first_line..).zip(chunk.bytes.split(|&b| b == b'\n'));
            for (line, text) in lines {
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                if !text.iter().all(u8::is_ascii_whitespace) {
                    let event = crate::tools::jsonl::parse_event_bytes(text)
                        .map_err(|e| format!("not an event: {e}"));
                    add(event, line, &mut out);
                }
            }
        }
        Kind::Comtrade(columns) => {
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(chunk.bytes.as_slice());
            let mut record = csv::ByteRecord::new();
            // Line numbers from the records' byte offsets: csv's own line
            // count lags a record behind after a CRLF line end.
            let mut lines = LineCounter::new(&chunk.bytes, chunk.first_line);
            loop {
                match csv.read_byte_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = lines.at(record.position().map_or(0, csv::Position::byte));
                        let event = super::super::comtrade::row_to_event(columns, &record, feed);
                        add(event, line, &mut out);
                    }
                    Err(e) => {
                        let line = lines.at(e.position().map_or(0, csv::Position::byte));
                        add(Err(e.to_string()), line, &mut out);
                    }
                }
            }
        }
    }
    for (batch, body) in out.batches.iter_mut().zip(bodies) {
        batch.body = body.into();
    }
    out
}

/// The line number of a byte offset in a chunk, counted forwards only.
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8], first_line: u64) -> Self {
        LineCounter {
            bytes,
            offset: 0,
            line: first_line,
        }
    }

    /// The line of the record that starts at `offset` (or after the line
    /// ends and blank lines there).
    fn at(&mut self, offset: u64) -> u64 {
        let mut start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        while matches!(self.bytes.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start > self.offset {
            let newlines = self.bytes[self.offset..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.line += newlines as u64;
            self.offset = start;
        }
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn csv_like() -> pb::Event {
        pb::Event {
            payload: Some(pb::event::Payload::TradeRecord(pb::TradeRecord {
                reporter: "CN".into(),
                partner: "KZ".into(),
                flow: pb::Flow::Export as i32,
                value: Some(pb::Money {
                    currency_code: "USD".into(),
                    units: 1_234_567,
                    nanos: 890_000_000,
                }),
                source: "UN Comtrade".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_encoded_once_is_what_prost_encodes() {
        for given_id in ["", "kept-id"] {
            let mut event = pb::Event {
                event_id: given_id.into(),
                ..csv_like()
            };
            let mut scratch = Vec::new();
            let derived = finish(&mut event, "cli", &mut scratch);
            assert_eq!(derived.is_some(), given_id.is_empty());
            let mut ours = Vec::new();
            append_event(&mut ours, &event, derived.map(|p| (p, scratch.as_slice())));
            let mut prosts = Vec::new();
            prost::encoding::message::encode(1, &event, &mut prosts);
            assert_eq!(ours, prosts);
        }
    }

    #[test]
    fn derived_ids_are_those_of_earlier_versions() {
        // The rule every earlier version used, written out.
        let mut event = csv_like();
        event.feed = "cli".into();
        let mut bytes = b"cli\0".to_vec();
        bytes.extend(event.encode_to_vec());
        let expected = format!("cli:{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
        let mut fresh = csv_like();
        finish(&mut fresh, "cli", &mut Vec::new());
        assert_eq!(fresh.event_id, expected);
        assert_eq!(fresh.feed, "cli");
    }
}
