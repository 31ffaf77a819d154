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
    Ok(())
}
