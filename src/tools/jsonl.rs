//! Events in the proto3 JSON mapping, one per line (JSON Lines), read through
//! the embedded descriptor set. Depends on the generated code and prost-reflect.

use crate::proto::{self, v1 as pb};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use std::sync::OnceLock;

fn pool() -> Result<&'static DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("descriptor set: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn descriptor(full_name: &str) -> Result<MessageDescriptor, String> {
    pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("{full_name} is not in the descriptor set"))
}

fn event_descriptor() -> Result<MessageDescriptor, String> {
    descriptor("caravan.v1.Event")
}

/// Any of our messages in the proto3 JSON mapping, on one line.
pub fn message_to_json<M: Message>(message: &M, full_name: &str) -> Result<String, String> {
    let dynamic =
        DynamicMessage::decode(descriptor(full_name)?, message.encode_to_vec().as_slice())
            .map_err(|e| e.to_string())?;
    serde_json::to_string(&dynamic).map_err(|e| e.to_string())
}

/// Parses one line of proto3 JSON into an event.
pub fn parse_event_line(line: &str) -> Result<pb::Event, String> {
    let descriptor = event_descriptor()?;
    let mut de = serde_json::Deserializer::from_str(line);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    pb::Event::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| e.to_string())
}

/// Parses every non-blank line; errors name the 1-based line number.
pub fn parse_events(text: &str) -> Result<Vec<pb::Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_event_line(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seed_files_parse() {
        let trade = super::parse_events(include_str!("../../data/seed/trade.jsonl")).unwrap();
        assert_eq!(trade.len(), 38);
        let agreements =
            super::parse_events(include_str!("../../data/seed/agreements.jsonl")).unwrap();
        assert_eq!(agreements.len(), 16);
        assert!(super::parse_event_line("{\"eventId\": 5}").is_err());
    }
}
