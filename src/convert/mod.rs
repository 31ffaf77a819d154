//! Protobuf messages ↔ domain values: the only code that converts between
//! the generated types and the domain. Two edges use it: the gRPC services
//! (`grpc/`), for what crosses the network, and the store's on-disk codec
//! (`storage::event_codec`), because a stored event is kept as its
//! `StoredEvent` message. It lives beside both so that the store does not
//! depend on the network edge.
//!
//! Depends on the domain and the generated messages; must not depend on
//! tonic services, the storage module or sled.

mod parse;
mod render;

pub use parse::parse_event;
pub(crate) use parse::*;
pub(crate) use render::*;
