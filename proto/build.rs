//! Compiles `proto/covidshield.proto` with the pure-Rust `protox` compiler, so no
//! system `protoc` is needed to build the workspace.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["covidshield.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
