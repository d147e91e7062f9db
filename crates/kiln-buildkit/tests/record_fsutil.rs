//! Records the fsutil fixtures of `crates/kiln-fsutil/tests/fixtures/` against the real engine
//! (see the README there). Ignored by default: it rewrites files in the source tree.
//!
//! One solve with its own session: the local source `fixture` (the fixture context, with fixed
//! modes and mtimes) copied onto scratch and exported with the `local` exporter, so the session
//! serves both a FileSync upload and a FileSend export of the same small tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_buildkit::{Client, LocalDir, Session, SessionConfig, SolveRequest};
use kiln_llb::{CopyOptions, FileActions, LocalOptions, State};

/// The fixture files' mtime (seconds since the epoch) before recording.
const MTIME: i64 = 1_600_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-fsutil/tests/fixtures")
}

/// Fixed modes and mtimes, since git keeps neither (only a file's executable bit).
fn normalize(context: &Path) {
    let set = |rel: &str, mode: Option<u32>| {
        let path = context.join(rel);
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // `-h`: a symlink's own mtime, not its target's.
        let ok = Command::new("touch")
            .args(["-h", "-d", &format!("@{MTIME}")])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "touch {}", path.display());
    };
    set("a.txt", Some(0o644));
    set("empty", Some(0o644));
    set("link", None);
    set("dir/b.txt", Some(0o644));
    set("dir/run.sh", Some(0o755));
    set("dir", Some(0o755));
}

#[test]
#[ignore = "records fixtures into the source tree; see crates/kiln-fsutil/tests/fixtures/README.md"]
fn record_fsutil_fixtures() {
    let Some(out) = std::env::var_os("KILN_RECORD_FSUTIL") else {
        panic!("set KILN_RECORD_FSUTIL to the directory to record into");
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let context = fixtures().join("context");
    normalize(&context);
    let export = tempfile::tempdir().unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::connect_docker(
            Path::new("/var/run/docker.sock"),
            kiln_buildkit::DEFAULT_KEEPALIVE,
        )
        .await
        .expect("the engine is up (cargo xtask test starts it)");
        let mut contexts = BTreeMap::new();
        contexts.insert(
            "fixture".to_string(),
            LocalDir {
                path: context.clone(),
                exclude: Vec::new(),
            },
        );
        // A fresh shared key: the daemon has no earlier copy, so it requests every file.
        let session = Session::start(
            &client,
            SessionConfig {
                name: "kiln-fixtures".into(),
                shared_key: format!("kiln-fixtures:{}", kiln_buildkit::new_ref()),
                contexts,
                output: Some(export.path().to_path_buf()),
                ..SessionConfig::default()
            },
        )
        .await
        .unwrap();
        let local = State::local(
            "fixture",
            &LocalOptions {
                shared_key_hint: Some("fixture".into()),
                ..LocalOptions::default()
            },
        );
        let state = State::scratch().file(FileActions::default().copy(
            &local,
            "/",
            "/",
            CopyOptions {
                dir_copy_contents: true,
                ..CopyOptions::default()
            },
        ));
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        client
            .solve(
                SolveRequest {
                    definition: kiln_llb::marshal(&state).unwrap(),
                    exporter: Some(("local".into(), BTreeMap::new())),
                    session: Some(session.id().to_string()),
                    ..SolveRequest::default()
                },
                events,
            )
            .await
            .expect("the solve succeeds");
        session.close().await;
    });

    let exported = std::fs::read_to_string(export.path().join("dir/b.txt")).unwrap();
    assert_eq!(exported, "nested file\n");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "filesend-output-2.daemon-to-kiln.bin",
            "filesend-output-2.kiln-to-daemon.bin",
            "filesync-fixture-1.daemon-to-kiln.bin",
            "filesync-fixture-1.kiln-to-daemon.bin",
        ],
        "one upload, then one export"
    );
}
