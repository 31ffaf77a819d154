//! Integration tests: the real server on 127.0.0.1:0 with a temporary store,
//! called through the generated clients; and the real binary.

mod binary;
mod bulk;
mod checkpoint;
mod cli;
mod cluster;
mod damage;
mod durability;
mod helpers;
mod hostile;
mod identities;
mod ingest;
mod operations;
mod ops;
mod query;
mod sector_seed;
mod subscribe;
