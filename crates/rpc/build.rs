// Compiles proto/ with protox (pure Rust), so building needs no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/cluster.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
