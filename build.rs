//! Generates the dnstap protobuf types with prost. `protox` compiles the schema in Rust, so the
//! build needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dnstap.proto");
    let fds = protox::compile(["proto/dnstap.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
