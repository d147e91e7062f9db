//! Self-test of the hermetic Python package index (tests/support/pyindex.rs): its wheels are
//! well-formed, and the host's pip resolves, installs and downloads from it.

#[path = "support/pyindex.rs"]
mod pyindex;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use pyindex::PyIndex;

#[test]
fn wheel_record_matches_its_files() {
    let wheel = pyindex::build_wheel("Kiln.Demo_lib", "2.0.1", &["six>=1.16", "idna"], None);
    assert_eq!(wheel.filename, "kiln_demo_lib-2.0.1-py3-none-any.whl");
    let entries = pyindex::read_zip(&wheel.bytes);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "kiln_demo_lib/__init__.py",
            "kiln_demo_lib-2.0.1.dist-info/METADATA",
            "kiln_demo_lib-2.0.1.dist-info/WHEEL",
            "kiln_demo_lib-2.0.1.dist-info/RECORD",
        ]
    );
    let file = |name: &str| {
        let (_, data) = entries.iter().find(|(n, _)| n == name).unwrap();
        String::from_utf8(data.clone()).unwrap()
    };
    assert_eq!(
        file("kiln_demo_lib/__init__.py"),
        "__version__ = \"2.0.1\"\n"
    );
    let metadata = file("kiln_demo_lib-2.0.1.dist-info/METADATA");
    for line in [
        "Metadata-Version: 2.1",
        "Name: Kiln.Demo_lib",
        "Version: 2.0.1",
        "Requires-Dist: six>=1.16",
        "Requires-Dist: idna",
    ] {
        assert!(metadata.lines().any(|l| l == line), "{line} in\n{metadata}");
    }
    let wheel_file = file("kiln_demo_lib-2.0.1.dist-info/WHEEL");
    assert!(
        wheel_file.contains("Root-Is-Purelib: true\n"),
        "{wheel_file}"
    );
    assert!(wheel_file.contains("Tag: py3-none-any\n"), "{wheel_file}");

    // Every file but RECORD is listed with its digest and size; RECORD with neither.
    let record = file("kiln_demo_lib-2.0.1.dist-info/RECORD");
    let rows: Vec<Vec<&str>> = record.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), entries.len(), "{record}");
    for (name, data) in &entries {
        let row = rows
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} not in RECORD:\n{record}"));
        if name.ends_with("/RECORD") {
            assert_eq!(row[1..], ["", ""], "{record}");
        } else {
            assert_eq!(
                row[1],
                format!("sha256={}", pyindex::record_digest(data)),
                "{name}"
            );
            assert_eq!(row[2], data.len().to_string(), "{name}");
        }
    }
    // urlsafe, unpadded base64 of a 32-byte digest is 43 characters.
    let digest = rows[0][1].strip_prefix("sha256=").unwrap();
    assert!(digest.len() == 43 && !digest.contains('='), "{digest}");

    // Reproducible: the same inputs give the same bytes.
    let again = pyindex::build_wheel("Kiln.Demo_lib", "2.0.1", &["six>=1.16", "idna"], None);
    assert_eq!(again.bytes, wheel.bytes);
}

#[test]
fn names_are_normalized() {
    assert_eq!(pyindex::normalize("Kiln.Demo__Lib"), "kiln-demo-lib");
    assert_eq!(pyindex::normalize("six"), "six");
    assert_eq!(pyindex::underscored("kiln-demo-lib"), "kiln_demo_lib");
}

#[test]
fn serves_the_simple_api() {
    let index = PyIndex::start();
    assert!(index.url().starts_with("http://127.0.0.1:"));
    assert!(index.url().ends_with("/simple"));
    assert_eq!(get(&index, "/simple/kiln-demo-lib/").0, 404);

    let file = index.publish_with("Kiln_Demo.Lib", "1.0.0", &[], Some(">=3.8"));
    let (status, head, body) = get(&index, "/simple/");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        body.contains("<a href=\"/simple/kiln-demo-lib/\">kiln-demo-lib</a>"),
        "{body}"
    );

    // The project page answers under any spelling of the name, with or without the slash.
    let wheel = pyindex::build_wheel("Kiln_Demo.Lib", "1.0.0", &[], Some(">=3.8"));
    let sha = pyindex::hex_sha256(&wheel.bytes);
    for path in ["/simple/kiln-demo-lib/", "/simple/Kiln_Demo.Lib"] {
        let (status, _, body) = get(&index, path);
        assert_eq!(status, 200, "{path}");
        assert!(
            body.contains(&format!(
                "<a href=\"/files/{file}#sha256={sha}\" data-requires-python=\"&gt;=3.8\">{file}</a>"
            )),
            "{body}"
        );
    }

    // Published later: visible on the next request.
    let newer = index.publish("kiln-demo-lib", "1.1.0", &[]);
    assert!(get(&index, "/simple/kiln-demo-lib/").2.contains(&newer));

    let (status, head, _) = get(&index, &format!("/files/{file}"));
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("Content-Length: {}", wheel.bytes.len())),
        "{head}"
    );
    assert_eq!(get(&index, "/files/nope-1.0-py3-none-any.whl").0, 404);
    assert_eq!(get(&index, "/elsewhere").0, 404);
    assert!(
        index
            .requests()
            .contains(&"GET /simple/kiln-demo-lib/".to_string())
    );
}

#[test]
fn pip_installs_and_downloads_from_the_index() {
    let index = PyIndex::start();
    index.publish("kiln-demo-dep", "0.3.0", &[]);
    index.publish("kiln-demo-lib", "1.0.0", &[]);
    index.publish("kiln-demo-lib", "1.1.0", &["kiln-demo-dep>=0.3"]);

    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("venv");
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 must be installed for this test");
    assert_ok(
        &out,
        "python3 -m venv (on Debian, install python3-venv and python3-pip)",
    );
    let python = venv.join("bin/python");

    // The newest version, and its dependency, from the index alone.
    let out = pip(&python, &index)
        .args(["install", "--index-url", &index.url(), "kiln-demo-lib"])
        .output()
        .unwrap();
    assert_ok(&out, "pip install kiln-demo-lib");
    let out = Command::new(&python)
        .args([
            "-c",
            "import kiln_demo_lib, kiln_demo_dep; \
             print(kiln_demo_lib.__version__, kiln_demo_dep.__version__)",
        ])
        .output()
        .unwrap();
    assert_ok(&out, "import kiln_demo_lib");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.1.0 0.3.0");

    // An older version, pinned, downloaded (pip checks the #sha256 fragment).
    let downloads = tmp.path().join("downloads");
    let out = pip(&python, &index)
        .args(["download", "--no-deps", "--index-url", &index.url(), "-d"])
        .arg(&downloads)
        .arg("kiln-demo-lib==1.0.0")
        .output()
        .unwrap();
    assert_ok(&out, "pip download kiln-demo-lib==1.0.0");
    let wheel = downloads.join("kiln_demo_lib-1.0.0-py3-none-any.whl");
    let bytes = std::fs::read(&wheel).expect("the downloaded wheel");
    assert_eq!(
        bytes,
        pyindex::build_wheel("kiln-demo-lib", "1.0.0", &[], None).bytes
    );

    // Python's own zipfile and hashlib agree with RECORD.
    let out = Command::new(&python)
        .args(["-c", CHECK_RECORD])
        .arg(&wheel)
        .output()
        .unwrap();
    assert_ok(&out, "RECORD check with zipfile");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3 files ok");

    let requests = index.requests();
    assert!(
        requests.contains(&"GET /simple/kiln-demo-dep/".to_string()),
        "{requests:?}"
    );

    // pip is the proof; uv, when the host has it, must agree (install and lock).
    if Command::new("uv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let out = uv(&index)
            .args(["pip", "install", "--python"])
            .arg(&python)
            .args(["--index-url", &index.url(), "kiln-demo-lib==1.0.0"])
            .output()
            .unwrap();
        assert_ok(&out, "uv pip install kiln-demo-lib==1.0.0");
        let out = Command::new(&python)
            .args([
                "-c",
                "import kiln_demo_lib; print(kiln_demo_lib.__version__)",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0");

        let project = tmp.path().join("project");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(
            project.join("pyproject.toml"),
            "[project]\nname = \"p\"\nversion = \"0\"\nrequires-python = \">=3.8\"\n\
             dependencies = [\"kiln-demo-lib\"]\n",
        )
        .unwrap();
        let out = uv(&index)
            .args(["lock", "--default-index", &index.url()])
            .current_dir(&project)
            .output()
            .unwrap();
        assert_ok(&out, "uv lock");
        let lock = std::fs::read_to_string(project.join("uv.lock")).unwrap();
        assert!(
            lock.contains("kiln_demo_lib-1.1.0-py3-none-any.whl"),
            "{lock}"
        );
    }
}

/// Verify every RECORD row of the wheel in argv[1] with the standard library.
const CHECK_RECORD: &str = r#"
import base64, csv, hashlib, io, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
record = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")][0]
rows = list(csv.reader(io.StringIO(z.read(record).decode())))
assert sorted(r[0] for r in rows) == sorted(z.namelist()), rows
n = 0
for path, digest, size in rows:
    if path == record:
        assert digest == "" and size == "", (path, digest, size)
        continue
    data = z.read(path)
    want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert digest == want, (path, digest, want)
    assert int(size) == len(data), (path, size)
    n += 1
print(n, "files ok")
"#;

/// `python -m pip` isolated from the host's pip configuration (PIP_* variables, pip.conf,
/// find-links directories, proxies): only the index under test is consulted.
fn pip(python: &Path, index: &PyIndex) -> Command {
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--no-input",
        "--isolated",
    ]);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("PIP_") || key.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("PIP_CONFIG_FILE", "/dev/null")
        .env("NO_PROXY", index.addr().ip().to_string());
    cmd
}

/// `uv` isolated from the host's configuration, without a cache.
fn uv(index: &PyIndex) -> Command {
    let mut cmd = Command::new("uv");
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("UV_") || key.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("UV_NO_CONFIG", "1")
        .env("UV_NO_CACHE", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("NO_PROXY", index.addr().ip().to_string());
    cmd
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw HTTP/1.1 GET: (status, head, body).
fn get(index: &PyIndex, path: &str) -> (u16, String, String) {
    let mut conn = TcpStream::connect(index.addr()).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/vnd.pypi.simple.v1+json, \
         application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01\r\n\r\n",
        index.addr()
    )
    .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}
