//! Everything that runs the service or talks to it from outside, through the
//! gRPC API only: the demo (`caravan demo`), the benchmark (`caravan bench`),
//! the command-line clients (`client/`: `caravan ingest`, `query`,
//! `subscribe`), the dataset generator (`caravan gen`), proto3 JSON Lines
//! (`jsonl`), terminal tables (`terminal`), a raw-bytes gRPC codec (`raw`,
//! for the hostile section and the hostile-input tests) and the credentials
//! helpers of `caravan auth` (`auth`), and the bench's sections on worst-case
//! requests (`hostile`) and on identities (`identities`: their cost on the
//! ingest path, quota isolation).
//!
//! The bench's gRPC floor (`floor`) is the one service here: caravan's
//! generated ingest service, acknowledging without storing.
//!
//! Depends on the generated clients and messages and on the server's start
//! function; never on the services' internals or sled (the bench's sled
//! ceiling goes through the store facade).

pub(crate) mod auth;
pub(crate) mod bench;
pub(crate) mod client;
pub(crate) mod cluster_bench;
pub(crate) mod demo;
pub(crate) mod floor;
pub(crate) mod gen;
pub(crate) mod hostile;
pub(crate) mod identities;
pub(crate) mod ingest_bench;
pub mod jsonl;
pub mod local_nats;
pub mod operations;
pub mod raw;
pub(crate) mod terminal;
