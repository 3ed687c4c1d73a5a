//! Generates the Sparkplug B payload types (prost) from `proto/sparkplug_b.proto` with protox,
//! a pure-Rust protobuf compiler, so neither developers nor the Yocto build need `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/sparkplug_b.proto");
    let descriptors = protox::compile(["proto/sparkplug_b.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
