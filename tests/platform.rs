//! A target's platform against its base image's, on the real engine: asking for a platform
//! the base is not fails before any step runs, instead of labelling x86-64 binaries arm64.

#[path = "support/project.rs"]
mod project;

use std::process::Command;

use project::Image;

/// amd64 only: `cargo xtask` imports it from a debootstrap rootfs into the engine.
const BASE: &str = "kiln-base/debian-python:bookworm";
/// The same image in the registry `cargo xtask` serves on 127.0.0.1:5000 (one manifest, no
/// index).
const REGISTRY_BASE: &str = "127.0.0.1:5000/kiln/debian-python:bookworm";

#[test]
fn a_platform_the_base_image_is_not_fails_before_any_step_runs() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("arm64-on-amd64");
    let manifest = format!(
        r#"version = 1
[target.other]
from    = "{BASE}"
network = "host"
run     = ["echo other-ran-{image}"]

[target.arm]
from     = "{BASE}"
image    = "{image}"
network  = "host"
platform = "linux/arm64"
run      = ["echo arm-ran-{image}"]
"#,
        image = image.0
    );
    let dir = project::repo(&[("kiln.toml", &manifest)]);
    let run = project::kiln(dir.path(), &["build"]);
    assert_eq!(run.code, 1, "{run}");
    // (The engine first looks the image up in the registry for linux/arm64, which fails:
    // the progress shows that; the error says why.)
    let error = "\nerror: kiln.toml:7:9: `target.arm.platform`: target `arm` asks for \
         platform linux/arm64, but its base image docker.io/kiln-base/debian-python:bookworm \
         is linux/amd64\n  hint: use a base image that has linux/arm64 (a multi-platform \
         image, or one built for it), or set `platform = \"linux/amd64\"`";
    assert!(run.stderr.trim_end().ends_with(error), "{run}");
    assert_eq!(run.stderr.matches("error: ").count(), 1, "{run}");
    // No RUN step of any target ran (the other target's neither: the check comes first).
    assert!(!run.stderr.contains("arm-ran-"), "{run}");
    assert!(!run.stderr.contains("other-ran-"), "{run}");
    assert!(!run.stderr.contains("[arm/pre 1]"), "{run}");
    let inspect = Command::new("docker")
        .args(["image", "inspect", &image.0])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "no image was tagged");
    assert!(project::read(dir.path(), "kiln.lock").is_empty());

    // A single-platform image in a registry resolves whatever platform is asked (this one
    // used to build an "arm64" image of x86-64 binaries): the config says what it is.
    let registry = manifest.replace(
        &format!("from     = \"{BASE}\""),
        &format!("from     = \"{REGISTRY_BASE}\""),
    );
    assert_ne!(registry, manifest);
    std::fs::write(dir.path().join("kiln.toml"), &registry).unwrap();
    let run = project::kiln(dir.path(), &["build", "arm"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.trim_end().ends_with(&format!(
            "\nerror: kiln.toml:7:9: `target.arm.platform`: target `arm` asks for platform \
             linux/arm64, but its base image {REGISTRY_BASE} is linux/amd64\n  hint: use a \
             base image that has linux/arm64 (a multi-platform image, or one built for it), or \
             set `platform = \"linux/amd64\"`"
        )),
        "{run}"
    );
    assert!(!run.stderr.contains("arm-ran-"), "{run}");
    let inspect = Command::new("docker")
        .args(["image", "inspect", &image.0])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "no image was tagged");

    // The base's own platform builds.
    let amd64 = manifest.replace("linux/arm64", "linux/amd64");
    std::fs::write(dir.path().join("kiln.toml"), amd64).unwrap();
    let run = project::kiln(dir.path(), &["build", "arm"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("arm-ran-"), "{run}");
    assert_eq!(image.run(&["uname", "-m"]), "x86_64");
}
