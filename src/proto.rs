//! The code generated from `proto/caravan/v1` by `build.rs`, and the encoded
//! descriptor set served by reflection. Nothing here is written by hand; the
//! domain never imports it (see `convert` for the edge between the two).
//!
//! Depends on nothing hand-written but `grpc::codec`, which the generated
//! servers and clients decode with.

/// Package `caravan.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("caravan.v1");
}

/// The encoded `FileDescriptorSet` of every caravan proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/caravan_descriptor.bin"));
