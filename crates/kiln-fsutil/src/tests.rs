use crate::filter::Matcher;
use crate::types::{Packet, PacketType, Stat};
use crate::{Entry, Error, Filter, mode, receive, send, walk};
use futures::Stream;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::pin::Pin;
use tokio::sync::mpsc;

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, String>> + Send>>;

/// An mpsc receiver as the `incoming` stream the protocol functions take.
fn stream(rx: mpsc::Receiver<Packet>) -> PacketStream {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|p| (Ok(p), rx))
    }))
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

fn paths(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.path_rel.as_str()).collect()
}

fn walk_with(root: &Path, include: &[&str], exclude: &[&str]) -> Vec<String> {
    let filter = Filter {
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
    };
    walk(root, &filter)
        .unwrap()
        .into_iter()
        .map(|e| e.path_rel)
        .collect()
}

fn ptype(p: &Packet) -> PacketType {
    PacketType::try_from(p.r#type).unwrap()
}

fn req(id: u32) -> Packet {
    Packet {
        r#type: PacketType::PacketReq as i32,
        id,
        ..Packet::default()
    }
}

fn fin() -> Packet {
    Packet {
        r#type: PacketType::PacketFin as i32,
        ..Packet::default()
    }
}

fn err_packet(msg: &str) -> Packet {
    Packet {
        r#type: PacketType::PacketErr as i32,
        data: msg.as_bytes().to_vec(),
        ..Packet::default()
    }
}

fn stat_packet(path: &str, mode: u32, linkname: &str) -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: path.into(),
            mode,
            linkname: linkname.into(),
            ..Stat::default()
        }),
        ..Packet::default()
    }
}

// ---- walk ----

#[test]
fn walk_order_is_preorder_by_base_name() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "b", b"");
    write(t.path(), "a.txt", b"");
    write(t.path(), "a/b", b"");
    let entries = walk(t.path(), &Filter::default()).unwrap();
    assert_eq!(paths(&entries), ["a", "a/b", "a.txt", "b"]);
    for e in &entries {
        assert_eq!(e.stat.path, e.path_rel);
        assert_eq!(e.abs, fs::canonicalize(t.path()).unwrap().join(&e.path_rel));
    }
}

#[test]
fn walk_orders_bytewise_and_deep() {
    let t = tempfile::tempdir().unwrap();
    for p in ["B", "a-b", "a/z/y", "a/z.b", "a0", "_x"] {
        write(t.path(), p, b"");
    }
    assert_eq!(
        walk_with(t.path(), &[], &[]),
        ["B", "_x", "a", "a/z", "a/z/y", "a/z.b", "a-b", "a0"]
    );
}

#[test]
fn walk_mode_bits() {
    let t = tempfile::tempdir().unwrap();
    mkdir(t.path(), "d");
    fs::set_permissions(t.path().join("d"), fs::Permissions::from_mode(0o750)).unwrap();
    write(t.path(), "f", b"hello");
    fs::set_permissions(t.path().join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    write(t.path(), "x", b"#!/bin/sh\n");
    fs::set_permissions(t.path().join("x"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("f", t.path().join("l")).unwrap();

    let entries = walk(t.path(), &Filter::default()).unwrap();
    assert_eq!(paths(&entries), ["d", "f", "l", "x"]);
    let [d, f, l, x] = &entries[..] else {
        unreachable!()
    };

    assert_eq!(d.stat.mode, (1 << 31) | 0o750);
    assert_eq!(d.stat.size, 0);
    assert_eq!(f.stat.mode, 0o644);
    assert_eq!(f.stat.size, 5);
    assert!(f.is_requestable());
    assert_eq!(l.stat.mode & mode::TYPE, 1 << 27);
    assert_eq!(l.stat.linkname, "f");
    assert_eq!(
        l.stat.size, 1,
        "a symlink's size is its target's length, as in fsutil"
    );
    assert!(!l.is_requestable());
    assert!(!d.is_requestable());
    assert_eq!(x.stat.mode, 0o755);
    for e in &entries {
        assert_eq!((e.stat.uid, e.stat.gid), (0, 0));
        assert_eq!((e.stat.devmajor, e.stat.devminor), (0, 0));
        assert!(e.stat.xattrs.is_empty());
        assert!(
            e.stat.mod_time > 1_000_000_000 * 1_000_000_000,
            "mtime in ns: {}",
            e.stat.mod_time
        );
    }
    let mtime = fs::metadata(t.path().join("f"))
        .unwrap()
        .modified()
        .unwrap();
    let ns = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    // Whole seconds are the file's; the nanoseconds come from its content.
    assert_eq!(
        f.stat.mod_time.div_euclid(1_000_000_000),
        ns.div_euclid(1_000_000_000)
    );
    assert_eq!(f.stat.mod_time, crate::content_mod_time(&f.abs, ns));
}

/// The daemon re-requests a file only when its size, mtime, mode or owner differ from its
/// copy; a content change that keeps size and mtime must still change what is announced, and
/// unchanged content must announce the same value every time.
#[test]
fn content_change_with_the_same_size_and_mtime_changes_the_announced_mtime() {
    let t = tempfile::tempdir().unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    let set = |content: &[u8]| {
        write(t.path(), "stamp.txt", content);
        fs::File::options()
            .write(true)
            .open(t.path().join("stamp.txt"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        walk(t.path(), &Filter::default()).unwrap()[0].stat.clone()
    };
    let first = set(b"run-1");
    let second = set(b"run-2");
    let again = set(b"run-1");
    assert_eq!(first.size, second.size);
    assert_ne!(
        first.mod_time, second.mod_time,
        "same size and mtime, new content"
    );
    assert_eq!(
        first.mod_time, again.mod_time,
        "same content, same announcement"
    );
    assert_eq!(first.mod_time / 1_000_000_000, 1_700_000_000);
    assert_eq!(second.mod_time / 1_000_000_000, 1_700_000_000);
}

#[test]
fn walk_special_bits_and_devices() {
    let t = tempfile::tempdir().unwrap();
    mkdir(t.path(), "s");
    fs::set_permissions(t.path().join("s"), fs::Permissions::from_mode(0o1777)).unwrap();
    write(t.path(), "u", b"");
    fs::set_permissions(t.path().join("u"), fs::Permissions::from_mode(0o4755)).unwrap();
    let entries = walk(t.path(), &Filter::default()).unwrap();
    assert_eq!(entries[0].stat.mode, mode::DIR | mode::STICKY | 0o777);
    assert_eq!(entries[1].stat.mode, mode::SETUID | 0o755);
    assert!(entries[1].is_requestable(), "setuid is not a type bit");
    assert_eq!(mode::unix_permissions(entries[1].stat.mode), 0o4755);

    let meta = fs::symlink_metadata("/dev/null").unwrap();
    assert_eq!(
        crate::go_mode(&meta) & mode::TYPE,
        mode::DEVICE | mode::CHAR_DEVICE
    );
    let stat = crate::make_stat(Path::new("/dev/null"), "null", &meta).unwrap();
    assert_eq!((stat.devmajor, stat.devminor), (1, 3));
}

#[test]
fn walk_does_not_follow_symlinks_out_of_root() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret/key", b"s3cret");
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "in/file", b"");
    symlink(outside.path().join("secret"), t.path().join("escape")).unwrap();
    symlink("in", t.path().join("inner")).unwrap();
    let entries = walk(t.path(), &Filter::default()).unwrap();
    assert_eq!(paths(&entries), ["escape", "in", "in/file", "inner"]);
    assert_eq!(
        entries[0].stat.linkname,
        outside.path().join("secret").to_str().unwrap()
    );
    assert_eq!(entries[0].stat.mode & mode::TYPE, mode::SYMLINK);
    assert_eq!(entries[3].stat.linkname, "in");
    let root = fs::canonicalize(t.path()).unwrap();
    assert!(entries.iter().all(|e| e.abs.starts_with(&root)));
}

#[test]
fn walk_resolves_symlinked_root_and_rejects_files() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "real/f", b"");
    symlink("real", t.path().join("link")).unwrap();
    assert_eq!(walk_with(&t.path().join("link"), &[], &[]), ["f"]);
    assert!(matches!(
        walk(&t.path().join("real/f"), &Filter::default()),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        walk(&t.path().join("nope"), &Filter::default()),
        Err(Error::Io { .. })
    ));
}

fn filter_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for p in [
        "a/b/c.txt",
        "a/b/d.txt",
        "a/b/e.log",
        "a/x.txt",
        "a/deep/er/f.log",
        "foo/keep.txt",
        "foo/other.txt",
        "foo/sub/g.txt",
        "src/main.rs",
        "src/lib/mod.rs",
        "z.txt",
        "y.log",
    ] {
        write(t.path(), p, b"x");
    }
    mkdir(t.path(), "empty");
    t
}

#[test]
fn include_keeps_ancestor_dirs() {
    let t = filter_tree();
    assert_eq!(
        walk_with(t.path(), &["a/b/c.txt"], &[]),
        ["a", "a/b", "a/b/c.txt"]
    );
    assert_eq!(
        walk_with(t.path(), &["/a/b/c.txt"], &[]),
        ["a", "a/b", "a/b/c.txt"]
    );
    assert_eq!(
        walk_with(t.path(), &["./a/b"], &[]),
        ["a", "a/b", "a/b/c.txt", "a/b/d.txt", "a/b/e.log"]
    );
    assert_eq!(
        walk_with(t.path(), &["a/b/", "z.txt"], &[]),
        ["a", "a/b", "a/b/c.txt", "a/b/d.txt", "a/b/e.log", "z.txt"]
    );
    // `*` does not cross `/`, and directories with nothing included are not sent.
    assert_eq!(walk_with(t.path(), &["*.txt"], &[]), ["z.txt"]);
    assert_eq!(walk_with(t.path(), &["a/*.md"], &[]), Vec::<String>::new());
    assert_eq!(
        walk_with(t.path(), &["*/b/*.txt"], &[]),
        ["a", "a/b", "a/b/c.txt", "a/b/d.txt"]
    );
    assert_eq!(walk_with(t.path(), &["empty"], &[]), ["empty"]);
}

#[test]
fn include_and_exclude_combine() {
    let t = filter_tree();
    assert_eq!(
        walk_with(t.path(), &["a"], &["**/*.log", "a/x.txt"]),
        ["a", "a/b", "a/b/c.txt", "a/b/d.txt", "a/deep", "a/deep/er"]
    );
}

#[test]
fn exclude_with_exception() {
    let t = filter_tree();
    let got = walk_with(
        t.path(),
        &[],
        &["foo", "!foo/keep.txt", "a", "src", "empty", "*.log"],
    );
    assert_eq!(got, ["foo", "foo/keep.txt", "z.txt"]);
    // The last matching pattern wins.
    let got = walk_with(
        t.path(),
        &[],
        &["!foo/keep.txt", "foo", "a", "src", "empty", "*.log"],
    );
    assert_eq!(got, ["z.txt"]);
    let got = walk_with(
        t.path(),
        &[],
        &["*.txt", "!z.txt", "a", "foo", "src", "empty"],
    );
    assert_eq!(got, ["y.log", "z.txt"]);
    // An exception re-includes a whole excluded subtree.
    let got = walk_with(
        t.path(),
        &[],
        &["foo", "!foo/sub", "a", "src", "empty", "*.log"],
    );
    assert_eq!(got, ["foo", "foo/sub", "foo/sub/g.txt", "z.txt"]);
}

#[test]
fn double_star_patterns() {
    let t = filter_tree();
    let got = walk_with(t.path(), &[], &["**/*.log"]);
    assert!(got.iter().all(|p| !p.ends_with(".log")), "{got:?}");
    assert!(got.contains(&"a/deep/er".to_string()));
    assert!(got.contains(&"a/b/c.txt".to_string()));

    assert_eq!(walk_with(t.path(), &[], &["**"]), Vec::<String>::new());
    assert_eq!(
        walk_with(t.path(), &[], &["**", "!src/**"]),
        ["src", "src/lib", "src/lib/mod.rs", "src/main.rs"]
    );
    assert_eq!(
        walk_with(t.path(), &[], &["**", "!**/*.rs"]),
        ["src", "src/lib", "src/lib/mod.rs", "src/main.rs"]
    );
    let got = walk_with(t.path(), &[], &["a/**/f.log", "foo", "src", "empty", "*.*"]);
    assert_eq!(
        got,
        [
            "a",
            "a/b",
            "a/b/c.txt",
            "a/b/d.txt",
            "a/b/e.log",
            "a/deep",
            "a/deep/er",
            "a/x.txt"
        ]
    );
    assert_eq!(
        walk_with(t.path(), &["**/c.txt"], &[]),
        ["a", "a/b", "a/b/c.txt"]
    );
    assert_eq!(
        walk_with(t.path(), &["src/**"], &[]),
        ["src", "src/lib", "src/lib/mod.rs", "src/main.rs"]
    );
}

#[test]
fn matcher_globs() {
    let m = |pats: &[&str], path: &str| {
        Matcher::new(&pats.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .matches(path)
    };
    assert!(m(&["[a-c]?.txt"], "b1.txt"));
    assert!(!m(&["[a-c]?.txt"], "d1.txt"));
    assert!(m(&["[^a-c]?.txt"], "d1.txt"));
    assert!(!m(&["[^a-c]?.txt"], "a1.txt"));
    assert!(m(&["\\*"], "*"));
    assert!(!m(&["\\*"], "x"));
    assert!(m(&["a+b"], "a+b"));
    assert!(!m(&["a+b"], "aab"));
    assert!(!m(&["a.b"], "axb"));
    assert!(m(&["*"], "anything/below"));
    assert!(m(&["x/../y"], "y"));
    assert!(m(&["dir/"], "dir/f"));
    assert!(!m(&["di"], "dir"));
    assert!(m(&["**/node_modules"], "node_modules"));
    assert!(m(&["**/node_modules"], "a/b/node_modules/x"));
    for bad in ["[", "[]", "a\\", "[z-a]", "!"] {
        assert!(
            matches!(Matcher::new(&[bad.to_string()]), Err(Error::Pattern { .. })),
            "{bad} should be rejected"
        );
    }
}

#[test]
fn ignore_file_parsing() {
    let text = "\u{feff}# comment\n\n  node_modules  \n/abs/path\n./rel//x/\n! keep.txt\n!/target/keep\r\n   # not a comment\n";
    assert_eq!(
        Filter::from_ignore_file(text),
        [
            "node_modules",
            "abs/path",
            "rel/x",
            "!keep.txt",
            "!target/keep",
            "# not a comment"
        ]
    );
}

// ---- send / receive ----

#[tokio::test]
async fn round_trip_copies_tree() {
    let src = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(src.path(), "nested/deeper/big.bin", &big);
    write(src.path(), "nested/empty.txt", b"");
    write(src.path(), "top.txt", b"top level\n");
    write(src.path(), "run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(src.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    mkdir(src.path(), "emptydir");
    symlink("nested/deeper/big.bin", src.path().join("link")).unwrap();
    symlink("/definitely/not/here", src.path().join("dangling")).unwrap();

    let entries = walk(src.path(), &Filter::default()).unwrap();
    let dest = tempfile::tempdir().unwrap();

    let (to_recv, recv_in) = mpsc::channel(4);
    let (to_send, send_in) = mpsc::channel(4);
    let (sent, received) = tokio::join!(
        send(&entries, to_recv, stream(send_in)),
        receive(dest.path(), to_send, stream(recv_in))
    );
    let sent = sent.unwrap();
    let received = received.unwrap();

    assert_eq!(sent.entries, entries.len());
    assert_eq!(sent.files_sent, 4);
    assert_eq!(sent.bytes_sent, (big.len() + 10 + 18) as u64);
    assert_eq!(received.entries, entries.len());
    assert_eq!(received.files, 4);
    assert_eq!(received.dirs, 3);
    assert_eq!(received.symlinks, 2);
    assert_eq!(received.bytes_received, sent.bytes_sent);

    let d = dest.path();
    assert_eq!(fs::read(d.join("nested/deeper/big.bin")).unwrap(), big);
    assert_eq!(fs::read(d.join("nested/empty.txt")).unwrap(), b"");
    assert_eq!(fs::read(d.join("top.txt")).unwrap(), b"top level\n");
    assert_eq!(
        fs::read_link(d.join("link")).unwrap(),
        Path::new("nested/deeper/big.bin")
    );
    assert_eq!(
        fs::read_link(d.join("dangling")).unwrap(),
        Path::new("/definitely/not/here")
    );
    assert!(d.join("emptydir").is_dir());
    assert_eq!(
        fs::metadata(d.join("run.sh")).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    // The copy walks exactly like the original (modes, sizes, mtimes, links).
    let copy = walk(d, &Filter::default()).unwrap();
    assert_eq!(paths(&copy), paths(&entries));
    for (a, b) in entries.iter().zip(&copy) {
        assert_eq!(a.stat.mode, b.stat.mode, "{}", a.path_rel);
        assert_eq!(a.stat.size, b.stat.size, "{}", a.path_rel);
        assert_eq!(a.stat.linkname, b.stat.linkname, "{}", a.path_rel);
        if a.stat.mode & mode::SYMLINK == 0 {
            assert_eq!(a.stat.mod_time, b.stat.mod_time, "{}", a.path_rel);
        }
    }
}

/// Collects the sender's STATs up to the end marker.
async fn read_stats(rx: &mut mpsc::Receiver<Packet>) -> Vec<Stat> {
    let mut stats = Vec::new();
    loop {
        let p = rx.recv().await.expect("stat");
        assert_eq!(ptype(&p), PacketType::PacketStat);
        match p.stat {
            Some(s) => stats.push(s),
            None => {
                assert_eq!(
                    p,
                    Packet::default(),
                    "the end marker is an all-default packet"
                );
                return stats;
            }
        }
    }
}

#[tokio::test]
async fn sender_answers_only_requested_ids() {
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "d/one", b"1111");
    write(src.path(), "d/two", &vec![2u8; 70_000]);
    write(src.path(), "three", b"333");
    let entries = walk(src.path(), &Filter::default()).unwrap();
    assert_eq!(paths(&entries), ["d", "d/one", "d/two", "three"]);

    let (out_tx, mut out_rx) = mpsc::channel(16);
    let (in_tx, in_rx) = mpsc::channel(16);
    let sender = tokio::spawn(async move { send(&entries, out_tx, stream(in_rx)).await });

    let stats = read_stats(&mut out_rx).await;
    assert_eq!(
        stats.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        ["d", "d/one", "d/two", "three"]
    );
    // Out of order, skipping id 1.
    in_tx.send(req(3)).await.unwrap();
    in_tx.send(req(2)).await.unwrap();

    let mut got: Vec<(u32, usize)> = Vec::new(); // (id, chunk len)
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let p = out_rx.recv().await.unwrap();
        assert_eq!(ptype(&p), PacketType::PacketData);
        assert!(p.stat.is_none());
        if p.data.is_empty() {
            ended.push(p.id);
        } else {
            got.push((p.id, p.data.len()));
        }
    }
    assert_eq!(ended, [3, 2]);
    assert_eq!(
        got,
        [
            (3, 3),
            (2, 32 * 1024),
            (2, 32 * 1024),
            (2, 70_000 - 64 * 1024)
        ]
    );

    in_tx.send(fin()).await.unwrap();
    let p = out_rx.recv().await.unwrap();
    assert_eq!(p, fin());
    let res = sender.await.unwrap().unwrap();
    assert_eq!(
        res,
        crate::SendStats {
            files_sent: 2,
            bytes_sent: 70_003,
            entries: 4
        }
    );
    assert!(out_rx.recv().await.is_none(), "nothing after FIN");
}

#[tokio::test]
async fn requests_are_served_while_stats_are_still_going_out() {
    let src = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write(
            src.path(),
            &format!("f{i:02}"),
            format!("file {i}").as_bytes(),
        );
    }
    let entries = walk(src.path(), &Filter::default()).unwrap();
    // Capacity 1 on both sides: the sender can't get ahead of this fake receiver.
    let (out_tx, mut out_rx) = mpsc::channel(1);
    let (in_tx, in_rx) = mpsc::channel(1);
    let sender = tokio::spawn(async move { send(&entries, out_tx, stream(in_rx)).await });

    let mut requested = 0;
    let mut done = 0;
    let mut list_done = false;
    while !(list_done && done == requested) {
        let p = out_rx.recv().await.unwrap();
        match ptype(&p) {
            PacketType::PacketStat if p.stat.is_none() => list_done = true,
            PacketType::PacketStat => {
                assert!(!list_done);
                in_tx.send(req(requested)).await.unwrap();
                requested += 1;
            }
            PacketType::PacketData if p.data.is_empty() => done += 1,
            PacketType::PacketData => assert_eq!(p.data, format!("file {}", p.id).as_bytes()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(done, 50);
    in_tx.send(fin()).await.unwrap();
    assert_eq!(out_rx.recv().await.unwrap(), fin());
    assert_eq!(sender.await.unwrap().unwrap().files_sent, 50);
}

#[tokio::test]
async fn request_for_directory_is_an_error() {
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "d/f", b"x");
    symlink("d/f", src.path().join("l")).unwrap();
    let entries = walk(src.path(), &Filter::default()).unwrap();
    assert_eq!(paths(&entries), ["d", "d/f", "l"]);

    for bad in [0u32, 2, 3, 99] {
        let entries = entries.clone();
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let (in_tx, in_rx) = mpsc::channel(16);
        let sender = tokio::spawn(async move { send(&entries, out_tx, stream(in_rx)).await });
        read_stats(&mut out_rx).await;
        in_tx.send(req(bad)).await.unwrap();
        let err = sender.await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest(id) if id == bad),
            "{err}"
        );
        let p = out_rx.recv().await.unwrap();
        assert_eq!(ptype(&p), PacketType::PacketErr);
        assert_eq!(
            String::from_utf8(p.data).unwrap(),
            format!("invalid file request {bad}")
        );
    }
}

#[tokio::test]
async fn sender_reports_receiver_errors_and_early_end() {
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "f", b"x");
    let entries = walk(src.path(), &Filter::default()).unwrap();

    let (out_tx, _out_rx) = mpsc::channel(16);
    let (in_tx, in_rx) = mpsc::channel(16);
    in_tx.send(err_packet("disk full")).await.unwrap();
    let err = send(&entries, out_tx, stream(in_rx)).await.unwrap_err();
    assert_eq!(err.to_string(), "error from receiver: disk full");

    let (out_tx, _out_rx) = mpsc::channel(16);
    let (in_tx, in_rx) = mpsc::channel(16);
    drop(in_tx);
    let err = send(&entries, out_tx, stream(in_rx)).await.unwrap_err();
    assert!(matches!(err, Error::UnexpectedEof(_)), "{err}");

    let (out_tx, _out_rx) = mpsc::channel(16);
    let failing = futures::stream::iter(vec![Err::<Packet, _>("connection reset")]);
    let err = send(&entries, out_tx, failing).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport(ref m) if m == "connection reset"),
        "{err}"
    );
}

/// Runs `receive` against a scripted sender; returns its result and what it sent back.
async fn receive_scripted(
    dest: &Path,
    script: Vec<Packet>,
) -> (Result<crate::ReceiveStats, Error>, Vec<Packet>) {
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let res = receive(
        dest,
        out_tx,
        futures::stream::iter(script.into_iter().map(Ok::<_, String>)),
    )
    .await;
    let mut sent = Vec::new();
    while let Ok(p) = out_rx.try_recv() {
        sent.push(p);
    }
    (res, sent)
}

#[tokio::test]
async fn receiver_rejects_unsafe_paths() {
    for bad in ["../evil", "/etc/evil", "a/../../evil", "./x", "a//b", ""] {
        let dest = tempfile::tempdir().unwrap();
        mkdir(dest.path(), "a");
        let script = vec![
            stat_packet("a", mode::DIR | 0o755, ""),
            stat_packet(bad, 0o644, ""),
            Packet::default(),
        ];
        let (res, sent) = receive_scripted(&dest.path().join("a"), script).await;
        let err = res.unwrap_err();
        assert!(
            matches!(err, Error::UnsafePath(ref p) if p == bad),
            "{bad}: {err}"
        );
        let last = sent.last().unwrap();
        assert_eq!(ptype(last), PacketType::PacketErr);
        assert!(!dest.path().join("evil").exists());
    }
}

#[tokio::test]
async fn receiver_never_writes_through_symlinks() {
    let outside = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let link = outside.path().to_str().unwrap();
    // A file below a symlink: its parent is not an announced directory.
    let script = vec![
        stat_packet("s", mode::SYMLINK | 0o777, link),
        stat_packet("s/f", 0o644, ""),
        Packet::default(),
    ];
    let (res, _) = receive_scripted(dest.path(), script).await;
    assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
    assert!(!outside.path().join("f").exists());

    // A directory re-announced as a symlink.
    let dest = tempfile::tempdir().unwrap();
    let script = vec![
        stat_packet("d", mode::DIR | 0o755, ""),
        stat_packet("d", mode::SYMLINK | 0o777, link),
        stat_packet("d/f", 0o644, ""),
        Packet::default(),
    ];
    let (res, _) = receive_scripted(dest.path(), script).await;
    assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
    assert!(!outside.path().join("f").exists());
}

#[tokio::test]
async fn receiver_requests_files_and_handles_sender_errors() {
    let dest = tempfile::tempdir().unwrap();
    let script = vec![
        stat_packet("d", mode::DIR | 0o755, ""),
        stat_packet("d/f", 0o600, ""),
        stat_packet("d/h", 0o600, "d/f"),
        stat_packet("p", mode::NAMED_PIPE | 0o644, ""),
        Packet::default(),
        Packet {
            r#type: PacketType::PacketData as i32,
            id: 1,
            data: b"abc".to_vec(),
            ..Packet::default()
        },
        Packet {
            r#type: PacketType::PacketData as i32,
            id: 1,
            ..Packet::default()
        },
        fin(),
    ];
    let (res, sent) = receive_scripted(dest.path(), script).await;
    let stats = res.unwrap();
    assert_eq!(
        (
            stats.entries,
            stats.dirs,
            stats.files,
            stats.hardlinks,
            stats.skipped
        ),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(sent, [req(1), fin()]);
    assert_eq!(fs::read(dest.path().join("d/h")).unwrap(), b"abc");
    assert_eq!(
        fs::metadata(dest.path().join("d/f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Data for an id that was never requested.
    let dest = tempfile::tempdir().unwrap();
    let script = vec![
        stat_packet("d", mode::DIR | 0o755, ""),
        Packet {
            r#type: PacketType::PacketData as i32,
            id: 0,
            data: b"x".to_vec(),
            ..Packet::default()
        },
        Packet::default(),
    ];
    let (res, _) = receive_scripted(dest.path(), script).await;
    assert!(matches!(res, Err(Error::InvalidRequest(0))), "{res:?}");

    // The sender's error is surfaced and not echoed back.
    let dest = tempfile::tempdir().unwrap();
    let (res, sent) = receive_scripted(dest.path(), vec![err_packet("walk failed")]).await;
    assert_eq!(
        res.unwrap_err().to_string(),
        "error from sender: walk failed"
    );
    assert!(sent.is_empty());

    // The stream ending early.
    let dest = tempfile::tempdir().unwrap();
    let (res, _) = receive_scripted(dest.path(), vec![stat_packet("f", 0o644, "")]).await;
    assert!(matches!(res, Err(Error::UnexpectedEof(_))), "{res:?}");
}

#[tokio::test]
async fn receiver_replaces_existing_paths() {
    let dest = tempfile::tempdir().unwrap();
    write(dest.path(), "x/old", b"old");
    write(dest.path(), "f", b"previous content that is longer");
    symlink("/etc", dest.path().join("d")).unwrap();
    let script = vec![
        stat_packet("d", mode::DIR | 0o755, ""),
        stat_packet("d/new", 0o644, ""),
        stat_packet("f", 0o644, ""),
        stat_packet("x", mode::SYMLINK | 0o777, "d"),
        Packet::default(),
        Packet {
            r#type: PacketType::PacketData as i32,
            id: 2,
            data: b"new".to_vec(),
            ..Packet::default()
        },
        Packet {
            r#type: PacketType::PacketData as i32,
            id: 2,
            ..Packet::default()
        },
        Packet {
            r#type: PacketType::PacketData as i32,
            id: 1,
            ..Packet::default()
        },
    ];
    let (res, sent) = receive_scripted(dest.path(), script).await;
    res.unwrap();
    assert_eq!(sent, [req(1), req(2), fin()]);
    assert!(
        fs::symlink_metadata(dest.path().join("d"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(fs::read(dest.path().join("d/new")).unwrap(), b"");
    assert_eq!(fs::read(dest.path().join("f")).unwrap(), b"new");
    assert_eq!(
        fs::read_link(dest.path().join("x")).unwrap(),
        Path::new("d")
    );
}
