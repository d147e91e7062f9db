//! Generates the gRPC client and server code from `proto/` with protox (a pure-Rust protobuf
//! compiler), so building kiln needs no system `protoc`. BuildKit's `pb` and fsutil's `types`
//! packages map to kiln-llb's and kiln-fsutil's hand-written messages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/control.proto",
        "proto/session.proto",
        "proto/secrets.proto",
        "proto/health.proto",
        "proto/gateway.proto",
    ];
    for f in std::fs::read_dir("proto")? {
        println!("cargo:rerun-if-changed={}", f?.path().display());
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .btree_map(".")
        .extern_path(".pb", "::kiln_llb::pb")
        .extern_path(".fsutil.types", "::kiln_fsutil::types")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    // FileSend carries two kinds of message on one method: its code passes each message
    // through undecoded (see proto/filesend.proto). A directory of its own keeps its
    // `moby.filesync.v1` module apart from the one above.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("filesend");
    std::fs::create_dir_all(&out)?;
    let fds = protox::compile(["proto/filesend.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&out)
        .extern_path(".kiln.raw", "crate::raw")
        .codec_path("crate::raw::RawCodec")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
