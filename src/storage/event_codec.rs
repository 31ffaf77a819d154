//! The on-disk form of one event: the `caravan.v1.StoredEvent` protobuf
//! message (sequence, ingested_at, event), so that the stored format evolves
//! under protobuf's compatibility rules. `types.proto` marks the message as
//! the disk format, and CI runs `buf breaking` on the contract so that an
//! incompatible change cannot land unnoticed. The log chunks that hold these
//! encodings are in `layout`.
//!
//! Depends on the domain, the generated messages and `convert`; not on sled.

use crate::convert::{parse_event, pb_event, pb_timestamp, timestamp};
use crate::domain::{Event, IdentityName, StoredEvent, Timestamp};
use crate::proto::v1 as pb;
use prost::Message;

/// Encodes a stored event as it is kept on disk (the writer builds the same
/// bytes from parts, [`encode_stored_parts`]).
#[cfg(test)]
fn encode_stored(s: &StoredEvent) -> Vec<u8> {
    crate::convert::pb_stored_event(s).encode_to_vec()
}

/// Decodes and re-checks a stored event (the disk is not trusted either).
pub(crate) fn decode_stored(bytes: &[u8]) -> Result<StoredEvent, String> {
    let msg = pb::StoredEvent::decode(bytes).map_err(|e| format!("undecodable event: {e}"))?;
    let ingested_at = msg
        .ingested_at
        .as_ref()
        .ok_or("stored event without ingested_at")
        .and_then(|t| timestamp(t).map_err(|_| "stored event with a bad ingested_at"))?;
    let event = msg.event.as_ref().ok_or("stored event without event")?;
    let event = parse_event(event).map_err(|vs| {
        let first = vs
            .first()
            .map(|v| format!("{}: {}", v.field, v.description))
            .unwrap_or_default();
        format!("stored event {} does not parse: {first}", msg.sequence)
    })?;
    let written_by = match msg.written_by.as_str() {
        "" => None,
        name => Some(IdentityName::parse(name).map_err(|e| {
            format!(
                "stored event {} has a bad written_by {name:?}: {e}",
                msg.sequence
            )
        })?),
    };
    Ok(StoredEvent {
        sequence: msg.sequence,
        ingested_at,
        event,
        written_by,
    })
}

/// Encodes an event's wire form once, before it reaches the single writer
/// thread (the writer only wraps it with the sequence and ingestion time).
pub(crate) fn encode_event(e: &Event) -> Vec<u8> {
    pb_event(e).encode_to_vec()
}

/// Appends the `StoredEvent` encoding of (sequence, ingested_at, event,
/// written_by) to `out`, where `event_bytes` is [`encode_event`]'s output.
/// Byte-identical to [`encode_stored`] of the same stored event.
pub(crate) fn encode_stored_parts(
    sequence: u64,
    ingested_at: &Timestamp,
    event_bytes: &[u8],
    written_by: Option<&IdentityName>,
    out: &mut Vec<u8>,
) {
    use prost::encoding::{encode_key, encode_varint, message, WireType};
    if sequence != 0 {
        encode_key(1, WireType::Varint, out);
        encode_varint(sequence, out);
    }
    message::encode(2, &pb_timestamp(ingested_at), out);
    encode_key(3, WireType::LengthDelimited, out);
    encode_varint(event_bytes.len() as u64, out);
    out.extend_from_slice(event_bytes);
    if let Some(name) = written_by {
        encode_key(4, WireType::LengthDelimited, out);
        encode_varint(name.as_str().len() as u64, out);
        out.extend_from_slice(name.as_str().as_bytes());
    }
}

/// The (feed, event id) of an encoded `StoredEvent`, as
/// `layout::id_key` writes it: the message is decoded but not checked
/// against the domain (recovery compares the events of colliding
/// fingerprints with it).
pub(crate) fn stored_event_key(bytes: &[u8]) -> Result<String, String> {
    let msg = pb::StoredEvent::decode(bytes).map_err(|e| format!("undecodable event: {e}"))?;
    let event = msg.event.unwrap_or_default();
    Ok(super::layout::id_key(&event.feed, &event.event_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CommodityScope, Country, EventId, FeedName, Flow, Frequency, HsCode, Payload, Period, Text,
        TradeFigureKey, TradeRecord, UsdAmount,
    };

    fn event() -> Event {
        let key = TradeFigureKey::new(
            Country::parse("CN").unwrap(),
            Country::parse("KZ").unwrap(),
            Flow::Turnover,
            Period::new(2022, Frequency::Annual, 0).unwrap(),
            CommodityScope::Hs(HsCode::parse("2711").unwrap()),
        )
        .unwrap();
        Event {
            id: EventId::parse("e-1").unwrap(),
            feed: FeedName::parse("mofcom").unwrap(),
            occurred_at: None,
            payload: Payload::TradeRecord(TradeRecord {
                key,
                value: UsdAmount::new("USD", 31_200_000_000, 0).unwrap(),
                quantity: None,
                source: Text::parse("S6").unwrap(),
                note: Text::parse("verified").unwrap(),
            }),
        }
    }

    #[test]
    fn stored_parts_encode_like_the_whole_message() {
        for written_by in [None, Some(IdentityName::parse("mofcom-feed").unwrap())] {
            let stored = StoredEvent {
                sequence: 42,
                ingested_at: Timestamp::new(1_700_000_000, 5).unwrap(),
                event: event(),
                written_by,
            };
            let mut parts = Vec::new();
            encode_stored_parts(
                42,
                &stored.ingested_at,
                &encode_event(&stored.event),
                stored.written_by.as_ref(),
                &mut parts,
            );
            assert_eq!(parts, encode_stored(&stored));
            assert_eq!(decode_stored(&parts).unwrap(), stored);
            assert_eq!(stored_event_key(&parts).unwrap(), "mofcom\0e-1");
        }
    }

    #[test]
    fn a_stored_event_that_no_longer_parses_is_refused() {
        let mut wire = crate::convert::pb_stored_event(&StoredEvent {
            sequence: 7,
            ingested_at: Timestamp::new(0, 0).unwrap(),
            event: event(),
            written_by: None,
        });
        if let Some(e) = wire.event.as_mut() {
            e.feed.clear();
        }
        let err = decode_stored(&wire.encode_to_vec()).unwrap_err();
        assert!(err.contains("stored event 7 does not parse"), "{err}");
        assert!(decode_stored(&[0xff, 0xff]).is_err());
        let mut wire = crate::convert::pb_stored_event(&StoredEvent {
            sequence: 8,
            ingested_at: Timestamp::new(0, 0).unwrap(),
            event: event(),
            written_by: None,
        });
        wire.written_by = "not a name!".into();
        let err = decode_stored(&wire.encode_to_vec()).unwrap_err();
        assert!(err.contains("stored event 8 has a bad written_by"), "{err}");
    }
}
