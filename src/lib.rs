//! caravan: a gRPC service for trade and economic-cooperation data, stored in
//! an embedded sled database.
//!
//! Layers, from the wire inwards: `proto` (generated) ↔ `convert` (parsing and
//! rendering) ↔ `domain` (valid values only) ↔ `storage` (the only sled user),
//! with the gRPC services (`ingest`) and `server` on top and `error` as the one
//! mapping from errors to statuses. See docs/ARCHITECTURE.md.

pub mod bench;
pub mod cli;
pub mod client;
pub mod codec;
pub mod convert;
pub mod demo;
pub mod domain;
pub mod error;
pub mod ingest;
pub mod jsonl;
pub mod proto;
pub mod query;
pub mod report;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod stream;
pub mod subscribe;
pub mod views;
