//! Generates the Management and Signal gRPC code (messages, client and server)
//! from `management.proto` and `signalexchange.proto` with `protoc`.
//!
//! `protoc` comes from Debian's `protobuf-compiler`; the well-known types
//! (`google/protobuf/timestamp.proto`) from `libprotobuf-dev`. Both are in
//! `scripts/bootstrap.sh`. Set `PROTOC` to use another compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 2] = ["management.proto", "signalexchange.proto"];
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut includes = vec!["."];
    // Debian's protoc finds /usr/include by itself; say so explicitly in case a
    // PROTOC from elsewhere is used with the distribution's well-known types.
    if std::path::Path::new("/usr/include/google/protobuf/timestamp.proto").exists() {
        includes.push("/usr/include");
    }

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Hand-written Debug impls in src/lib.rs keep these credentials out of logs.
        .skip_debug([
            ".management.LoginRequest",
            ".management.ProtectedHostConfig",
            ".management.RelayConfig",
        ])
        .compile_protos(&PROTOS, &includes)
        .map_err(|e| {
            format!(
                "compiling {PROTOS:?} failed: {e}\n\
                 hint: protoc and the protobuf well-known types are needed \
                 (apt-get install protobuf-compiler libprotobuf-dev, or run ./x)"
            )
        })?;
    Ok(())
}
