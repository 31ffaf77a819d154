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
    include!(concat!(env!("OUT_DIR"), "/caravan.v1.serde.rs"));
    pub use super::append_request::AppendRequest;
}

/// The encoded `FileDescriptorSet` of every caravan proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/caravan_descriptor.bin"));

/// The path of every method the server serves: what the metrics' `method`
/// label may be (a test checks it against the descriptor set).
pub const METHODS: &[&str] = &[
    "/caravan.v1.IngestService/Append",
    "/caravan.v1.IngestService/AppendStream",
    "/caravan.v1.IngestService/LookupEvents",
    "/caravan.v1.QueryService/StreamTradeRecords",
    "/caravan.v1.QueryService/StreamCountryCooperation",
    "/caravan.v1.QueryService/StreamSectorCooperation",
    "/caravan.v1.QueryService/StreamAgreements",
    "/caravan.v1.QueryService/Aggregate",
    "/caravan.v1.SubscriptionService/Subscribe",
    "/caravan.v1.OperationsService/Backup",
    "/caravan.v1.OperationsService/Verify",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn every_caravan_method_is_listed() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let mut served = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "caravan.v1") {
            for service in &file.service {
                for method in &service.method {
                    served.push(format!("/caravan.v1.{}/{}", service.name(), method.name()));
                }
            }
        }
        let listed: Vec<&str> = super::METHODS
            .iter()
            .copied()
            .filter(|m| m.starts_with("/caravan."))
            .collect();
        served.sort();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        assert_eq!(served, listed_sorted);
    }
}
