//! What can go wrong talking to BuildKit, said so a user can act on it.

/// A BuildKit client error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad builder address {0}")]
    Endpoint(String),
    #[error("cannot reach BuildKit at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("cannot start the build session: {0}")]
    Session(String),
    /// The daemon ran the build and it failed (a RUN step, a missing file, a bad image).
    #[error("{action} failed: {message}")]
    Failed {
        action: &'static str,
        message: String,
    },
    /// The connection broke: the daemon stopped or the socket closed mid-build.
    #[error("lost the connection to BuildKit during {action}: {message}")]
    Lost {
        action: &'static str,
        message: String,
    },
    #[error("the daemon does not support {0}")]
    Unsupported(String),
}

impl Error {
    pub(crate) fn from_status(action: &'static str, status: tonic::Status) -> Error {
        match status.code() {
            // The transport's own error (e.g. a TLS alert) is in the source chain.
            tonic::Code::Unavailable | tonic::Code::Cancelled => Error::Lost {
                action,
                message: lost(&status),
            },
            tonic::Code::Unimplemented => {
                Error::Unsupported(format!("{action} ({})", status.message()))
            }
            tonic::Code::Unknown
                if status.message().contains("transport")
                    || status.message().contains("connection") =>
            {
                Error::Lost {
                    action,
                    message: status.message().to_string(),
                }
            }
            _ => Error::Failed {
                action,
                message: status.message().to_string(),
            },
        }
    }
}

/// What broke a connection: the status message and what its sources add (a TLS alert, the
/// socket gone), without tonic's rendering of the status itself (code, source debug dump).
fn lost(status: &tonic::Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut add = |text: String| {
        // "transport error" and the like say nothing the parts around them do not.
        if !text.is_empty() && text != "transport error" && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
    };
    add(status.message().to_string());
    let mut source = std::error::Error::source(status);
    while let Some(inner) = source {
        add(inner.to_string());
        source = inner.source();
    }
    if parts.is_empty() {
        parts.push(format!("{:?}", status.code()));
    }
    parts.join(": ")
}

/// An error and its sources, joined with `: `.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}
