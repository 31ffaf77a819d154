//! The gRPC edge: where requests enter and answers leave. The server
//! (`server`: tonic, health, reflection, limits, TLS in `tls` and the
//! connections it takes in `connections`, the per-RPC span of `trace`, who
//! may call what in `access`, what a request must be before it is decoded
//! in `admission` and `wire`, shutdown), the three services (`ingest`,
//! `query`, `subscribe`),
//! each parsing its requests into domain values and rendering its answers,
//! and what they share: the codec that decodes requests (`codec`), bounded
//! response streams (`stream`), the shutdown signal (`shutdown`) and the one
//! mapping from errors to statuses (`status`).
//!
//! The generated protobuf types are used here, in `convert` and in the
//! store's disk codec, and nowhere else in the service. Depends on the
//! store facade, the views, the domain and tonic; never on sled.

mod access;
mod admission;
pub(crate) mod codec;
mod connections;
mod exporter;
mod exposure;
pub mod freshness;
mod ingest;
mod operations;
mod query;
pub mod server;
pub(crate) mod shutdown;
mod status;
mod store_state;
mod stream;
mod subscribe;
pub(crate) mod tls;
mod trace;
mod wire;

pub use access::Reflection;
pub use tls::TlsFiles;

pub use ingest::IngestLimits;
pub use query::QueryLimits;
pub use subscribe::SubscribeLimits;

/// The defaults of every limit, for the command line.
pub mod defaults {
    pub use super::ingest::{DEFAULT_MAX_BATCH_EVENTS, DEFAULT_MAX_LOOKUP, DEFAULT_STREAM_WINDOW};
    pub use super::query::{
        DEFAULT_MAX_GROUPS, DEFAULT_MAX_QUERY_STREAMS, DEFAULT_STALL_TIMEOUT,
        DEFAULT_STREAM_BUFFER, DEFAULT_STREAM_BUFFER_BYTES,
    };
    pub use super::server::{
        DEFAULT_DRAIN_DEADLINE, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_LISTEN,
        DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_DECODING_BYTES,
        DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_REQUEST_READ_TIMEOUT,
    };
    pub use super::subscribe::{
        DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_RECENT_EVENTS, DEFAULT_SUBSCRIPTION_BUFFER,
    };
}
