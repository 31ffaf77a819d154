//! Operations: what an operator runs the service with beyond its API.
//! `metrics` (the families and their text form; the gRPC edge serves them
//! on `--metrics-listen`, `grpc/exporter.rs`); `backup` (the backup
//! directory: manifest, segment files, checksums); `verify` (the views
//! checked against views rebuilt from the log, for `caravan verify` and the
//! Verify RPC); `projection` (the views as a store's projection, for the
//! server and for `verify`); `config` (the `--config` file); `cursors` (where each subscription is, for
//! the lag gauge).
//!
//! Depends on the store facade, the views, the domain, `error` and the
//! generated `StoredEvent`; never on the gRPC edge, which uses it.

pub mod backup;
pub mod config;
pub mod cursors;
pub mod metrics;
pub(crate) mod projection;
pub(crate) mod verify;
