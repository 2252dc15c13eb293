//! Compiles `proto/*.proto` with protox (pure Rust, no `protoc`) and generates prost messages
//! plus tonic client and server stubs (without the transport helpers, which would need tonic's
//! `transport` feature here).

const PROTO_DIR: &str = "../../proto";
const PROTOS: [&str; 2] = ["agent.proto", "events.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_DIR}/{proto}");
    }
    let fds = protox::compile(PROTOS, [PROTO_DIR])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
