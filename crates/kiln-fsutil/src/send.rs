//! The sending side of DiffCopy: announce every entry, then serve file contents on request.

use crate::Error;
use crate::types::{Packet, PacketType};
use crate::walk::Entry;
use futures::{Stream, StreamExt};
use std::collections::VecDeque;
use std::fmt::Display;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::Sender;

/// File contents go out in `PACKET_DATA` chunks of this size (fsutil's buffer size).
pub const CHUNK_SIZE: usize = 32 * 1024;

/// How long to try to tell the peer about a local failure before giving up.
const ERR_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`send`] transferred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Files whose content was requested and sent.
    pub files_sent: usize,
    /// Content bytes sent (not counting metadata).
    pub bytes_sent: u64,
    /// `PACKET_STAT`s sent (not counting the end-of-list marker).
    pub entries: usize,
}

pub(crate) fn packet(ty: PacketType, id: u32, data: Vec<u8>) -> Packet {
    Packet {
        r#type: ty as i32,
        stat: None,
        id,
        data,
    }
}

/// Best effort: a `PACKET_ERR` carrying `msg`, unless the peer has stopped listening.
pub(crate) async fn notify_peer(outgoing: &Sender<Packet>, msg: String) {
    let pkt = packet(PacketType::PacketErr, 0, msg.into_bytes());
    let _ = tokio::time::timeout(ERR_SEND_TIMEOUT, outgoing.send(pkt)).await;
}

/// Serves `entries` (as [`walk`](crate::walk) returned them) to a DiffCopy receiver: one
/// `PACKET_STAT` per entry (its index is its id), an empty `PACKET_STAT` ending the list, and
/// `PACKET_DATA` chunks (then an empty one) for each `PACKET_REQ`, in request order, while
/// reading requests concurrently. Ends when the receiver sends `PACKET_FIN` (answered with a
/// `PACKET_FIN`). A local failure is reported to the receiver as a `PACKET_ERR`.
pub async fn send<S, E>(
    entries: &[Entry],
    outgoing: Sender<Packet>,
    incoming: S,
) -> Result<SendStats, Error>
where
    S: Stream<Item = Result<Packet, E>> + Unpin,
    E: Display,
{
    let result = run(entries, &outgoing, incoming).await;
    if let Err(e) = &result {
        if e.is_local() {
            notify_peer(&outgoing, e.to_string()).await;
        }
    }
    result
}

/// A file being streamed.
struct Current {
    id: u32,
    file: tokio::fs::File,
}

async fn run<S, E>(
    entries: &[Entry],
    outgoing: &Sender<Packet>,
    mut incoming: S,
) -> Result<SendStats, Error>
where
    S: Stream<Item = Result<Packet, E>> + Unpin,
    E: Display,
{
    let mut stats = SendStats::default();
    // Index of the next STAT to send; `entries.len()` = the end marker; past it = all sent.
    let mut next_stat = 0usize;
    let mut queue: VecDeque<u32> = VecDeque::new();
    let mut current: Option<Current> = None;
    let mut buf = vec![0u8; CHUNK_SIZE];

    loop {
        let has_work = next_stat <= entries.len() || current.is_some() || !queue.is_empty();
        tokio::select! {
            biased;
            item = incoming.next() => {
                let p = match item {
                    None => return Err(Error::UnexpectedEof("the receiver's PACKET_FIN")),
                    Some(Err(e)) => return Err(Error::Transport(e.to_string())),
                    Some(Ok(p)) => p,
                };
                match PacketType::try_from(p.r#type) {
                    Ok(PacketType::PacketReq) => {
                        let ok = entries.get(p.id as usize).is_some_and(Entry::is_requestable);
                        if !ok {
                            return Err(Error::InvalidRequest(p.id));
                        }
                        queue.push_back(p.id);
                    }
                    Ok(PacketType::PacketFin) => {
                        outgoing
                            .send(packet(PacketType::PacketFin, 0, Vec::new()))
                            .await
                            .map_err(|_| Error::ChannelClosed)?;
                        return Ok(stats);
                    }
                    Ok(PacketType::PacketErr) => {
                        return Err(Error::FromReceiver(String::from_utf8_lossy(&p.data).into_owned()));
                    }
                    // fsutil's sender ignores anything else.
                    _ => {}
                }
            }
            permit = outgoing.reserve(), if has_work => {
                let permit = permit.map_err(|_| Error::ChannelClosed)?;
                if let Some(entry) = entries.get(next_stat) {
                    let mut stat = entry.stat.clone();
                    stat.path.clone_from(&entry.path_rel);
                    permit.send(Packet { r#type: PacketType::PacketStat as i32, stat: Some(stat), id: 0, data: Vec::new() });
                    next_stat += 1;
                    stats.entries += 1;
                    continue;
                }
                if next_stat == entries.len() {
                    permit.send(Packet::default());
                    next_stat += 1;
                    continue;
                }
                let cur = match current.as_mut() {
                    Some(cur) => cur,
                    None => {
                        let id = queue.pop_front().expect("has_work implies a queued request");
                        let abs = &entries[id as usize].abs;
                        let file = tokio::fs::File::open(abs).await.map_err(|e| Error::io(abs, e))?;
                        current.insert(Current { id, file })
                    }
                };
                let n = read_full(&mut cur.file, &mut buf)
                    .await
                    .map_err(|e| Error::io(&entries[cur.id as usize].abs, e))?;
                if n == 0 {
                    permit.send(packet(PacketType::PacketData, cur.id, Vec::new()));
                    stats.files_sent += 1;
                    current = None;
                } else {
                    permit.send(packet(PacketType::PacketData, cur.id, buf[..n].to_vec()));
                    stats.bytes_sent += n as u64;
                }
            }
        }
    }
}

/// Reads until `buf` is full or the file ends, so chunks are full-sized except the last.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = file.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}
