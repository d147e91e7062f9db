//! The receiving side of DiffCopy (BuildKit's local exporter): write the announced tree into a
//! directory, requesting every regular file's content.

use crate::Error;
use crate::send::{notify_peer, packet};
use crate::types::{Packet, PacketType, Stat};
use crate::walk::mode;
use futures::{Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::Sender;

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

/// A requested file whose content is still arriving.
struct Pending {
    abs: PathBuf,
    mode: u32,
    mod_time: i64,
    /// Opened on the first chunk, so only files in flight hold descriptors.
    file: Option<tokio::fs::File>,
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

async fn run<S, E>(
    dest: &Path,
    outgoing: &Sender<Packet>,
    mut incoming: S,
) -> Result<ReceiveStats, Error>
where
    S: Stream<Item = Result<Packet, E>> + Unpin,
    E: Display,
{
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
        let p = match incoming.next().await {
            None => return Err(Error::UnexpectedEof("the transfer was complete")),
            Some(Err(e)) => return Err(Error::Transport(e.to_string())),
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
                    if r.add(id, stat).await? {
                        outgoing
                            .send(packet(PacketType::PacketReq, id, Vec::new()))
                            .await
                            .map_err(|_| Error::ChannelClosed)?;
                    }
                }
            },
            Ok(PacketType::PacketData) => r.data(p.id, &p.data).await?,
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
        set_mtime(abs, *mod_time).await;
        set_mode(abs, *mode).await?;
    }

    outgoing
        .send(packet(PacketType::PacketFin, 0, Vec::new()))
        .await
        .map_err(|_| Error::ChannelClosed)?;
    loop {
        match incoming.next().await {
            None => break,
            Some(Err(e)) => return Err(Error::Transport(e.to_string())),
            Some(Ok(p)) if p.r#type == PacketType::PacketFin as i32 => break,
            Some(Ok(_)) => {}
        }
    }
    Ok(r.stats)
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
    async fn add(&mut self, id: u32, stat: Stat) -> Result<bool, Error> {
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
            match tokio::fs::symlink_metadata(&abs).await {
                Ok(meta) if meta.is_dir() => {}
                _ => {
                    remove_existing(&abs).await?;
                    tokio::fs::create_dir(&abs)
                        .await
                        .map_err(|e| Error::io(&abs, e))?;
                }
            }
            self.dirs.insert(rel.to_string());
            self.dir_attrs.push((abs, m, stat.mod_time));
            self.stats.dirs += 1;
            Ok(false)
        } else if m & mode::SYMLINK != 0 {
            remove_existing(&abs).await?;
            tokio::fs::symlink(&stat.linkname, &abs)
                .await
                .map_err(|e| Error::io(&abs, e))?;
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
            remove_existing(&abs).await?;
            let target = self.dest.join(&stat.linkname);
            tokio::fs::hard_link(&target, &abs)
                .await
                .map_err(|e| Error::io(&abs, e))?;
            self.stats.hardlinks += 1;
            Ok(false)
        } else {
            remove_existing(&abs).await?;
            tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&abs)
                .await
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
    async fn data(&mut self, id: u32, data: &[u8]) -> Result<(), Error> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Err(Error::InvalidRequest(id));
        };
        let file = match &mut p.file {
            Some(f) => f,
            None => {
                let f = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(&p.abs)
                    .await
                    .map_err(|e| Error::io(&p.abs, e))?;
                p.file.insert(f)
            }
        };
        if !data.is_empty() {
            file.write_all(data)
                .await
                .map_err(|e| Error::io(&p.abs, e))?;
            self.stats.bytes_received += data.len() as u64;
            return Ok(());
        }
        let Some(mut p) = self.pending.remove(&id) else {
            unreachable!("checked above")
        };
        let mut file = p.file.take().expect("opened above");
        file.flush().await.map_err(|e| Error::io(&p.abs, e))?;
        let file = file.into_std().await;
        if let Some(t) = system_time(p.mod_time) {
            let _ = file.set_modified(t);
        }
        drop(file);
        set_mode(&p.abs, p.mode).await?;
        self.stats.files += 1;
        Ok(())
    }
}

/// Removes whatever is at `abs` (never following a symlink there).
async fn remove_existing(abs: &Path) -> Result<(), Error> {
    let res = match tokio::fs::symlink_metadata(abs).await {
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(abs).await,
        Ok(_) => tokio::fs::remove_file(abs).await,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| Error::io(abs, e))
}

async fn set_mode(abs: &Path, go_mode: u32) -> Result<(), Error> {
    tokio::fs::set_permissions(abs, Permissions::from_mode(mode::unix_permissions(go_mode)))
        .await
        .map_err(|e| Error::io(abs, e))
}

/// Best effort: mtimes are informational.
async fn set_mtime(abs: &Path, mod_time: i64) {
    let Some(t) = system_time(mod_time) else {
        return;
    };
    if let Ok(f) = tokio::fs::File::open(abs).await {
        let _ = f.into_std().await.set_modified(t);
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
