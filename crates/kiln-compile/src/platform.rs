//! Which platform a base image is, by its image config, and whether that serves the platform a
//! target asks for: BuildKit builds on whatever image the reference resolves to (a single-arch
//! image, or one in the engine's local store, comes back whatever was asked), so without this
//! check an `arm64` target on an `amd64`-only base yields an image labelled arm64 that holds
//! x86-64 binaries.

use kiln_reference::Platform;

/// The `os`/`architecture`/`variant` of an OCI image config JSON (as the engine's
/// ResolveImageConfig returns it), normalised; `None` when the config does not say (then there
/// is nothing to compare against).
pub fn base_platform(json: &[u8]) -> Option<Platform> {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: String,
    }
    let f: Fields = serde_json::from_slice(json).ok()?;
    if f.os.is_empty() || f.architecture.is_empty() {
        return None;
    }
    Some(normalise(&Platform {
        os: f.os,
        architecture: f.architecture,
        variant: Some(f.variant).filter(|v| !v.is_empty()),
    }))
}

/// Whether an image of platform `base` runs as platform `wanted`: same OS and architecture
/// (after the usual aliases: `x86_64` is `amd64`, `aarch64` is `arm64`), and, when both name a
/// variant, the base's is the same or an older one of the same family (`amd64/v2` code runs on
/// `amd64/v3`, `arm/v6` on `arm/v7`). A `wanted` without a variant accepts any.
pub fn serves(base: &Platform, wanted: &Platform) -> bool {
    let (base, wanted) = (normalise(base), normalise(wanted));
    if base.os != wanted.os || base.architecture != wanted.architecture {
        return false;
    }
    match (&base.variant, &wanted.variant) {
        (Some(b), Some(w)) => match (level(b), level(w)) {
            (Some(b), Some(w)) => b <= w,
            _ => b == w,
        },
        // An amd64 image without a variant is the baseline (v1), which every amd64 runs.
        (None, Some(_)) => base.architecture == "amd64",
        (_, None) => true,
    }
}

/// containerd's normalisation: architecture aliases, and the default variant where an
/// architecture has one (`arm64` is `v8`, `arm` is `v7`).
fn normalise(p: &Platform) -> Platform {
    let os = p.os.to_ascii_lowercase();
    let mut variant = p.variant.clone().map(|v| v.to_ascii_lowercase());
    let architecture = match p.architecture.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        "armhf" => {
            variant = Some("v7".into());
            "arm".to_string()
        }
        "armel" => {
            variant = Some("v6".into());
            "arm".to_string()
        }
        other => other.to_string(),
    };
    let variant = match (architecture.as_str(), variant) {
        ("arm64", None) => Some("v8".to_string()),
        ("arm64", Some(v)) if v == "8" => Some("v8".to_string()),
        ("arm", None) => Some("v7".to_string()),
        ("arm", Some(v)) if v.len() == 1 => Some(format!("v{v}")),
        ("amd64", Some(v)) if v == "v1" => None,
        (_, v) => v,
    };
    Platform {
        os,
        architecture,
        variant,
    }
}

/// `vN` as N.
fn level(variant: &str) -> Option<u32> {
    variant.strip_prefix('v')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn the_config_says_which_platform_an_image_is() {
        let amd64 = br#"{"architecture":"amd64","os":"linux","config":{}}"#;
        assert_eq!(base_platform(amd64), Some(p("linux/amd64")));
        let arm = br#"{"architecture":"arm","os":"linux","variant":"v6"}"#;
        assert_eq!(base_platform(arm), Some(p("linux/arm/v6")));
        assert_eq!(
            base_platform(br#"{"architecture":"aarch64","os":"linux"}"#),
            Some(p("linux/arm64/v8"))
        );
        assert_eq!(
            base_platform(br#"{"config":{}}"#),
            None,
            "nothing to compare"
        );
        assert_eq!(base_platform(b"not json"), None);
        assert_eq!(base_platform(br#"{"os":3}"#), None);
    }

    #[test]
    fn a_base_serves_its_own_platform_and_older_variants_only() {
        let ok = [
            ("linux/amd64", "linux/amd64"),
            ("linux/amd64", "linux/amd64/v3"),
            ("linux/amd64/v2", "linux/amd64/v3"),
            ("linux/amd64/v2", "linux/amd64"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm/v6", "linux/arm/v7"),
            ("linux/arm/v7", "linux/arm"),
        ];
        for (base, wanted) in ok {
            assert!(serves(&p(base), &p(wanted)), "{base} serves {wanted}");
        }
        let bad = [
            ("linux/amd64", "linux/arm64"),
            ("linux/arm64", "linux/amd64"),
            ("linux/amd64", "windows/amd64"),
            ("linux/amd64/v3", "linux/amd64/v2"),
            ("linux/arm/v7", "linux/arm/v6"),
            ("linux/arm64", "linux/arm"),
        ];
        for (base, wanted) in bad {
            assert!(
                !serves(&p(base), &p(wanted)),
                "{base} does not serve {wanted}"
            );
        }
    }
}
