//! The in-client frontend against the real engine (Docker Engine's embedded BuildKit, started
//! by `cargo xtask test`, with the base image it imports): resolve a base image's config,
//! solve a stage, read files out of its result, and fail a job from the frontend.

// The workspace tests' gate: skipped without an engine, a failure with KILN_REQUIRE_ENGINE=1.
#[path = "../../../tests/support/engine.rs"]
mod engine;

use kiln_buildkit::{Client, Error, ResolveMode, Returned, SolveRequest};
use kiln_llb::{Exec, NetMode, Platform, State};

const BASE: &str = "kiln-base/debian-python:bookworm";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client() -> Client {
    Client::connect_docker(
        std::path::Path::new("/var/run/docker.sock"),
        kiln_buildkit::DEFAULT_KEEPALIVE,
    )
    .await
    .expect("the engine is up (cargo xtask test starts it)")
}

#[test]
fn resolves_solves_and_reads_files_out_of_a_result() {
    if !engine::require_engine() {
        return;
    }
    // Unique per run, so the step really runs and the file is this run's.
    let token = format!("{}-{:?}", std::process::id(), std::time::Instant::now());
    runtime().block_on(async {
        let client = client().await;
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let platform = Platform::linux_amd64();
        let step_token = token.clone();
        let (found, response) = client
            .build(SolveRequest::default(), events, |gateway| async move {
                let caps = gateway.caps().await?;
                let image = gateway
                    .resolve_image_config(BASE, &platform, ResolveMode::Default)
                    .await?;
                let step = Exec::shell(&format!(
                    "mkdir -p /out && printf 'lock %s' '{step_token}' > /out/uv.lock && touch /out/other.txt"
                ))
                .network(NetMode::None);
                let state = State::image(BASE, &platform).run(step).root();
                let result = gateway.solve(&kiln_llb::marshal(&state).unwrap()).await?;
                let data = gateway.read_file(&result, "/out/uv.lock").await?;
                let listing = gateway.read_dir(&result, "/out", "*.lock").await?;
                let stat = gateway.stat_file(&result, "/out/uv.lock").await?;
                let missing = gateway.read_file(&result, "/out/nope").await;
                Ok((
                    (caps, image, data, listing, stat, missing),
                    Returned::default(),
                ))
            })
            .await
            .expect("the job succeeds");
        let (caps, image, data, listing, stat, missing) = found;
        assert!(caps.iter().any(|c| c == "readfile"), "{caps:?}");
        let config = String::from_utf8_lossy(&image.config);
        assert!(config.contains("LANG=C.UTF-8"), "{config}");
        assert_eq!(String::from_utf8_lossy(&data), format!("lock {token}"));
        let names: Vec<&str> = listing.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(names, ["uv.lock"]);
        assert_eq!(stat.size, data.len() as i64);
        assert!(
            matches!(missing, Err(Error::Failed { .. })),
            "{missing:?}"
        );
        assert!(response.is_empty(), "no exporter, no response: {response:?}");
    });
}

#[test]
fn a_frontend_error_fails_the_job_with_its_message() {
    if !engine::require_engine() {
        return;
    }
    runtime().block_on(async {
        let client = client().await;
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let started = std::time::Instant::now();
        let outcome: Result<((), _), Error> = client
            .build(SolveRequest::default(), events, |_gateway| async {
                Err(Error::Failed {
                    action: "check the lock",
                    message: "uv.lock does not match pyproject.toml".to_string(),
                })
            })
            .await;
        let error = outcome.expect_err("the job fails");
        assert!(
            error.to_string().contains("uv.lock does not match"),
            "{error}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    });
}

/// A solve the daemon refuses before it creates the job (an exporter it does not have): the
/// status stream of that job never gets a job, and the daemon keeps it open for 3 s before it
/// says "no such job" — the same shape as buildkitd v0.24 rejecting an entitlement after it
/// created the job, whose status stream never ends at all. kiln stops following the status a
/// grace period after the solve returns, so the error comes at once.
#[test]
fn a_refused_solve_ends_promptly_with_the_daemons_error() {
    if !engine::require_engine() {
        return;
    }
    runtime().block_on(async {
        let client = client().await;
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let platform = Platform::linux_amd64();
        let state = State::image(BASE, &platform)
            .run(Exec::shell("true").network(NetMode::None))
            .root();
        let request = SolveRequest {
            definition: kiln_llb::marshal(&state).unwrap(),
            exporter: Some(("kiln-no-such-exporter".to_string(), Default::default())),
            ..SolveRequest::default()
        };
        let started = std::time::Instant::now();
        let error = client
            .solve(request, events)
            .await
            .expect_err("the daemon has no such exporter");
        let took = started.elapsed();
        assert!(
            error.to_string().contains("kiln-no-such-exporter"),
            "{error}"
        );
        // Without the grace period kiln waited the daemon's 3 s for the status stream.
        assert!(
            took < std::time::Duration::from_millis(2500),
            "took {took:?}"
        );
    });
}

/// The first error of a job wins: the daemon fails the job (here at once, for an exporter it
/// does not have), and the frontend's bridge calls then fail with follow-up errors ("no such
/// job"); the job's own error is the one reported, promptly.
#[test]
fn the_jobs_own_error_wins_over_the_frontends_follow_up_errors() {
    if !engine::require_engine() {
        return;
    }
    runtime().block_on(async {
        let client = client().await;
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let platform = Platform::linux_amd64();
        let request = SolveRequest {
            exporter: Some(("kiln-no-such-exporter".to_string(), Default::default())),
            ..SolveRequest::default()
        };
        let started = std::time::Instant::now();
        let outcome: Result<((), _), Error> = client
            .build(request, events, |gateway| async move {
                let state = State::image(BASE, &platform)
                    .run(Exec::shell("true").network(NetMode::None))
                    .root();
                let result = gateway.solve(&kiln_llb::marshal(&state).unwrap()).await?;
                Ok((
                    (),
                    Returned {
                        result: Some(result),
                        ..Returned::default()
                    },
                ))
            })
            .await;
        let took = started.elapsed();
        let error = outcome.expect_err("the daemon has no such exporter");
        let text = error.to_string();
        assert!(text.contains("kiln-no-such-exporter"), "{text}");
        assert!(!text.contains("no such job"), "{text}");
        assert!(
            took < std::time::Duration::from_millis(2500),
            "took {took:?}"
        );
    });
}
