//! An exporter that writes one file (`tar` here; `docker` and `oci` use the same stream) sends
//! it through the session's FileSend as raw bytes, against the real engine (Docker Engine's
//! embedded BuildKit, started by `cargo xtask test`): kiln hands the chunks on as they arrive,
//! and they make the whole file.

// The workspace tests' gate: skipped without an engine, a failure with KILN_REQUIRE_ENGINE=1.
#[path = "../../../tests/support/engine.rs"]
mod engine;

use std::collections::BTreeMap;
use std::path::Path;

use kiln_buildkit::{Client, FileOutput, Session, SessionConfig, SolveRequest};
use kiln_llb::{FileActions, State};

/// The regular files of a tar archive: (path, content).
fn tar_files(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| {
            String::from_utf8_lossy(&header[range])
                .trim_end_matches('\0')
                .trim()
                .to_string()
        };
        let name = field(0..100);
        let size = usize::from_str_radix(&field(124..136), 8).unwrap();
        let kind = header[156];
        let start = at + 512;
        if kind == b'0' || kind == 0 {
            files.push((name, tar[start..start + size].to_vec()));
        }
        at = start + size.div_ceil(512) * 512;
    }
    files
}

#[test]
fn a_file_exporter_streams_its_file_through_the_session() {
    if !engine::require_engine() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Unique content, so the export really runs; big enough for many chunks.
    let token = format!("{}-{:?}", std::process::id(), std::time::Instant::now());
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let chunks = runtime.block_on(async {
        let client = Client::connect_docker(
            Path::new("/var/run/docker.sock"),
            kiln_buildkit::DEFAULT_KEEPALIVE,
        )
        .await
        .expect("the engine is up (cargo xtask test starts it)");
        let (file, mut rx) = FileOutput::channel();
        let session = Session::start(
            &client,
            SessionConfig {
                output_file: Some(file.clone()),
                ..SessionConfig::default()
            },
        )
        .await
        .unwrap();
        let collect = tokio::spawn(async move {
            let mut chunks = Vec::new();
            while let Some(chunk) = rx.recv().await {
                chunks.push(chunk);
            }
            chunks
        });
        let state = State::scratch().file(
            FileActions::default()
                .mkfile("/token.txt", 0o644, token.clone())
                .mkfile("/big.bin", 0o644, big.clone()),
        );
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        client
            .solve(
                SolveRequest {
                    definition: kiln_llb::marshal(&state).unwrap(),
                    exporter: Some(("tar".into(), BTreeMap::new())),
                    session: Some(session.id().to_string()),
                    ..SolveRequest::default()
                },
                events,
            )
            .await
            .expect("the solve succeeds");
        file.close();
        session.close().await;
        collect.await.unwrap()
    });
    assert!(chunks.len() > 1, "the file came in chunks");
    let tar: Vec<u8> = chunks
        .into_iter()
        .map(|c| c.expect("no chunk is an error"))
        .collect::<Vec<_>>()
        .concat();
    let files: BTreeMap<String, Vec<u8>> = tar_files(&tar).into_iter().collect();
    assert_eq!(
        files
            .get("token.txt")
            .map(|d| String::from_utf8_lossy(d).into_owned()),
        Some(token)
    );
    assert!(files.get("big.bin") == Some(&big), "big.bin arrived whole");
}
