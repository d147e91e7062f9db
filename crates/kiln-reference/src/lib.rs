//! Parses and normalises container image references by the distribution reference grammar
//! (`[domain[:port]/]path[:tag][@digest]`), with Docker Hub's normalisation: no domain means
//! `docker.io`, and a single path component on Docker Hub gets `library/`. Also the other
//! name an image is chosen by: its platform (`os/arch[/variant]`, [`Platform`]).

mod platform;

pub use platform::{Platform, PlatformError};

use std::fmt;
use std::str::FromStr;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{input}`: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";
const NAME_MAX: usize = 255;

impl Reference {
    /// Parse and normalise `input`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let fail = |reason: String| ReferenceError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("empty reference".into()));
        }
        if input.trim() != input || input.contains(char::is_whitespace) {
            return Err(fail("must not contain whitespace".into()));
        }
        // Docker reads 64 hex digits as an image id; as a name it would be ambiguous.
        if input.len() == 64 && input.bytes().all(is_lower_hex) {
            return Err(fail(
                "64 hexadecimal characters are an image id, not a repository name".into(),
            ));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(parse_digest(d).map_err(fail)?)),
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &name_tag[at + 1..];
                if !valid_tag(tag) {
                    return Err(fail(format!(
                        "invalid tag `{tag}`: expected up to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`"
                    )));
                }
                (&name_tag[..at], Some(tag.to_string()))
            }
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(fail("missing repository name".into()));
        }
        let (domain, path) = split_domain(name);
        if let Some(domain) = domain {
            validate_domain(domain).map_err(fail)?;
        }
        if path.is_empty() {
            return Err(fail("missing repository path after the domain".into()));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(fail(format!(
                "repository name must be lowercase (`{path}`)"
            )));
        }
        for component in path.split('/') {
            if !valid_path_component(component) {
                return Err(fail(format!(
                    "invalid path component `{component}`: expected lowercase letters and digits, separated by `.`, `_`, `__` or dashes"
                )));
            }
        }
        let mut domain = match domain {
            None | Some("index.docker.io") => DOCKER_HUB.to_string(),
            Some(d) => d.to_string(),
        };
        if domain == "docker.io" {
            domain = DOCKER_HUB.to_string();
        }
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        // The grammar limits the path, not domain + path (distribution/reference v0.6.0).
        if path.len() > NAME_MAX {
            return Err(fail(format!(
                "repository path `{path}` is longer than {NAME_MAX} characters"
            )));
        }
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// Registry host, e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path, e.g. `library/python`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Tag as written, if any (no implicit `latest`).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The same reference pinned to `digest` (the tag is kept for readability); a digest that
    /// is not `algorithm:hex` of the algorithm's length is refused.
    pub fn with_digest(&self, digest: &str) -> Result<Reference, ReferenceError> {
        let digest = parse_digest(digest).map_err(|reason| ReferenceError {
            input: format!("{}@{digest}", self.without_digest()),
            reason,
        })?;
        Ok(Reference {
            digest: Some(digest),
            ..self.clone()
        })
    }

    /// The same reference without a digest.
    pub fn without_digest(&self) -> Reference {
        Reference {
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    /// The normalised form; a reference with neither tag nor digest gets `:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        match (&self.tag, &self.digest) {
            (Some(tag), _) => write!(f, ":{tag}")?,
            (None, None) => f.write_str(":latest")?,
            (None, Some(_)) => {}
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Docker's rule: the first component is a domain if it has a `.` or `:`, is `localhost`, or
/// has an uppercase letter (which then fails as a domain rather than as a path).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("invalid domain `{domain}`: unclosed `[`"));
        };
        // `\[[a-fA-F0-9:]+\]`: no zone, and no IPv4 tail (`::192.0.2.1`).
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!(
                "invalid IPv6 address `[{v6}]`: expected hex digits and `:` only"
            ));
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(
                    p.strip_prefix(':')
                        .ok_or(format!("invalid domain `{domain}`"))?,
                ),
            ),
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("invalid port `{port}` in domain `{domain}`"));
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(format!("invalid domain `{domain}`"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if word(c))
        && tag.len() <= 128
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Check that `d` is a digest kiln can use: `sha256:`, `sha384:` or `sha512:` and that many
/// lowercase hex characters. Returns why not.
pub fn check_digest(d: &str) -> Result<(), String> {
    parse_digest(d).map(|_| ())
}

fn parse_digest(d: &str) -> Result<String, String> {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return Err(format!("invalid digest `{d}`: expected `algorithm:hex`"));
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "unsupported digest algorithm `{algorithm}`: expected sha256, sha384 or sha512"
            ));
        }
    };
    if hex.len() != len || !hex.bytes().all(is_lower_hex) {
        return Err(format!(
            "invalid digest `{d}`: {algorithm} needs {len} lowercase hex characters"
        ));
    }
    Ok(d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_valid_references() {
        let cases = [
            ("python", "docker.io/library/python:latest"),
            (
                "python:3.11-slim-bookworm",
                "docker.io/library/python:3.11-slim-bookworm",
            ),
            ("docker.io/python:3", "docker.io/library/python:3"),
            (
                "index.docker.io/library/python",
                "docker.io/library/python:latest",
            ),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:1", "localhost:5000/app:1"),
            (
                "127.0.0.1:5000/library/python:3.11",
                "127.0.0.1:5000/library/python:3.11",
            ),
            (
                "ghcr.io/org/sub/image:v1.2.3",
                "ghcr.io/org/sub/image:v1.2.3",
            ),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
            ("a__b/c-d---e/f.g_h", "docker.io/a__b/c-d---e/f.g_h:latest"),
        ];
        for (input, want) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
        }
    }

    #[test]
    fn keeps_tag_and_digest() {
        let r = Reference::parse(&format!("python:3.11@{D}")).unwrap();
        assert_eq!(r.tag(), Some("3.11"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/python:3.11@{D}"));
        let r = Reference::parse(&format!("python@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/python@{D}"));
        assert_eq!(
            r.without_digest().to_string(),
            "docker.io/library/python:latest"
        );
        assert_eq!(r.without_digest().with_digest(D).unwrap(), r);
        assert_eq!(r.name(), "docker.io/library/python");
        assert_eq!((r.domain(), r.path()), ("docker.io", "library/python"));
    }

    #[test]
    fn rejects_invalid_references_with_a_reason() {
        let cases = [
            ("", "empty reference"),
            (
                "Debian:Bookworm",
                "repository name must be lowercase (`Debian`)",
            ),
            ("debian:", "invalid tag ``"),
            ("debian:-x", "invalid tag `-x`"),
            ("has space", "must not contain whitespace"),
            (
                "python@sha256:abc",
                "sha256 needs 64 lowercase hex characters",
            ),
            ("python@md5:abc", "unsupported digest algorithm `md5`"),
            ("a//b", "invalid path component ``"),
            ("a/-b", "invalid path component `-b`"),
            ("example.com:port/x", "invalid port `port`"),
            ("exa_mple.com/x", "invalid domain `exa_mple.com`"),
            ("example.com/", "missing repository path"),
            (":tag", "missing repository name"),
        ];
        for (input, reason) in cases {
            let err = Reference::parse(input).expect_err(input);
            assert!(
                err.reason.contains(reason),
                "{input}: {} (want {reason})",
                err.reason
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid image reference `{input}`"))
            );
        }
        let tag = format!("x:{}", "t".repeat(129));
        assert!(Reference::parse(&tag).is_err());
    }

    #[test]
    fn limits_the_path_not_domain_and_path_to_255() {
        let domain = format!("{}.example.com", "r".repeat(40));
        // 255 characters of path under a long domain: valid.
        let path = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        assert_eq!(path.len(), 255);
        let r = Reference::parse(&format!("{domain}/{path}:v1")).unwrap();
        assert_eq!(r.path(), path);
        assert!(r.name().len() > 255);
        // 256: too long, wherever the domain is.
        for input in [format!("{domain}/{path}c"), format!("localhost/{path}c")] {
            let err = Reference::parse(&input).unwrap_err();
            assert!(err.reason.contains("longer than 255"), "{input}: {err}");
        }
        // Docker Hub's `library/` counts: the normalised path is what a registry sees.
        let official = "a".repeat(247);
        assert!(Reference::parse(&official).is_ok());
        assert!(Reference::parse(&format!("{official}b")).is_err());
        // A tag does not count toward the limit.
        let tagged = format!("{path}:{}", "t".repeat(128));
        assert!(Reference::parse(&format!("{domain}/{tagged}")).is_ok());
    }

    #[test]
    fn refuses_an_image_id_as_a_repository_name() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let err = Reference::parse(id).unwrap_err();
        assert!(err.reason.contains("image id"), "{err}");
        // One character fewer or more, a tag, or a domain make it a name again.
        for ok in [
            &id[..63],
            &format!("{id}0")[..],
            &format!("{id}:v1")[..],
            &format!("docker.io/{id}")[..],
            &format!("library/{id}")[..],
        ] {
            assert!(Reference::parse(ok).is_ok(), "{ok}");
        }
        // Uppercase hex is no id, and no valid name either.
        assert!(
            Reference::parse(&id.to_uppercase())
                .unwrap_err()
                .reason
                .contains("lowercase")
        );
    }

    #[test]
    fn ipv6_hosts_are_hex_and_colons_only() {
        let cases = [
            ("[2001:db8::1]/app", true),
            ("[2001:db8::1]:5000/app:v1", true),
            ("[::1]:5000/app", true),
            ("[2001:DB8::1]/app", true),
            ("[2001:db8:3:4::192.0.2.33]:5000/debian", false),
            ("[::ffff:127.0.0.1]/app", false),
            ("[fe80::1%eth0]:5000/app", false),
            ("[]:5000/app", false),
            ("[2001:db8::1/app", false),
            ("[2001:db8::1]x/app", false),
            ("[2001:db8::1]:/app", false),
        ];
        for (input, valid) in cases {
            assert_eq!(Reference::parse(input).is_ok(), valid, "{input}");
        }
    }

    #[test]
    fn with_digest_validates_the_digest() {
        let r = Reference::parse("busybox").unwrap();
        let err = r.with_digest("foo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid image reference `docker.io/library/busybox:latest@foo`: invalid digest `foo`: expected `algorithm:hex`"
        );
        for bad in [
            "sha256:abc",
            "md5:0123",
            &D.to_uppercase(),
            &format!("{D}0"),
            "",
        ] {
            assert!(r.with_digest(bad).is_err(), "{bad}");
        }
        assert_eq!(r.with_digest(D).unwrap().digest(), Some(D));
        assert!(check_digest(D).is_ok());
        assert!(check_digest("sha256:").is_err());
        let sha512 = format!("sha512:{}", "0".repeat(128));
        assert!(check_digest(&sha512).is_ok());
    }
}
