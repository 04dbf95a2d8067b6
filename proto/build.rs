//! Compiles `proto/*.proto` with protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/objects.proto",
        "proto/raft.proto",
        "proto/ca.proto",
        "proto/dispatcher.proto",
        "proto/secret.proto",
        "proto/control.proto",
        "proto/node.proto",
        "proto/agent.proto",
        "proto/volume.proto",
        "proto/image.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .btree_map(".")
        // Store objects are also the Raft log's payload and the CLI's JSON.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Types that carry secret data or keys get a hand-written `Debug`
        // (src/redacted.rs) that never prints them.
        .skip_debug([
            ".rswarm.v1.SecretSpec",
            ".rswarm.v1.RegistryAuth",
            ".rswarm.v1.GetSecretsKeyResponse",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
