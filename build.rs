//! Compiles the protos in `proto/` into Rust (prost messages, tonic services, serde impls that
//! follow the proto3 JSON mapping) and a descriptor set for gRPC reflection. `protoc` comes from
//! the `protoc-bin-vendored` crate, so a fresh machine needs nothing installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts run single-threaded; prost-build reads PROTOC from the env.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptor.bin");
    let protos = [
        "zitadel/message.proto",
        "google/rpc/status.proto",
        "zitadel/object/v2/object.proto",
        "zitadel/user/v2/user_service.proto",
        "zitadel/object/v2beta/object.proto",
        "zitadel/user/v2beta/user_service.proto",
        "totpservice/v1/totp_service.proto",
    ]
    .map(|file| PathBuf::from("proto").join(file));
    let vendored_include = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("proto"), vendored_include];

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // pbjson-types carries the other well-known types (Any) with proto3-JSON serde impls.
        .compile_well_known_types(true)
        // Timestamps get our own type, whose JSON is RFC 3339 with `Z` as SPEC.md §2 asks.
        .extern_path(".google.protobuf.Timestamp", "crate::proto::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        // A request that does not decode is code 3, not tonic-prost's 13 (see the module).
        .codec_path("crate::transport::codec::ProtoCodec")
        .compile_protos(&protos, &includes)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .ignore_unknown_fields()
        .build(&[".zitadel", ".totpservice"])?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
