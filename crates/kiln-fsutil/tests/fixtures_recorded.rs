//! The fsutil packet stream both ways, against streams recorded from the real engine (Docker
//! Engine 20.10's BuildKit v0.8) with `KILN_RECORD_FSUTIL`: see `fixtures/README.md`.
//!
//! - FileSync (the context upload): the daemon's requests replayed to [`kiln_fsutil::send`]
//!   over the fixture tree must give, byte for byte, the stream the daemon accepted.
//! - FileSend (the local exporter): the daemon's stream fed to [`kiln_fsutil::receive`] must
//!   give the exported tree, and kiln's requests must be the recorded ones.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures::StreamExt as _;
use kiln_fsutil::types::{Packet, PacketType, Stat};
use kiln_fsutil::{Filter, mode};
use prost::Message as _;
use tokio::sync::mpsc;

fn recorded(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/recorded")
        .join(name)
}

/// The raw bytes of a recording and its packets (each a 4-byte big-endian length, then a
/// protobuf-encoded `Packet`).
fn read(name: &str) -> (Vec<u8>, Vec<Packet>) {
    let bytes = std::fs::read(recorded(name)).unwrap();
    let mut packets = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let (body, tail) = tail.split_at(len);
        packets.push(Packet::decode(body).unwrap());
        rest = tail;
    }
    (bytes, packets)
}

/// The packets as they would be recorded.
fn encode(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        let body = p.encode_to_vec();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}

fn is(p: &Packet, ty: PacketType) -> bool {
    p.r#type == ty as i32
}

fn announced(packets: &[Packet]) -> Vec<Stat> {
    packets.iter().filter_map(|p| p.stat.clone()).collect()
}

/// A copy of the fixture context in a temporary directory, with each entry's mode and mtime
/// set to what the recording announced (git keeps neither).
fn fixture_tree(announced: &[Stat]) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/context");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("context");
    let ok = Command::new("cp")
        .args(["-R", "--no-dereference"])
        .arg(&src)
        .arg(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copy the fixture context");
    // Deepest first, so a directory's mtime is set after its entries are.
    for stat in announced.iter().rev() {
        let path = root.join(&stat.path);
        if stat.mode & mode::SYMLINK == 0 {
            let perm = std::fs::Permissions::from_mode(mode::unix_permissions(stat.mode));
            std::fs::set_permissions(&path, perm).unwrap();
        }
        let secs = stat.mod_time.div_euclid(1_000_000_000);
        let nanos = stat.mod_time.rem_euclid(1_000_000_000);
        let ok = Command::new("touch")
            .args(["-h", "-d", &format!("@{secs}.{nanos:09}")])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "touch {}", path.display());
    }
    tmp
}

#[test]
fn the_recordings_hold_the_fixture_tree() {
    let (_, sent) = read("filesync-fixture-1.kiln-to-daemon.bin");
    let paths: Vec<String> = announced(&sent).into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["a.txt", "dir", "dir/b.txt", "dir/run.sh", "empty", "link"]
    );
    let (_, exported) = read("filesend-output-2.daemon-to-kiln.bin");
    let paths: Vec<String> = announced(&exported).into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["a.txt", "dir", "dir/b.txt", "dir/run.sh", "empty", "link"]
    );
    let (_, requests) = read("filesync-fixture-1.daemon-to-kiln.bin");
    let ids: Vec<(i32, u32)> = requests.iter().map(|p| (p.r#type, p.id)).collect();
    let req = PacketType::PacketReq as i32;
    assert!(
        ids.iter()
            .all(|&(t, _)| t == req || t == PacketType::PacketFin as i32)
    );
    let mut files: Vec<u32> = ids.iter().filter(|(t, _)| *t == req).map(|p| p.1).collect();
    files.sort();
    assert_eq!(files, [0, 2, 3, 4], "every regular file, the empty one too");
}

#[tokio::test]
async fn send_replays_the_upload_the_daemon_accepted() {
    let (expected, sent) = read("filesync-fixture-1.kiln-to-daemon.bin");
    let (_, from_daemon) = read("filesync-fixture-1.daemon-to-kiln.bin");
    let tree = fixture_tree(&announced(&sent));
    let entries = kiln_fsutil::walk(&tree.path().join("context"), &Filter::default()).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.stat.clone()).collect::<Vec<_>>(),
        announced(&sent),
        "the walk announces what was recorded"
    );

    let requests: Vec<Packet> = from_daemon
        .iter()
        .filter(|p| is(p, PacketType::PacketReq))
        .cloned()
        .collect();
    assert!(
        from_daemon
            .last()
            .is_some_and(|p| is(p, PacketType::PacketFin))
    );
    let (to_kiln, incoming) = mpsc::unbounded_channel::<Result<Packet, String>>();
    let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(incoming);
    let (outgoing, mut out) = mpsc::channel(1024);
    let sender = tokio::spawn(async move { kiln_fsutil::send(&entries, outgoing, incoming).await });

    // As the daemon does: every request, then FIN once every requested file has ended.
    for r in &requests {
        to_kiln.send(Ok(r.clone())).unwrap();
    }
    let mut got = Vec::new();
    let mut ended = 0;
    while ended < requests.len() {
        let p = out.recv().await.expect("kiln stopped sending");
        if is(&p, PacketType::PacketData) && p.data.is_empty() {
            ended += 1;
        }
        got.push(p);
    }
    to_kiln
        .send(Ok(Packet {
            r#type: PacketType::PacketFin as i32,
            ..Packet::default()
        }))
        .unwrap();
    while let Some(p) = out.recv().await {
        got.push(p);
    }
    let stats = sender.await.unwrap().expect("send succeeds");
    assert_eq!(stats.files_sent, 4);
    assert_eq!(stats.entries, 6);
    assert_eq!(got, sent, "the packets the daemon accepted");
    assert_eq!(encode(&got), expected, "byte for byte");
}

#[tokio::test]
async fn receive_writes_the_tree_the_daemon_exported() {
    let (_, from_daemon) = read("filesend-output-2.daemon-to-kiln.bin");
    let (expected, requests) = read("filesend-output-2.kiln-to-daemon.bin");
    let dest = tempfile::tempdir().unwrap();
    let incoming = futures::stream::iter(from_daemon.clone().into_iter().map(Ok::<_, String>));
    let (outgoing, out) = mpsc::channel(1024);
    let stats = kiln_fsutil::receive(dest.path(), outgoing, incoming.boxed())
        .await
        .expect("receive succeeds");
    assert_eq!((stats.entries, stats.dirs, stats.files), (6, 1, 4));
    assert_eq!(stats.symlinks, 1);
    let got: Vec<Packet> = tokio_stream::wrappers::ReceiverStream::new(out)
        .collect()
        .await;
    assert_eq!(
        got, requests,
        "kiln requests what it did against the daemon"
    );
    assert_eq!(encode(&got), expected, "byte for byte");

    let d = dest.path();
    let mut names: Vec<String> = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        names.push(e.unwrap().file_name().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(names, ["a.txt", "dir", "empty", "link"]);
    let mut inner: Vec<String> = std::fs::read_dir(d.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inner.sort();
    assert_eq!(inner, ["b.txt", "run.sh"]);
    assert_eq!(std::fs::read(d.join("a.txt")).unwrap(), b"hello fsutil\n");
    assert_eq!(
        std::fs::read(d.join("dir/b.txt")).unwrap(),
        b"nested file\n"
    );
    assert_eq!(
        std::fs::read(d.join("dir/run.sh")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(std::fs::read(d.join("empty")).unwrap(), b"");
    assert_eq!(
        std::fs::read_link(d.join("link")).unwrap(),
        Path::new("dir/b.txt")
    );
    let perm = |rel: &str| {
        std::fs::symlink_metadata(d.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(perm("a.txt"), 0o644);
    assert_eq!(perm("empty"), 0o644);
    assert_eq!(perm("dir"), 0o755);
    assert_eq!(perm("dir/b.txt"), 0o644);
    assert_eq!(perm("dir/run.sh"), 0o755);
    // Each file's mtime is the announced one.
    for stat in announced(&from_daemon) {
        if stat.mode & mode::SYMLINK != 0 {
            continue;
        }
        let modified = std::fs::metadata(d.join(&stat.path))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert_eq!(modified, stat.mod_time, "{}", stat.path);
    }
}
