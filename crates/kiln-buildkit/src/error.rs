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
    /// The connection stayed open but the daemon stopped answering (frozen, or a proxy in
    /// between stalled): its keepalive pings went unanswered.
    #[error(
        "BuildKit stopped answering during {action}: no reply to a keepalive ping within {seconds} s (the daemon, or something between kiln and it, is frozen or overloaded); kiln gave up"
    )]
    Stalled { action: &'static str, seconds: u64 },
    /// The daemon could not reach an image registry (connection refused, no such host, timeout,
    /// TLS): the registry's problem, not the connection to BuildKit.
    #[error("{action} failed: cannot reach the registry {registry}: {message}")]
    Registry {
        action: &'static str,
        registry: String,
        message: String,
    },
    #[error("the daemon does not support {0}")]
    Unsupported(String),
}

impl Error {
    /// `status` of a call on a connection with `keepalive` (which a stalled one names).
    pub(crate) fn from_status(
        action: &'static str,
        status: tonic::Status,
        keepalive: std::time::Duration,
    ) -> Error {
        // A status kiln's own transport made (the connection broke) has the transport error
        // as its source; one the daemon sent has none, whatever its text says (a daemon's
        // "connection refused" is about a registry or a session).
        let local = std::error::Error::source(&status).is_some();
        if local && timed_out(&status) {
            return Error::Stalled {
                action,
                seconds: keepalive.as_secs(),
            };
        }
        match status.code() {
            // The transport's own error (e.g. a TLS alert) is in the source chain.
            tonic::Code::Unavailable | tonic::Code::Cancelled if local => Error::Lost {
                action,
                message: lost(&status),
            },
            tonic::Code::Unknown if local => Error::Lost {
                action,
                message: lost(&status),
            },
            tonic::Code::Unimplemented => {
                Error::Unsupported(format!("{action} ({})", status.message()))
            }
            _ => match registry_unreachable(status.message()) {
                Some(registry) => Error::Registry {
                    action,
                    registry,
                    message: status.message().to_string(),
                },
                None if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Cancelled
                ) =>
                {
                    Error::Lost {
                        action,
                        message: status.message().to_string(),
                    }
                }
                None => Error::Failed {
                    action,
                    message: status.message().to_string(),
                },
            },
        }
    }
}

/// Whether the connection's keepalive ping went unanswered: hyper's keepalive timeout (a
/// `hyper::Error` that is a timeout) among the sources of a status kiln's transport made.
fn timed_out(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(inner) = source {
        if inner
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = inner.source();
    }
    false
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

/// The registry host in a daemon's message about a registry request that never got an answer
/// (`failed to do request: Head "https://HOST/v2/…": dial tcp …: connection refused`, no such
/// host, i/o timeout, TLS), or `None` when the message is about something else.
fn registry_unreachable(message: &str) -> Option<String> {
    const CAUSES: &[&str] = &[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "no route to host",
        "tls:",
        "x509:",
        "connection reset by peer",
        "server gave HTTP response to HTTPS client",
    ];
    let at = message.find("/v2/")?;
    if !CAUSES.iter().any(|c| message.contains(c)) {
        return None;
    }
    let before = &message[..at];
    let start = before.rfind("://")? + 3;
    let host = &before[start..];
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| host.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_message_about_a_registry_is_not_a_lost_connection() {
        let refused = tonic::Status::unknown(
            "failed to do request: Head \"http://127.0.0.1:1/v2/kiln-test/x/manifests/v1\": dial tcp 127.0.0.1:1: connect: connection refused",
        );
        let e = Error::from_status("resolve image config", refused, crate::DEFAULT_KEEPALIVE);
        assert!(
            e.to_string().starts_with(
                "resolve image config failed: cannot reach the registry 127.0.0.1:1: failed to do request"
            ),
            "{e}"
        );
        let dns = tonic::Status::unknown(
            "failed to resolve source metadata for registry.invalid/x:1: failed to do request: Head \"https://registry.invalid/v2/x/manifests/1\": dial tcp: lookup registry.invalid: no such host",
        );
        assert!(matches!(
            Error::from_status("solve", dns, crate::DEFAULT_KEEPALIVE),
            Error::Registry { registry, .. } if registry == "registry.invalid"
        ));
        // The daemon's own words about a connection that is not kiln's are a failure.
        let session = tonic::Status::unknown("failed to read from the session: connection reset");
        assert!(matches!(
            Error::from_status("solve", session, crate::DEFAULT_KEEPALIVE),
            Error::Failed { .. }
        ));
        // A missing manifest is the registry answering: a plain failure.
        let missing =
            tonic::Status::unknown("docker.io/library/nope:1: not found: manifest unknown");
        assert!(matches!(
            Error::from_status("solve", missing, crate::DEFAULT_KEEPALIVE),
            Error::Failed { .. }
        ));
    }
}
