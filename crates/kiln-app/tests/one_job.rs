//! A target's smoke test and image are one BuildKit job on Docker's BuildKit: one session, so
//! the context is sent once. Against the real engine (`cargo xtask test` starts it).

// The workspace tests' gate: skipped without an engine, a failure with KILN_REQUIRE_ENGINE=1.
#[path = "../../../tests/support/engine.rs"]
mod engine;

use kiln_app::{BuildOptions, Progress, Settings};

const BASE: &str = "kiln-base/debian-python:bookworm";

#[test]
fn the_smoke_test_gates_the_image_inside_one_job_and_the_context_travels_once() {
    if !engine::require_engine() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let image = format!("kiln-test/one-job:{}-{nanos}", std::process::id());
    let manifest = format!(
        "version = 1\n[target.app]\nfrom = \"{BASE}\"\nimage = \"{image}\"\nnetwork = \"none\"\n\
         copy = [{{ src = \"app.py\", dest = \"/app/app.py\" }}]\n\
         [target.app.smoke-test]\ncopy = [\"tests/\"]\nrun = [\"python3 tests/smoke.py\"]\n"
    );
    std::fs::write(d.join("kiln.toml"), manifest).unwrap();
    std::fs::write(d.join("app.py"), format!("print('{image}')\n")).unwrap();
    std::fs::create_dir(d.join("tests")).unwrap();
    std::fs::write(
        d.join("tests/smoke.py"),
        "import subprocess\nassert subprocess.check_output(['python3', '/app/app.py'])\n",
    )
    .unwrap();
    let settings = Settings {
        cwd: d.to_path_buf(),
        ..Settings::default()
    };
    let mut stages = Vec::new();
    let built = kiln_app::build(&settings, &BuildOptions::default(), &mut |p| {
        if let Progress::Stage { stage, .. } = p {
            stages.push(stage);
        }
    });
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", "-f", &image])
        .output();
    let built = built.unwrap();
    assert_eq!(stages, ["resolve", "smoke-test", "image"]);
    assert!(built[0].image_id.is_some(), "{built:?}");
    // One session: app.py once (both stages read it), tests/ and tests/smoke.py. Two jobs
    // sent app.py's source again for the image.
    assert_eq!(built[0].context.entries, 3, "{:?}", built[0].context);
}
