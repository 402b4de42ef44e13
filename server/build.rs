fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let proto = "proto/autoglm/raft/v1/raft.proto";
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("autoglm_raft_descriptor.bin");
    tonic_prost_build::configure()
        .codec_path("autoglm_client::codec::StrictCodec")
        .file_descriptor_set_path(descriptor)
        .compile_protos(&[proto], &["proto"])?;
    println!("cargo:rerun-if-changed={proto}");
    Ok(())
}
