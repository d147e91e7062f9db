//! Provenance on the real engine and real git: the labels kiln puts on every image (stable
//! while nothing about the target changes), `kiln trace` from an image back to its commit and
//! package versions, `kiln affected` from a package version to every target and every recorded
//! image it reached, and `kiln sbom` from the lock files.

#[path = "support/project.rs"]
mod project;

use std::collections::BTreeMap;
use std::path::Path;

use project::{Image, git, kiln, repo};

const BASE: &str = "kiln-base/debian-python:bookworm";

/// A manifest with target `app` (a `custom` manager whose install copies its requirements.txt
/// lock into the image; no network), and `tool`, built on `app`.
fn manifest(app: &Image, tool: &Image, extra_app: &str) -> String {
    format!(
        r#"version = 1
[target.app]
from  = "{BASE}"
image = "{app}"
network = "none"
{extra_app}
[target.app.packages]
manager = "custom"
files = ["requirements.in"]
lock = ["requirements.txt"]
refresh = "true"
install = "mkdir -p site && cp requirements.txt site/installed.txt"

[target.tool]
from  = "target:app"
image = "{tool}"
network = "none"
run = ["echo tool > /tool.txt"]
"#,
        app = app.0,
        tool = tool.0
    )
}

fn labels(image: &str) -> BTreeMap<String, String> {
    let out = std::process::Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn image_id(image: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex_encode(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
    )
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `key` in kiln.lock's `[[target]]` `name`.
fn recorded(dir: &Path, name: &str, key: &str) -> Option<String> {
    let text = project::read(dir, "kiln.lock");
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc.get("target")?
        .as_array()?
        .iter()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

fn ok(run: &project::Run) {
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn images_carry_content_derived_labels_that_stay_put_until_the_target_changes() {
    if !project::require_engine() {
        return;
    }
    let app = Image::new("prov-labels-app");
    let tool = Image::new("prov-labels-tool");
    let dir = repo(&[
        (
            "kiln.toml",
            &manifest(
                &app,
                &tool,
                "[target.app.config]\nlabels = { \"org.opencontainers.image.title\" = \"Mine\" }\n",
            ),
        ),
        ("requirements.in", "acme-widgets\n"),
        ("requirements.txt", "acme-widgets==1.0.0\n"),
    ]);
    let d = dir.path();
    git(
        d,
        &[
            "remote",
            "add",
            "origin",
            "https://bot:s3cret@git.example/org/p.git",
        ],
    );
    ok(&kiln(d, &["build", "tool"]));

    let l = labels(&app.0);
    assert_eq!(l["kiln.target"], "app");
    assert_eq!(l["kiln.manifest"], "kiln.toml");
    assert_eq!(l["kiln.kiln-lock"], "kiln.lock");
    assert_eq!(
        Some(l["kiln.inputs"].clone()),
        recorded(d, "app", "inputs"),
        "the label carries the inputs hash kiln.lock records"
    );
    assert_eq!(
        l["kiln.lock-file.requirements.txt"],
        sha256_file(&d.join("requirements.txt"))
    );
    assert_eq!(l["kiln.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        l["org.opencontainers.image.base.name"],
        format!("docker.io/{BASE}")
    );
    assert_eq!(l["kiln.base.image-id"], image_id(BASE));
    assert_eq!(
        l["org.opencontainers.image.source"], "https://git.example/org/p.git",
        "the remote, without its credentials"
    );
    assert_eq!(
        l["org.opencontainers.image.title"], "Mine",
        "the manifest's label wins"
    );
    assert!(!l.contains_key("org.opencontainers.image.revision"));
    let t = labels(&tool.0);
    assert_eq!(t["kiln.target"], "tool");
    assert_eq!(t["kiln.base"], "target:app");
    assert_eq!(t["org.opencontainers.image.title"], "tool");
    assert_eq!(
        Some(t["kiln.inputs"].clone()),
        recorded(d, "tool", "inputs")
    );

    // Up to date after a commit of nothing the targets read; --force rebuilds the same ids.
    let (app_id, tool_id) = (image_id(&app.0), image_id(&tool.0));
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "kiln.lock"]);
    std::fs::write(d.join("NOTES.md"), "unrelated\n").unwrap();
    git(d, &["add", "NOTES.md"]);
    git(d, &["commit", "-q", "-m", "unrelated"]);
    let run = kiln(d, &["build", "tool"]);
    ok(&run);
    assert_eq!(run.stdout.matches("up to date").count(), 2, "{run}");
    let run = kiln(d, &["build", "tool", "--force"]);
    ok(&run);
    assert_eq!(image_id(&app.0), app_id, "{run}");
    assert_eq!(image_id(&tool.0), tool_id, "{run}");

    // A new lock changes the label and the image.
    std::fs::write(d.join("requirements.txt"), "acme-widgets==1.1.0\n").unwrap();
    ok(&kiln(d, &["build", "app"]));
    let l = labels(&app.0);
    assert_eq!(
        l["kiln.lock-file.requirements.txt"],
        sha256_file(&d.join("requirements.txt"))
    );
    assert_ne!(image_id(&app.0), app_id);

    // --stamp: the commit and its time.
    let run = kiln(d, &["build", "app", "--stamp"]);
    ok(&run);
    let l = labels(&app.0);
    let head = git(d, &["log", "-1", "--format=%H %ct"]);
    let (commit, _) = head.trim().split_once(' ').unwrap();
    assert_eq!(l["org.opencontainers.image.revision"], commit);
    let created = std::process::Command::new("git")
        .args([
            "log",
            "-1",
            "--format=%cd",
            "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
        ])
        .env("TZ", "UTC")
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(
        l["org.opencontainers.image.created"],
        String::from_utf8_lossy(&created.stdout).trim()
    );
}

fn commit_all(d: &Path, message: &str) -> String {
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", message]);
    git(d, &["rev-parse", "HEAD"]).trim().to_string()
}

fn json(run: &project::Run) -> serde_json::Value {
    ok(run);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
}

/// A name in the local registry (docker-registry on 127.0.0.1:5000), unique to this run.
fn remote(name: &str) -> Image {
    Image(format!("127.0.0.1:5000/{}", Image::new(name).0))
}

#[test]
fn trace_names_the_commit_and_package_versions_of_an_image_built_two_commits_ago() {
    if !project::require_engine() {
        return;
    }
    let app = remote("prov-trace-app");
    let tool = Image::new("prov-trace-tool");
    let dir = repo(&[
        ("kiln.toml", &manifest(&app, &tool, "")),
        ("requirements.in", "acme-widgets\n"),
        ("requirements.txt", "acme-widgets==1.0.0\nsix==1.16.0\n"),
    ]);
    let d = dir.path();
    let run = kiln(d, &["build", "app", "--push"]);
    ok(&run);
    let old_id = image_id(&app.0);
    let old_pushed = recorded(d, "app", "digest").expect("a pushed digest");
    let built_at = commit_all(d, "build 1.0.0");

    std::fs::write(
        d.join("requirements.txt"),
        "acme-widgets==1.1.0\nsix==1.16.0\n",
    )
    .unwrap();
    ok(&kiln(d, &["build", "app"]));
    let new_at = commit_all(d, "build 1.1.0");
    std::fs::write(d.join("NOTES.md"), "later\n").unwrap();
    commit_all(d, "unrelated");

    // By image id (the engine still has it, untagged).
    let t = json(&kiln(d, &["trace", &old_id, "--format", "json"]));
    assert_eq!(t["target"], "app");
    assert_eq!(t["manifest"], "kiln.toml");
    assert_eq!(t["commit"]["id"], built_at.as_str(), "{t:#}");
    assert_eq!(t["packages"]["requirements.txt"]["acme-widgets"], "1.0.0");
    assert_eq!(t["packages"]["requirements.txt"]["six"], "1.16.0");
    assert_eq!(t["base"], format!("docker.io/{BASE}"));
    assert_eq!(t["base_image_id"], image_id(BASE));
    assert_eq!(t["same_as_working_tree"], false);
    assert!(
        t["changed"]
            .to_string()
            .contains("lock file `requirements.txt`"),
        "{t:#}"
    );
    assert_eq!(t["unverified_locks"], serde_json::json!([]));

    // From the registry, by the digest that push recorded.
    let repo_name = app.0.rsplit_once(':').unwrap().0;
    let by_digest = format!("{repo_name}@{old_pushed}");
    let t = json(&kiln(d, &["trace", &by_digest, "--format", "json"]));
    assert_eq!(t["read_from"], "registry", "{t:#}");
    assert_eq!(t["image_id"], old_id.as_str());
    assert_eq!(t["commit"]["id"], built_at.as_str());
    assert_eq!(t["packages"]["requirements.txt"]["acme-widgets"], "1.0.0");

    // The current image, in text.
    let run = kiln(d, &["trace", &app.0]);
    ok(&run);
    assert!(
        run.stdout
            .contains(&format!("commit: {new_at} build 1.1.0")),
        "{run}"
    );
    assert!(run.stdout.contains("  acme-widgets 1.1.0"), "{run}");
    assert!(
        run.stdout.contains("working tree: builds the same inputs"),
        "{run}"
    );

    // An image kiln never recorded.
    let run = kiln(d, &["trace", BASE]);
    ok(&run);
    assert!(run.stdout.contains("no kiln labels"), "{run}");
    assert!(
        run.stdout.contains("no commit of the current branch"),
        "{run}"
    );
}

fn digests(history: &serde_json::Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["target"].as_str().unwrap().to_string(),
                h["digest"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn affected_finds_the_targets_and_every_pushed_image_whose_locks_pinned_the_bad_version() {
    if !project::require_engine() {
        return;
    }
    let app = remote("prov-affected-app");
    let tool = remote("prov-affected-tool");
    let dir = repo(&[
        ("kiln.toml", &manifest(&app, &tool, "")),
        ("requirements.in", "acme-widgets\n"),
        ("requirements.txt", "acme-widgets==1.0.0\n"),
    ]);
    let d = dir.path();
    // Four commits, each built and pushed: 1.0.0, 1.1.0 (bad), 1.1.0 with six, 1.2.0.
    let mut pushed = Vec::new();
    for (i, lock) in [
        "acme-widgets==1.0.0\n",
        "acme-widgets==1.1.0\n",
        "acme-widgets==1.1.0\nsix==1.16.0\n",
        "acme-widgets==1.2.0\n",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(d.join("requirements.txt"), lock).unwrap();
        let run = kiln(d, &["build", "tool", "--push"]);
        ok(&run);
        let app_digest = recorded(d, "app", "digest").expect("app pushed");
        let tool_digest = recorded(d, "tool", "digest").expect("tool pushed");
        commit_all(d, &format!("build {i}"));
        pushed.push((app_digest, tool_digest));
    }
    // An unrelated commit on top.
    std::fs::write(d.join("NOTES.md"), "later\n").unwrap();
    commit_all(d, "unrelated");

    let report = json(&kiln(
        d,
        &[
            "affected",
            "--package",
            "acme-widgets==1.1.0",
            "--history",
            "--format",
            "json",
        ],
    ));
    assert_eq!(
        report["targets"],
        serde_json::json!([]),
        "the tree pins 1.2.0 now"
    );
    let mut expected = vec![
        ("app".to_string(), pushed[1].0.clone()),
        ("app".to_string(), pushed[2].0.clone()),
        ("tool".to_string(), pushed[1].1.clone()),
        ("tool".to_string(), pushed[2].1.clone()),
    ];
    expected.sort();
    assert_eq!(digests(&report["history"]), expected, "{report:#}");

    // A specifier; and the same question in text.
    let report = json(&kiln(
        d,
        &[
            "affected",
            "--package",
            "Acme_Widgets>=1.0,<1.1",
            "--history",
            "--format",
            "json",
        ],
    ));
    let mut expected = vec![
        ("app".to_string(), pushed[0].0.clone()),
        ("tool".to_string(), pushed[0].1.clone()),
    ];
    expected.sort();
    assert_eq!(digests(&report["history"]), expected, "{report:#}");

    // The current tree: app pins it, tool builds on app.
    let run = kiln(d, &["affected", "--package", "acme-widgets==1.2.0"]);
    ok(&run);
    assert!(
        run.stdout.contains("app (")
            && run
                .stdout
                .contains("requirements.txt pins acme-widgets 1.2.0"),
        "{run}"
    );
    assert!(
        run.stdout.contains("tool (") && run.stdout.contains("it builds on target `app`"),
        "{run}"
    );
    let report = json(&kiln(
        d,
        &["affected", "--package", "six", "--format", "json"],
    ));
    assert_eq!(report["targets"], serde_json::json!([]));

    // A base, a file, a git ref.
    let report = json(&kiln(d, &["affected", "--base", BASE, "--format", "json"]));
    let names: Vec<&str> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "tool"]);
    assert_eq!(report["targets"][0]["direct"], true);
    assert_eq!(report["targets"][1]["direct"], false);
    let report = json(&kiln(
        d,
        &["affected", "--path", "requirements.in", "--format", "json"],
    ));
    assert_eq!(report["targets"][0]["target"], "app");
    let report = json(&kiln(
        d,
        &["affected", "--path", "NOTES.md", "--format", "json"],
    ));
    assert_eq!(report["targets"], serde_json::json!([]));
    let report = json(&kiln(
        d,
        &["affected", "--since", "HEAD", "--format", "json"],
    ));
    assert_eq!(report["targets"], serde_json::json!([]), "nothing changed");
    let report = json(&kiln(
        d,
        &["affected", "--since", "HEAD~1", "--format", "json"],
    ));
    assert_eq!(
        report["targets"],
        serde_json::json!([]),
        "NOTES.md is read by no target"
    );
    let report = json(&kiln(
        d,
        &["affected", "--since", "HEAD~2", "--format", "json"],
    ));
    assert_eq!(report["targets"].as_array().unwrap().len(), 2, "{report:#}");

    // `kiln plan --format json` lists the pins.
    let plan = json(&kiln(d, &["plan", "--format", "json"]));
    let app_doc = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "app")
        .unwrap();
    assert_eq!(
        app_doc["packages"]["requirements.txt"]["acme-widgets"],
        "1.2.0"
    );

    // Bad input.
    let run = kiln(d, &["affected", "--package", "acme==", "--format", "json"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("`==` is not a version clause"), "{run}");
    let run = kiln(d, &["affected"]);
    assert_eq!(run.code, 2, "{run}");
    let run = kiln(d, &["affected", "--since", "no-such-ref"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--since `no-such-ref`"), "{run}");
    // A lock file kiln cannot read is an error, never "not affected".
    std::fs::write(d.join("requirements.txt"), "acme-widgets>=1\n").unwrap();
    let run = kiln(d, &["affected", "--package", "acme-widgets==1.1.0"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("requirements.txt")
            && run.stderr.contains("not pinned as name==version"),
        "{run}"
    );
}

#[path = "support/pyindex.rs"]
mod pyindex;

#[test]
fn the_sbom_lists_exactly_what_a_real_refresh_locked_with_its_hashes() {
    if !project::require_engine() {
        return;
    }
    let index = pyindex::PyIndex::start();
    index.publish("kiln-demo-lib", "1.0.0", &["kiln-demo-dep>=2"]);
    let dep_wheel = index.publish("kiln-demo-dep", "2.1.0", &[]);
    let image = Image::new("prov-sbom");
    let manifest = format!(
        r#"version = 1
[target.app]
from  = "{BASE}"
image = "{image}"
network = "host"
ca-certificates = "host"
[target.app.packages]
manager = "pip"
[target.app.build-env]
PIP_EXTRA_INDEX_URL = "{url}"
"#,
        image = image.0,
        url = index.url()
    );
    let dir = repo(&[
        ("kiln.toml", &manifest),
        ("requirements.in", "kiln-demo-lib\n"),
    ]);
    let d = dir.path();
    ok(&kiln(d, &["refresh"]));
    let lock = project::read(d, "requirements.txt");
    assert!(lock.contains("kiln-demo-dep==2.1.0"), "{lock}");

    let run = kiln(d, &["sbom", "app"]);
    ok(&run);
    let bom: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(bom["metadata"]["component"]["type"], "container");
    let libraries: Vec<&serde_json::Value> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "library")
        .collect();
    let mut listed: Vec<(String, String, String)> = libraries
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["version"].as_str().unwrap().to_string(),
                c["purl"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            (
                "kiln-demo-dep".to_string(),
                "2.1.0".to_string(),
                "pkg:pypi/kiln-demo-dep@2.1.0".to_string()
            ),
            (
                "kiln-demo-lib".to_string(),
                "1.0.0".to_string(),
                "pkg:pypi/kiln-demo-lib@1.0.0".to_string()
            ),
        ],
        "the lock's pins, no more, no less"
    );
    // The hash the lock records is the wheel's, as the index served it.
    let dep = libraries
        .iter()
        .find(|c| c["name"] == "kiln-demo-dep")
        .unwrap();
    let served = served_sha256(index.addr(), &dep_wheel);
    assert_eq!(
        dep["hashes"],
        serde_json::json!([{"alg": "SHA-256", "content": served}]),
        "{lock}"
    );
    assert!(lock.contains(&format!("--hash=sha256:{served}")), "{lock}");
    assert_eq!(
        bom["components"].as_array().unwrap().last().unwrap()["name"],
        format!("docker.io/{BASE}")
    );
    // Deterministic.
    assert_eq!(kiln(d, &["sbom", "app"]).stdout, run.stdout);
    let run = kiln(d, &["sbom", "nope"]);
    assert_eq!(run.code, 2, "{run}");
}

/// The sha256 of `/files/NAME` as the index serves it (plain HTTP/1.0).
fn served_sha256(addr: std::net::SocketAddr, name: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /files/{name} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header")
        + 4;
    pyindex::hex_sha256(&response[start..])
}

/// `GET http://127.0.0.1:5000PATH` with `accept`; the body.
fn registry_get(path: &str, accept: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("127.0.0.1:5000").expect("the registry is up");
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:5000\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header")
        + 4;
    let head = String::from_utf8_lossy(&response[..start]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "GET {path}: {head}"
    );
    response[start..].to_vec()
}

#[test]
fn push_attaches_the_sbom_and_slsa_provenance_as_referrers_that_read_back() {
    if !project::require_engine() {
        return;
    }
    let app = remote("prov-attest-app");
    let tool = Image::new("prov-attest-tool");
    // An image of this run only (the registry keeps earlier runs' referrers of their digests).
    let unique = format!("acme-widgets\n# {}\n", app.0);
    let dir = repo(&[
        ("kiln.toml", &manifest(&app, &tool, "")),
        ("requirements.in", &unique),
        ("requirements.txt", "acme-widgets==1.0.0\n"),
    ]);
    let d = dir.path();
    let run = kiln(d, &["build", "app", "--push"]);
    ok(&run);
    assert!(run.stdout.contains("app: attached sbom"), "{run}");
    let digest = recorded(d, "app", "digest").unwrap();
    let repo_path = app
        .0
        .strip_prefix("127.0.0.1:5000/")
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();

    // docker-registry 2.8 has no referrers API: the referrers tag schema.
    let index: serde_json::Value = serde_json::from_slice(&registry_get(
        &format!("/v2/{repo_path}/manifests/{}", digest.replace(':', "-")),
        "application/vnd.oci.image.index.v1+json",
    ))
    .unwrap();
    let entries = index["manifests"].as_array().unwrap();
    let find = |t: &str| {
        entries
            .iter()
            .find(|e| e["artifactType"] == t)
            .unwrap_or_else(|| panic!("no {t} referrer: {index:#}"))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let read = |manifest_digest: &str| -> serde_json::Value {
        let m: serde_json::Value = serde_json::from_slice(&registry_get(
            &format!("/v2/{repo_path}/manifests/{manifest_digest}"),
            "application/vnd.oci.image.manifest.v1+json",
        ))
        .unwrap();
        assert_eq!(m["subject"]["digest"], digest.as_str(), "{m:#}");
        let layer = m["layers"][0]["digest"].as_str().unwrap();
        serde_json::from_slice(&registry_get(
            &format!("/v2/{repo_path}/blobs/{layer}"),
            "*/*",
        ))
        .unwrap()
    };
    let sbom = read(&find("application/vnd.cyclonedx+json"));
    let local: serde_json::Value = serde_json::from_str(&kiln(d, &["sbom", "app"]).stdout).unwrap();
    assert_eq!(sbom, local, "the attached SBOM is `kiln sbom`'s");
    let provenance = read(&find("application/vnd.in-toto+json"));
    assert_eq!(provenance["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        provenance["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(
        provenance["subject"][0]["digest"]["sha256"],
        digest.strip_prefix("sha256:").unwrap()
    );
    let head = git(d, &["rev-parse", "HEAD"]);
    let deps = provenance["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
    assert!(deps.contains(head.trim()), "{provenance:#}");
    assert!(
        deps.contains(&sha256_file(&d.join("requirements.txt"))[7..]),
        "{provenance:#}"
    );
    assert_eq!(
        provenance["predicate"]["buildDefinition"]["externalParameters"]["target"],
        "app"
    );

    // `kiln trace` lists them; a second push adds no duplicate.
    let t = json(&kiln(
        d,
        &[
            "trace",
            &format!("127.0.0.1:5000/{repo_path}@{digest}"),
            "--format",
            "json",
        ],
    ));
    assert_eq!(t["referrers"].as_array().unwrap().len(), 2, "{t:#}");
    ok(&kiln(d, &["build", "app", "--push"]));
    let t = json(&kiln(
        d,
        &[
            "trace",
            &format!("127.0.0.1:5000/{repo_path}@{digest}"),
            "--format",
            "json",
        ],
    ));
    assert_eq!(t["referrers"].as_array().unwrap().len(), 2, "{t:#}");
}

/// `--output-image`: the image as a `docker load`-able archive, written whole or not at all,
/// its sha256 in the target's last JSON event; after removing the image from the engine, the
/// archive loads and runs.
#[test]
fn output_image_writes_an_archive_that_docker_load_takes_and_runs() {
    if !project::require_engine() {
        return;
    }
    let app = Image::new("archive");
    let manifest = format!(
        "version = 1\n[target.app]\nfrom = \"{BASE}\"\nimage = \"{}\"\nnetwork = \"none\"\nrun = [\"echo archived-{} > /marker\"]\n[target.app.config]\ncmd = [\"cat\", \"/marker\"]\n",
        app.0,
        std::process::id()
    );
    let dir = repo(&[("kiln.toml", &manifest)]);
    let archive = dir.path().join("out/app.tar");
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "build",
            "--output-image",
            "out/app.tar",
            "--progress",
            "json",
        ])
        .current_dir(dir.path())
        .env_remove("DOCKER_HOST")
        .env_remove("BUILDKIT_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&json.stderr);
    assert!(json.status.success(), "{stderr}");
    assert!(archive.is_file(), "{stderr}");
    let event: serde_json::Value = stderr
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "target")
        .expect("a target event");
    assert_eq!(
        event["archive"]["digest"].as_str(),
        Some(sha256_file(&archive).as_str()),
        "{event}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["app.tar"], "no temp file is left");

    // Gone from the engine, back from the archive.
    let id = image_id(&app.0);
    let rm = std::process::Command::new("docker")
        .args(["image", "rm", "-f", &app.0, &id])
        .output()
        .unwrap();
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert_eq!(image_id(&app.0), "", "the image is gone before the load");
    let load = std::process::Command::new("docker")
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(image_id(&app.0), id, "the same image comes back");
    assert_eq!(app.run(&[]), format!("archived-{}", std::process::id()));

    // Up to date: the archive is written all the same.
    std::fs::remove_file(&archive).unwrap();
    let run = kiln(dir.path(), &["build", "--output-image", "out/app.tar"]);
    ok(&run);
    assert!(run.stdout.contains("up to date"), "{run}");
    assert!(archive.is_file(), "{run}");

    // A destination that cannot be written: an error naming it, no half-made file.
    std::fs::write(dir.path().join("blocker"), "a file, not a directory").unwrap();
    let run = kiln(
        dir.path(),
        &["build", "--force", "--output-image", "blocker/app.tar"],
    );
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("blocker"), "{run}");
}
