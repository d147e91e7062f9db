//! Whether a Docker Engine answers, and the gate every real-engine test opens with:
//!
//! ```ignore
//! #[test]
//! fn builds_something() {
//!     if !project::require_engine() {
//!         return;
//!     }
//!     …
//! }
//! ```
//!
//! Without an engine a plain `cargo test` skips those tests with a message; with
//! `KILN_REQUIRE_ENGINE=1` (what `cargo xtask test`, and so CI, sets) a missing engine fails
//! them instead, so a skipped test is never counted as passing there.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// The engine the tests build on (the `kiln` they run gets no `DOCKER_HOST`).
pub const SOCKET: &str = "/var/run/docker.sock";

/// The variable that turns a skip into a failure.
pub const REQUIRE: &str = "KILN_REQUIRE_ENGINE";

/// Whether a Docker Engine answers `GET /_ping` with 200 on the Unix socket `socket`.
pub fn answers(socket: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    // "HTTP/1.x 200"
    let mut answer = [0u8; 12];
    s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_ok()
        && s.read_exact(&mut answer).is_ok()
        && answer.starts_with(b"HTTP/1.")
        && answer.ends_with(b" 200")
}

/// Whether a test that needs the engine at [`SOCKET`] should run: true when it answers
/// (asked once per test binary). When it does not, panics if `KILN_REQUIRE_ENGINE=1`, else
/// says the test is skipped and returns false.
pub fn require_engine() -> bool {
    static UP: OnceLock<bool> = OnceLock::new();
    if *UP.get_or_init(|| answers(Path::new(SOCKET))) {
        return true;
    }
    let message =
        format!("skipped: no Docker Engine at {SOCKET} (set {REQUIRE}=1 to fail instead)");
    if std::env::var_os(REQUIRE).is_some_and(|v| v == "1") {
        panic!(
            "{REQUIRE}=1 but there is no Docker Engine at {SOCKET} (`kiln engine up` starts one)"
        );
    }
    // Straight to the process's stderr: the harness captures `eprintln!` of passing tests.
    let test = std::thread::current().name().unwrap_or("test").to_string();
    let _ = writeln!(std::io::stderr(), "{test}: {message}");
    false
}
