//! Operations: what an operator runs the service with beyond its API.
//! `metrics` (the families and their text form) and `exporter` (the
//! `--metrics-listen` HTTP port); `backup` (the backup directory: manifest,
//! segment files, checksums); `verify` (what `caravan verify` and the
//! Verify RPC check); `config` (the `--config` file).
//!
//! Depends on the store facade, the views and the domain; the gRPC edge
//! uses it, not the other way round (the exporter only borrows the edge's
//! TLS and identities).

pub mod backup;
pub mod config;
pub mod exporter;
pub mod metrics;
pub(crate) mod verify;
