//! Paths and arguments a user can get wrong or unusual, against the real engine where the
//! builder is involved: a context file name with a `\`, `src = "*"` over symlinks, a copy
//! source that exists but never reaches the builder (ignored, or through a symlink), an
//! undeclared `--set`, a manifest that is not UTF-8.

#[path = "support/project.rs"]
mod project;

use std::os::unix::fs::symlink;

use project::{Image, kiln, repo};

const BASE: &str = "kiln-base/debian-python:bookworm";

fn manifest(image: &str, copy: &str) -> String {
    format!(
        r#"version = 1
[target.app]
from  = "{BASE}"
image = "{image}"
copy  = [{copy}]
"#
    )
}

#[test]
fn a_file_name_with_a_backslash_is_copied() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("backslash");
    // TOML `"a\\b.txt"` is the file name `a\b.txt`.
    let dir = repo(&[
        (
            "kiln.toml",
            &manifest(
                &image.0,
                r#"{ src = "a\\b.txt", dest = "/one.txt" }, { src = "dir\\x/*.txt", dest = "/many/" }"#,
            ),
        ),
        ("a\\b.txt", "one\n"),
        ("dir\\x/p.txt", "p\n"),
        ("dir\\x/q.txt", "q\n"),
    ]);
    let run = kiln(dir.path(), &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(image.run(&["cat", "/one.txt"]), "one");
    assert_eq!(image.run(&["ls", "/many"]), "p.txt\nq.txt");
}

#[test]
fn a_wildcard_copies_symlinks_as_they_are() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("star");
    let dir = repo(&[
        (
            "kiln.toml",
            &manifest(&image.0, r#"{ src = "*", dest = "/all/" }"#),
        ),
        ("real.txt", "real\n"),
    ]);
    let d = dir.path();
    // An absolute symlink means something only in the image; a relative one inside it.
    symlink("/etc/hostname", d.join("abs")).unwrap();
    symlink("real.txt", d.join("rel")).unwrap();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(image.run(&["readlink", "/all/abs"]), "/etc/hostname");
    assert_eq!(image.run(&["readlink", "/all/rel"]), "real.txt");
    assert_eq!(image.run(&["cat", "/all/rel"]), "real");
}

#[test]
fn a_copy_source_the_builder_would_not_get_is_explained_before_the_build() {
    let image = Image::new("unsent");
    let cases: [(&str, &[&str]); 4] = [
        (
            "ignored.txt",
            &[
                "`target.app.copy[0].src`: `ignored.txt` is excluded from context `.` by its .dockerignore, so it is not sent",
                "hint: remove its pattern from .dockerignore, or add `!ignored.txt` after it",
            ],
        ),
        (
            "link",
            &[
                "`link` is a symlink to `sub`; the context is sent with its symlinks as they are, so `sub` is not sent with it",
                "hint: name `sub` itself",
            ],
        ),
        (
            "link/f.txt",
            &[
                "`link/f.txt` lies under `link`, a symlink to `sub`",
                "hint: name `sub/f.txt` itself",
            ],
        ),
        (
            "outside",
            &["`outside` is a symlink to `/etc/hostname`, which is outside context `.`"],
        ),
    ];
    for (src, want) in cases {
        let copy = format!(r#"{{ src = "{src}", dest = "/x/" }}"#);
        let dir = repo(&[
            ("kiln.toml", &manifest(&image.0, &copy)),
            (".dockerignore", "ignored.txt\n"),
            ("ignored.txt", "ignored\n"),
            ("sub/f.txt", "f\n"),
        ]);
        let d = dir.path();
        symlink("sub", d.join("link")).unwrap();
        symlink("/etc/hostname", d.join("outside")).unwrap();
        for command in ["check", "build"] {
            let run = kiln(d, &[command]);
            assert_eq!(run.code, 1, "{command} {src}: {run}");
            assert!(
                run.stderr.starts_with("error: kiln.toml:5:"),
                "{command} {src}: {run}"
            );
            for w in want {
                assert!(run.stderr.contains(w), "{command} {src}: want {w}\n{run}");
            }
            assert!(!run.stderr.contains("not found"), "{run}");
        }
    }
}

#[test]
fn an_undeclared_set_is_a_command_line_error() {
    let dir = repo(&[(
        "kiln.toml",
        &format!("version = 1\n[vars]\nTAG = \"dev\"\n[target.app]\nfrom = \"{BASE}\"\n"),
    )]);
    let run = kiln(dir.path(), &["check", "--set", "TGA=v2"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(
        run.stderr.trim_end(),
        "error: --set TGA: no variable `TGA` is declared under [vars] in kiln.toml\n  expected: `TAG`\n  hint: did you mean `TAG`?"
    );
}

#[test]
fn a_manifest_that_is_not_utf8_says_where() {
    let dir = repo(&[("kiln.toml", "")]);
    let text = format!("version = 1\n[target.app]\nfrom = \"{BASE}\"\nrun = [\"echo é");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"\xff\"]\n");
    std::fs::write(dir.path().join("kiln.toml"), bytes).unwrap();
    let run = kiln(dir.path(), &["check"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(
        run.stderr.trim_end(),
        "error: kiln.toml:4:15: byte 0xff is not valid UTF-8\n  expected: a UTF-8 text file (TOML is UTF-8)"
    );
}
