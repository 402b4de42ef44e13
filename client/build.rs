fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: builds need nothing from the system package manager.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let protos = [
        "proto/autoglm/v1/admin.proto",
        "proto/autoglm/v1/config.proto",
        "proto/autoglm/v1/scheduler.proto",
        "proto/autoglm/v1/agent.proto",
        "proto/autoglm/v1/acl.proto",
    ];
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("autoglm_v1_descriptor.bin");
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(descriptor)
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
