//! Compiles `proto/caravan/v1/*.proto` with the pure-Rust `protox` compiler (no
//! system `protoc`), generates the tonic services with `tonic-prost-build`, and
//! writes the encoded descriptor set that server reflection serves.

use std::{env, error::Error, fs, path::PathBuf};

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "caravan/v1/types.proto",
    "caravan/v1/ingest.proto",
    "caravan/v1/query.proto",
    "caravan/v1/subscribe.proto",
    "caravan/v1/operations.proto",
];

/// The messages and enums of an `Event`, which get proto3 JSON serde.
const EVENT_TYPES: &[&str] = &[
    ".caravan.v1.Event",
    ".caravan.v1.TradeRecord",
    ".caravan.v1.TradeRecordRetracted",
    ".caravan.v1.TradeFigureKey",
    ".caravan.v1.Agreement",
    ".caravan.v1.AgreementStatusChanged",
    ".caravan.v1.AgreementKind",
    ".caravan.v1.AgreementStatus",
    ".caravan.v1.Flow",
    ".caravan.v1.Frequency",
    ".caravan.v1.Period",
    ".caravan.v1.Sector",
    ".caravan.v1.AllCommodities",
    ".caravan.v1.CommodityScope",
    ".caravan.v1.Money",
    ".caravan.v1.Quantity",
    ".caravan.v1.Date",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_imports(true).include_source_info(true);
    for file in PROTO_FILES {
        compiler.open_file(file)?;
    }
    // `compile_fds` ignores `file_descriptor_set_path`: write it ourselves.
    fs::write(
        out_dir.join("caravan_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        // The well-known types (Timestamp) with proto3 JSON serde: the bulk
        // JSON Lines parser deserializes straight into the generated types.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .build_client(true)
        .build_server(true)
        // Decodes from one contiguous slice (src/codec.rs).
        .codec_path("crate::grpc::codec::Codec")
        // Written by hand, so that the server decodes its events one at a
        // time (src/proto/append_request.rs).
        .extern_path(
            ".caravan.v1.AppendRequest",
            "crate::proto::append_request::AppendRequest",
        )
        .compile_fds(compiler.file_descriptor_set())?;

    // serde in the proto3 JSON mapping for the event and everything in it
    // (`caravan.v1.serde.rs`, included next to the messages): the JSON Lines
    // that `caravan ingest` reads.
    pbjson_build::Builder::new()
        .register_descriptors(&compiler.encode_file_descriptor_set())?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(EVENT_TYPES)?;
    Ok(())
}
