fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let proto = "proto/autoglm/raft/v1/raft.proto";
    tonic_prost_build::compile_protos(proto)?;
    println!("cargo:rerun-if-changed={proto}");
    Ok(())
}
