//! `caravan.v1.AppendRequest`, the one message written by hand (`build.rs`
//! maps it here with `extern_path`): on the wire it is exactly the proto's
//! `repeated Event events = 1`, but the server keeps the bytes it received
//! and decodes the events one at a time, as it parses them. prost would
//! otherwise build every `Event` struct (about 300 bytes each) before the
//! handler sees one: 10,000 empty events, 20 KB on the wire, took 2.6 MiB.
//!
//! Clients build it from events ([`AppendRequest::new`]). Depends only on
//! prost and the generated `Event`.

use super::v1::Event;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, decode_key, decode_varint, DecodeContext, WireType};
use prost::{DecodeError, Message};
use std::borrow::Cow;

/// Why a received request's events could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Undecodable(String);

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Undecodable {}

impl From<DecodeError> for Undecodable {
    fn from(e: DecodeError) -> Self {
        Undecodable(e.to_string())
    }
}

/// The field number of `events`.
const EVENTS: u32 = 1;

/// A batch of events to append, all or nothing.
#[derive(Clone, PartialEq, Default)]
pub struct AppendRequest {
    body: Body,
}

#[derive(Clone, PartialEq)]
enum Body {
    /// Built by a client, or decoded by prost's own `merge`.
    Events(Vec<Event>),
    /// As the server's codec received it: decoded lazily.
    Received(Bytes),
}

impl Default for Body {
    fn default() -> Self {
        Body::Events(Vec::new())
    }
}

impl AppendRequest {
    /// A request of these events, in order.
    pub fn new(events: Vec<Event>) -> Self {
        AppendRequest {
            body: Body::Events(events),
        }
    }

    /// A request as received: `bytes` is one encoded `AppendRequest`, whose
    /// events are decoded only when [`AppendRequest::events`] yields them.
    pub fn received(bytes: Bytes) -> Self {
        AppendRequest {
            body: Body::Received(bytes),
        }
    }

    /// How many events the request holds, counted without decoding them.
    pub fn len(&self) -> Result<usize, Undecodable> {
        match &self.body {
            Body::Events(events) => Ok(events.len()),
            Body::Received(bytes) => {
                let mut n = 0;
                for entry in Entries(bytes) {
                    entry?;
                    n += 1;
                }
                Ok(n)
            }
        }
    }

    /// Whether the request holds no event.
    pub fn is_empty(&self) -> Result<bool, Undecodable> {
        Ok(self.len()? == 0)
    }

    /// The events in order; a received one is decoded as it is yielded, so
    /// only one is held at a time.
    pub fn events(&self) -> impl Iterator<Item = Result<Cow<'_, Event>, Undecodable>> + '_ {
        let (built, received) = match &self.body {
            Body::Events(events) => (Some(events.iter().map(|e| Ok(Cow::Borrowed(e)))), None),
            Body::Received(bytes) => (
                None,
                Some(Entries(bytes).map(|entry| Ok(Cow::Owned(Event::decode(entry?)?)))),
            ),
        };
        built
            .into_iter()
            .flatten()
            .chain(received.into_iter().flatten())
    }

    /// The events, decoded (every one at once: for clients and tests).
    pub fn into_events(self) -> Result<Vec<Event>, Undecodable> {
        match self.body {
            Body::Events(events) => Ok(events),
            Body::Received(bytes) => Entries(&bytes).map(|e| Ok(Event::decode(e?)?)).collect(),
        }
    }
}

impl From<Vec<Event>> for AppendRequest {
    fn from(events: Vec<Event>) -> Self {
        AppendRequest::new(events)
    }
}

/// Not the bytes: a request's debug form is logged.
impl std::fmt::Debug for AppendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.body {
            Body::Events(events) => write!(f, "AppendRequest {{ {} events }}", events.len()),
            Body::Received(bytes) => write!(f, "AppendRequest {{ {} bytes }}", bytes.len()),
        }
    }
}

/// The encoded `events` of an encoded request, one slice each; other fields
/// are skipped, as prost skips unknown fields.
struct Entries<'a>(&'a [u8]);

impl<'a> Iterator for Entries<'a> {
    type Item = Result<&'a [u8], Undecodable>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.0.is_empty() {
                return None;
            }
            let entry = self.entry();
            match entry {
                Ok(None) => continue,
                Ok(Some(e)) => return Some(Ok(e)),
                Err(e) => {
                    // Nothing after a malformed field can be read.
                    self.0 = &[];
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<'a> Entries<'a> {
    /// The next field: `Some` an event's bytes, `None` a skipped field.
    fn entry(&mut self) -> Result<Option<&'a [u8]>, Undecodable> {
        let mut buf = self.0;
        let (number, wire_type) = decode_key(&mut buf)?;
        if number != EVENTS {
            encoding::skip_field(wire_type, number, &mut buf, DecodeContext::default())?;
            self.0 = buf;
            return Ok(None);
        }
        if wire_type != WireType::LengthDelimited {
            return Err(Undecodable(format!(
                "field events has wire type {wire_type:?}"
            )));
        }
        let len = usize::try_from(decode_varint(&mut buf)?)
            .ok()
            .filter(|len| *len <= buf.len())
            .ok_or_else(|| Undecodable("field events runs past the end".into()))?;
        let (event, rest) = buf.split_at(len);
        self.0 = rest;
        Ok(Some(event))
    }
}

impl Message for AppendRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.body {
            Body::Events(events) => {
                for e in events {
                    encoding::message::encode(EVENTS, e, buf);
                }
            }
            Body::Received(bytes) => buf.put_slice(bytes),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != EVENTS {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        if let Body::Received(bytes) = &self.body {
            // prost's own path for what was received so far.
            let mut events = Vec::new();
            let mut received = bytes.as_ref();
            while received.has_remaining() {
                let (number, wire_type) = decode_key(&mut received)?;
                if number == EVENTS {
                    encoding::message::merge_repeated(
                        wire_type,
                        &mut events,
                        &mut received,
                        ctx.clone(),
                    )?;
                } else {
                    encoding::skip_field(wire_type, number, &mut received, ctx.clone())?;
                }
            }
            self.body = Body::Events(events);
        }
        match &mut self.body {
            Body::Events(events) => encoding::message::merge_repeated(wire_type, events, buf, ctx),
            Body::Received(_) => unreachable!("turned into events above"),
        }
    }

    fn encoded_len(&self) -> usize {
        match &self.body {
            Body::Events(events) => encoding::message::encoded_len_repeated(EVENTS, events),
            Body::Received(bytes) => bytes.len(),
        }
    }

    fn clear(&mut self) {
        self.body = Body::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            event_id: id.into(),
            feed: "f".into(),
            ..Default::default()
        }
    }

    #[test]
    fn received_bytes_decode_to_the_events_sent() {
        let sent = AppendRequest::new(vec![event("a"), event("b"), Event::default()]);
        let mut bytes = sent.encode_to_vec();
        // An unknown field between the events is skipped, as prost does.
        bytes.splice(0..0, [0x10, 0x07]);
        let received = AppendRequest::received(Bytes::from(bytes.clone()));
        assert_eq!(received.len().unwrap(), 3);
        let ids: Vec<String> = received
            .events()
            .map(|e| e.unwrap().event_id.clone())
            .collect();
        assert_eq!(ids, ["a", "b", ""]);
        // prost's own decoding agrees, and a received request encodes as sent.
        let decoded = AppendRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            decoded.into_events().unwrap(),
            sent.clone().into_events().unwrap()
        );
        assert_eq!(received.encode_to_vec(), bytes);
        assert_eq!(received.encoded_len(), bytes.len());
    }

    #[test]
    fn a_malformed_entry_is_an_error_not_a_panic() {
        for bytes in [
            &[0x0a, 0x05, 0x01][..],
            &[0x08],
            &[0x0d, 0, 0, 0, 0],
            &[0x0a, 0x02, 0x08, 0xff],
        ] {
            let received = AppendRequest::received(Bytes::copy_from_slice(bytes));
            let decoded: Result<Vec<_>, _> = received.events().collect();
            assert!(decoded.is_err(), "{bytes:?}");
        }
    }
}
