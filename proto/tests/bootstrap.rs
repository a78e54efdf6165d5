//! Regenerates the checked-in gRPC code and fails if it differs from `src/gen`.
//! After changing a `.proto`, run this test once: it writes the new code, then commit it.

use std::path::PathBuf;

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let protoc = protoc_bin_vendored::protoc_bin_path().unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out.path())
        .protoc_arg("--experimental_allow_proto3_optional")
        .compile_with_config(
            {
                let mut config = tonic_prost_build::Config::new();
                config.protoc_executable(protoc);
                config
            },
            &[
                root.join("tether/v1/auth.proto"),
                root.join("tether/v1/thing.proto"),
                root.join("tether/v1/gateway.proto"),
                root.join("tether/v1/command.proto"),
            ],
            std::slice::from_ref(&root),
        )
        .unwrap();

    let generated = std::fs::read_to_string(out.path().join("tether.v1.rs")).unwrap();
    let checked_in = root.join("src/gen/tether.v1.rs");
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    if current != generated {
        std::fs::write(&checked_in, &generated).unwrap();
        panic!("src/gen/tether.v1.rs was out of date and has been regenerated: review and commit it");
    }
}
