//! The receiving side of DiffCopy (BuildKit's local exporter): write the announced tree into a
//! directory, requesting every regular file's content.

use crate::Error;
use crate::send::{notify_peer, packet};
use crate::types::{Packet, PacketType, Stat};
use crate::walk::mode;
use futures::{Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::fs::{self, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{self, Sender};

/// What [`receive`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// `PACKET_STAT`s received (not counting the end-of-list marker).
    pub entries: usize,
    pub dirs: usize,
    /// Regular files written (content requested and received).
    pub files: usize,
    pub symlinks: usize,
    pub hardlinks: usize,
    /// Devices, pipes and sockets, which are not recreated.
    pub skipped: usize,
    /// Content bytes written.
    pub bytes_received: u64,
}

/// Receives a DiffCopy stream into `dest` (which must exist): creates directories and symlinks
/// as they are announced, requests every regular file with `PACKET_REQ` and writes its
/// `PACKET_DATA`; once the list has ended and every file is complete, sends `PACKET_FIN` and
/// waits for the sender's `PACKET_FIN` or the end of the stream. Paths that are absolute,
/// contain `.`/`..` components, or whose parent directory was not announced are rejected, so
/// nothing is written outside `dest`. Whatever already exists at an announced path is replaced.
/// A local failure is reported to the sender as a `PACKET_ERR`.
///
/// Three parts run concurrently, so that none of them waits on another through the peer:
/// - reading `incoming` never waits for a request to go out. fsutil's sender stops reading
///   requests while its file workers are blocked sending data, so a receiver that stops reading
///   data until its next request is accepted deadlocks with it;
/// - requests queue without bound (one small packet per file) and go out as `outgoing` takes
///   them;
/// - the file system work runs on a blocking thread with plain `std::fs` calls, fed through a
///   bounded queue, so announcements are consumed about as fast as the sender walks.
pub async fn receive<S, E>(
    dest: &Path,
    outgoing: Sender<Packet>,
    incoming: S,
) -> Result<ReceiveStats, Error>
where
    S: Stream<Item = Result<Packet, E>> + Unpin,
    E: Display,
{
    let result = run(dest, &outgoing, incoming).await;
    if let Err(e) = &result {
        if e.is_local() {
            notify_peer(&outgoing, e.to_string()).await;
        }
    }
    result
}

/// Packets read but not yet written: enough to ride out a slow write, small enough to bound the
/// memory held (fsutil's data chunks are 32 KiB, so at most about 8 MiB).
const QUEUE: usize = 256;

/// How the reading side stopped.
enum ReadEnd {
    /// The writer finished (or failed) first.
    WriterDone,
    /// The sender's `PACKET_FIN` was read.
    Fin,
    /// The stream ended.
    Eof,
    /// The stream failed after the writer had stopped.
    Failed(String),
}

async fn run<S, E>(
    dest: &Path,
    outgoing: &Sender<Packet>,
    mut incoming: S,
) -> Result<ReceiveStats, Error>
where
    S: Stream<Item = Result<Packet, E>> + Unpin,
    E: Display,
{
    let (packets_tx, packets_rx) = mpsc::channel::<Result<Packet, String>>(QUEUE);
    let (requests_tx, mut requests_rx) = mpsc::unbounded_channel::<Packet>();
    let dest = dest.to_path_buf();
    let writer = async move {
        match tokio::task::spawn_blocking(move || write_tree(&dest, packets_rx, requests_tx)).await
        {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::ChannelClosed),
        }
    };
    let forward = async {
        while let Some(p) = requests_rx.recv().await {
            outgoing.send(p).await.map_err(|_| Error::ChannelClosed)?;
        }
        Ok::<_, Error>(())
    };
    // Owns the queue's sending half, so the writer sees the end of the stream when this ends.
    let stream = &mut incoming;
    let read = async move {
        loop {
            let item = tokio::select! {
                biased;
                _ = packets_tx.closed() => return Ok::<_, Error>(ReadEnd::WriterDone),
                item = stream.next() => item,
            };
            let (item, end) = match item {
                None => return Ok(ReadEnd::Eof),
                Some(Err(e)) => (Err(e.to_string()), Some(ReadEnd::Failed(e.to_string()))),
                Some(Ok(p)) if p.r#type == PacketType::PacketFin as i32 => {
                    (Ok(p), Some(ReadEnd::Fin))
                }
                Some(Ok(p)) => (Ok(p), None),
            };
            // The writer judges every packet in order; once it has stopped, nothing more matters.
            if packets_tx.send(item).await.is_err() {
                return Ok(end.unwrap_or(ReadEnd::WriterDone));
            }
            if let Some(end) = end {
                return Ok(end);
            }
        }
    };
    let (stats, end, ()) = tokio::try_join!(writer, read, forward)?;
    // Our `PACKET_FIN` is out: the sender answers with its own, or just ends the stream.
    if let ReadEnd::WriterDone = end {
        loop {
            match incoming.next().await {
                None => break,
                Some(Err(e)) => return Err(Error::Transport(e.to_string())),
                Some(Ok(p)) if p.r#type == PacketType::PacketFin as i32 => break,
                Some(Ok(_)) => {}
            }
        }
    } else if let ReadEnd::Failed(msg) = end {
        return Err(Error::Transport(msg));
    }
    Ok(stats)
}

/// The blocking half of [`receive`]: applies packets in order, queueing requests and the final
/// `PACKET_FIN` for the sender.
fn write_tree(
    dest: &Path,
    mut packets: mpsc::Receiver<Result<Packet, String>>,
    requests: mpsc::UnboundedSender<Packet>,
) -> Result<ReceiveStats, Error> {
    let mut r = Receiver {
        dest,
        stats: ReceiveStats::default(),
        next_id: 0,
        seen: HashSet::new(),
        dirs: HashSet::new(),
        files: HashSet::new(),
        dir_attrs: Vec::new(),
        pending: HashMap::new(),
    };
    let mut list_done = false;
    while !(list_done && r.pending.is_empty()) {
        let p = match packets.blocking_recv() {
            None => return Err(Error::UnexpectedEof("the transfer was complete")),
            Some(Err(e)) => return Err(Error::Transport(e)),
            Some(Ok(p)) => p,
        };
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketStat) => match p.stat {
                _ if list_done => {
                    return Err(Error::Protocol(
                        "PACKET_STAT after the end of the file list".into(),
                    ));
                }
                None => list_done = true,
                Some(stat) => {
                    let id = r.next_id;
                    r.next_id += 1;
                    r.stats.entries += 1;
                    if r.add(id, stat)? {
                        requests
                            .send(packet(PacketType::PacketReq, id, Vec::new()))
                            .map_err(|_| Error::ChannelClosed)?;
                    }
                }
            },
            Ok(PacketType::PacketData) => r.data(p.id, &p.data)?,
            Ok(PacketType::PacketErr) => {
                return Err(Error::FromSender(
                    String::from_utf8_lossy(&p.data).into_owned(),
                ));
            }
            Ok(PacketType::PacketFin) => {
                return Err(Error::Protocol(
                    "sender finished before the transfer was complete".into(),
                ));
            }
            _ => {}
        }
    }

    // Deepest first, so setting a parent's mtime comes after its children were written.
    for (abs, mode, mod_time) in r.dir_attrs.iter().rev() {
        set_mtime(abs, *mod_time);
        set_mode(abs, *mode)?;
    }

    requests
        .send(packet(PacketType::PacketFin, 0, Vec::new()))
        .map_err(|_| Error::ChannelClosed)?;
    Ok(r.stats)
}

/// A requested file whose content is still arriving.
struct Pending {
    abs: PathBuf,
    mode: u32,
    mod_time: i64,
    /// Opened on the first chunk, so only files in flight hold descriptors.
    file: Option<fs::File>,
}

struct Receiver<'a> {
    dest: &'a Path,
    stats: ReceiveStats,
    next_id: u32,
    /// Every path announced so far: a path is announced once, so nothing created can later be
    /// swapped for a symlink that a descendant's path would then go through.
    seen: HashSet<String>,
    /// Directories announced so far (relative); a path's parent must be one of them.
    dirs: HashSet<String>,
    /// Regular files announced so far: the only valid hard link targets.
    files: HashSet<String>,
    /// Directories whose mode and mtime are set once everything below them is written.
    dir_attrs: Vec<(PathBuf, u32, i64)>,
    pending: HashMap<u32, Pending>,
}

/// Checks that `path` is a clean relative slash path.
fn check_rel(path: &str) -> Result<(), Error> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::UnsafePath(path.to_string()));
    }
    Ok(())
}

impl Receiver<'_> {
    /// Creates what `stat` announces; returns whether its content must be requested.
    fn add(&mut self, id: u32, stat: Stat) -> Result<bool, Error> {
        let rel = stat.path.as_str();
        check_rel(rel)?;
        if let Some((parent, _)) = rel.rsplit_once('/') {
            if !self.dirs.contains(parent) {
                return Err(Error::Protocol(format!(
                    "`{rel}` arrived before its parent directory"
                )));
            }
        }
        if !self.seen.insert(rel.to_string()) {
            return Err(Error::Protocol(format!("`{rel}` was announced twice")));
        }
        let abs = self.dest.join(rel);
        let m = stat.mode;
        if m & mode::DIR != 0 {
            match fs::symlink_metadata(&abs) {
                Ok(meta) if meta.is_dir() => {}
                _ => {
                    remove_existing(&abs)?;
                    fs::create_dir(&abs).map_err(|e| Error::io(&abs, e))?;
                }
            }
            self.dirs.insert(rel.to_string());
            self.dir_attrs.push((abs, m, stat.mod_time));
            self.stats.dirs += 1;
            Ok(false)
        } else if m & mode::SYMLINK != 0 {
            remove_existing(&abs)?;
            std::os::unix::fs::symlink(&stat.linkname, &abs).map_err(|e| Error::io(&abs, e))?;
            self.stats.symlinks += 1;
            Ok(false)
        } else if !mode::is_regular(m) {
            self.stats.skipped += 1;
            Ok(false)
        } else if !stat.linkname.is_empty() {
            // A hard link to a regular file announced earlier.
            if !self.files.contains(&stat.linkname) {
                return Err(Error::Protocol(format!(
                    "`{rel}` is a hard link to `{}`, which is not a file announced earlier",
                    stat.linkname
                )));
            }
            remove_existing(&abs)?;
            let target = self.dest.join(&stat.linkname);
            fs::hard_link(&target, &abs).map_err(|e| Error::io(&abs, e))?;
            self.stats.hardlinks += 1;
            Ok(false)
        } else {
            remove_existing(&abs)?;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&abs)
                .map_err(|e| Error::io(&abs, e))?;
            self.files.insert(rel.to_string());
            self.pending.insert(
                id,
                Pending {
                    abs,
                    mode: m,
                    mod_time: stat.mod_time,
                    file: None,
                },
            );
            Ok(true)
        }
    }

    /// A `PACKET_DATA` chunk; an empty one completes the file.
    fn data(&mut self, id: u32, data: &[u8]) -> Result<(), Error> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Err(Error::InvalidRequest(id));
        };
        let file = match &mut p.file {
            Some(f) => f,
            None => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&p.abs)
                    .map_err(|e| Error::io(&p.abs, e))?;
                p.file.insert(f)
            }
        };
        if !data.is_empty() {
            file.write_all(data).map_err(|e| Error::io(&p.abs, e))?;
            self.stats.bytes_received += data.len() as u64;
            return Ok(());
        }
        let Some(mut p) = self.pending.remove(&id) else {
            unreachable!("checked above")
        };
        let file = p.file.take().expect("opened above");
        if let Some(t) = system_time(p.mod_time) {
            let _ = file.set_modified(t);
        }
        drop(file);
        set_mode(&p.abs, p.mode)?;
        self.stats.files += 1;
        Ok(())
    }
}

/// Removes whatever is at `abs` (never following a symlink there).
fn remove_existing(abs: &Path) -> Result<(), Error> {
    let res = match fs::symlink_metadata(abs) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(abs),
        Ok(_) => fs::remove_file(abs),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| Error::io(abs, e))
}

fn set_mode(abs: &Path, go_mode: u32) -> Result<(), Error> {
    fs::set_permissions(abs, Permissions::from_mode(mode::unix_permissions(go_mode)))
        .map_err(|e| Error::io(abs, e))
}

/// Best effort: mtimes are informational.
fn set_mtime(abs: &Path, mod_time: i64) {
    let Some(t) = system_time(mod_time) else {
        return;
    };
    if let Ok(f) = fs::File::open(abs) {
        let _ = f.set_modified(t);
    }
}

/// `None` for 0 (not sent).
fn system_time(nanos: i64) -> Option<SystemTime> {
    if nanos == 0 {
        None
    } else if nanos > 0 {
        UNIX_EPOCH.checked_add(Duration::from_nanos(nanos as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_nanos(nanos.unsigned_abs()))
    }
}
