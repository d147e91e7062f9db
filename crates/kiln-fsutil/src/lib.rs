//! The fsutil DiffCopy wire protocol (tonistiigi/fsutil, as BuildKit speaks it): walking a
//! directory into the STAT/REQ/DATA/FIN packet stream that uploads a build context, and
//! receiving such a stream into a directory (the local exporter). Transport-agnostic: packets
//! go through channels; the gRPC plumbing lives in `kiln-buildkit`.

mod filter;
mod receive;
mod send;
pub mod types;
mod walk;

#[cfg(test)]
mod tests;

pub use filter::{Filter, Patterns};
pub use receive::{ReceiveStats, receive};
pub use send::{CHUNK_SIZE, SendStats, send};
pub use walk::{Entry, content_mod_time, go_mode, make_stat, mode, walk};

use std::path::{Path, PathBuf};

/// Everything that can go wrong walking, sending or receiving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: file name is not valid UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    #[error("bad pattern `{pattern}`: {reason}")]
    Pattern { pattern: String, reason: String },
    /// A `PACKET_REQ` for an id that is not a regular file, or `PACKET_DATA` for an id that
    /// was not requested.
    #[error("invalid file request {0}")]
    InvalidRequest(u32),
    #[error("unsafe path `{0}`: absolute or not clean")]
    UnsafePath(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer sent `PACKET_ERR` (the text is its message).
    #[error("error from receiver: {0}")]
    FromReceiver(String),
    #[error("error from sender: {0}")]
    FromSender(String),
    /// The incoming stream failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The incoming stream ended before the named point.
    #[error("stream ended before {0}")]
    UnexpectedEof(&'static str),
    /// The outgoing channel's receiving end was dropped.
    #[error("outgoing packet channel closed")]
    ChannelClosed,
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A failure on this side, worth a `PACKET_ERR` to the peer (as opposed to the peer's own
    /// error or a broken connection).
    pub(crate) fn is_local(&self) -> bool {
        !matches!(
            self,
            Self::FromReceiver(_)
                | Self::FromSender(_)
                | Self::Transport(_)
                | Self::UnexpectedEof(_)
                | Self::ChannelClosed
        )
    }
}
