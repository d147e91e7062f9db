//! Target platforms, `os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm64/v8`.

use std::fmt;
use std::str::FromStr;

/// An OCI platform. Parsed platforms have lowercase-letter, digit and `_` components only;
/// one read from an image config (kiln-compile's `base_platform`) may be anything it says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// Why a platform string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlatformError(String);

impl Platform {
    /// `linux/amd64`, the default platform of a target.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => {
                return Err(PlatformError(
                    "expected `os/arch` or `os/arch/variant`, e.g. `linux/amd64`".into(),
                ));
            }
        };
        for part in &parts {
            if part.is_empty()
                || !part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(PlatformError(format!(
                    "`{part}` is not a platform component (lowercase letters, digits, `_`)"
                )));
            }
        }
        Ok(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// As its `os/arch[/variant]` string, which is what the manifest said.
impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_display_as_written() {
        for s in [
            "linux/amd64",
            "linux/arm64/v8",
            "windows/amd64",
            "linux/x86_64",
        ] {
            let p: Platform = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm", Some("v7"))
        );
        assert_eq!("linux/amd64".parse(), Ok(Platform::linux_amd64()));
    }

    #[test]
    fn bad_platforms_say_why() {
        for s in ["linux", "", "linux/amd64/v8/x", "/amd64", "linux//v8"] {
            assert!(s.parse::<Platform>().is_err(), "{s}");
        }
        assert!(
            "linux"
                .parse::<Platform>()
                .unwrap_err()
                .to_string()
                .contains("os/arch")
        );
        assert_eq!(
            "Linux/amd64".parse::<Platform>().unwrap_err().to_string(),
            "`Linux` is not a platform component (lowercase letters, digits, `_`)"
        );
        assert!("linux/amd-64".parse::<Platform>().is_err());
    }
}
