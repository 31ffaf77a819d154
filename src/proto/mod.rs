//! The code generated from `proto/caravan/v1` by `build.rs`, and the encoded
//! descriptor set served by reflection. Written by hand here is only
//! `AppendRequest` (`append_request`), which the server decodes lazily; the
//! domain never imports any of it (see `convert` for the edge between the
//! two).
//!
//! Depends on nothing hand-written but `grpc::codec`, which the generated
//! servers and clients decode with.

pub mod append_request;

/// Package `caravan.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("caravan.v1");
    pub use super::append_request::AppendRequest;
}

/// The encoded `FileDescriptorSet` of every caravan proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/caravan_descriptor.bin"));
