//! caravan: a gRPC service for trade and economic-cooperation data, stored in
//! an embedded sled database.
//!
//! Where things live (docs/ARCHITECTURE.md draws it):
//! - `grpc/`: the wire edge: the server, the services, request parsing and
//!   answer rendering, the one error → status map;
//! - `convert/`: protobuf messages ↔ domain values, for the edge and the disk;
//! - `domain/`: valid-by-construction values (countries, periods, money, events);
//! - `views/`: the in-memory query views and their computations;
//! - `storage/`: the event log in sled (the only sled user), the writer;
//! - `auth/`: identities, scopes, feeds and quotas (who may do what);
//! - `error`: what can go wrong, shared by every layer;
//! - `proto`: the generated code;
//! - `ops/`: metrics and their HTTP port, backups, verification, the config file;
//! - `tools/`: the demo, the bench and the command-line clients;
//! - `cli`: the command line.
//!
//! The library exposes what the binary and the tests need; everything else is
//! crate-private.

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod convert;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod ops;
pub mod proto;
pub mod storage;
pub mod tools;
mod views;
