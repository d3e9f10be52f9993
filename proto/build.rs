//! Generates the Rust code for `finderd/v1/finderd.proto` without a system
//! `protoc`: protox parses the file into a descriptor set, tonic-prost-build
//! turns that into messages, a client and a server trait. The encoded
//! descriptor set is kept too, for gRPC reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "finderd/v1/finderd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("finderd_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
