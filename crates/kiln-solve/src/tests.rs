//! The scheduling, naming and hint rules, without a builder.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_graph::PackagesMode;

use crate::cache::{cache_reference, cache_repository};
use crate::job::with_labels;
use crate::pool::{Export, home, next_alive, stable_slot};
use crate::stage::explain;

#[test]
fn images_go_where_the_builder_can_put_them() {
    // Docker's BuildKit stores them in the engine whatever the flags.
    for (load, push) in [(false, false), (true, false), (false, true), (true, true)] {
        assert_eq!(Export::choose(true, load, push), Export::Moby);
    }
    // A standalone buildkitd: streamed to the engine, pushed, or only in its cache.
    assert_eq!(Export::choose(false, true, false), Export::Load);
    assert_eq!(Export::choose(false, true, true), Export::Load);
    assert_eq!(Export::choose(false, false, true), Export::Push);
    assert_eq!(Export::choose(false, false, false), Export::Cache);
}

#[test]
fn a_pool_keeps_chains_together_and_spreads_the_rest_stably() {
    let text = r#"version = 1
[target.base]
from = "debian"
[target.app]
from = "target:base"
[target.tool]
from = "debian"
copy = [{ src = "/x", dest = "/x", from = "target:app" }]
[target.solo1]
from = "debian"
[target.solo2]
from = "debian"
[target.solo3]
from = "debian"
"#;
    let sources = vec![kiln_manifest::Source {
        path: PathBuf::from("kiln.toml"),
        text: text.to_string(),
    }];
    let manifest = kiln_manifest::load(&sources, &kiln_manifest::LoadOptions::default()).unwrap();
    let graph = kiln_graph::Graph::build(&manifest, PackagesMode::Pinned).unwrap();
    let selected: Vec<String> = manifest.targets.keys().cloned().collect();
    let home3 = home(&graph, &selected, 3);
    // base → app → tool (a `from` and a copy): one group, on the builder of `app` (the
    // smallest name of the group).
    assert_eq!(home3["base"], stable_slot("app", 3));
    assert_eq!(home3["app"], home3["base"]);
    assert_eq!(home3["tool"], home3["base"]);
    for solo in ["solo1", "solo2", "solo3"] {
        assert_eq!(home3[solo], stable_slot(solo, 3));
    }
    // Stable: the same answer every time, and within range.
    assert_eq!(home(&graph, &selected, 3), home3);
    assert!(home3.values().all(|&i| i < 3));
    assert!(home(&graph, &selected, 1).values().all(|&i| i == 0));
    // The hash really spreads: 20 names over 2 builders use both.
    let used: std::collections::BTreeSet<usize> =
        (0..20).map(|i| stable_slot(&format!("t{i}"), 2)).collect();
    assert_eq!(used.len(), 2);
    // A dead builder's work goes to the next live one, wrapping around.
    assert_eq!(next_alive(&[true, false, true], 1), Some(2));
    assert_eq!(next_alive(&[true, true, false], 2), Some(0));
    assert_eq!(next_alive(&[false, false], 0), None);
}

#[test]
fn cache_refs_are_the_repository_tagged_with_the_target() {
    let repo = cache_repository("127.0.0.1:5000/team/cache").unwrap();
    assert_eq!(
        cache_reference(&repo, "app").to_string(),
        "127.0.0.1:5000/team/cache:app"
    );
    assert_eq!(
        cache_reference(&repo, "-a/b").to_string(),
        "127.0.0.1:5000/team/cache:_a-b"
    );
    let long = "x".repeat(200);
    assert_eq!(cache_reference(&repo, &long).tag().map(str::len), Some(128));
    let err = cache_repository("127.0.0.1:5000/team/cache:v1").unwrap_err();
    assert!(err.contains("has a tag or digest"), "{err}");
    assert!(cache_repository("Not A Ref").is_err());
}

#[test]
fn known_symptoms_get_a_hint_and_others_stay_as_they_are() {
    let hint = explain("executor failed running [/bin/sh -c x]: network bridge not found");
    assert!(
        hint.is_some_and(|h| h.ends_with("on the target or in [defaults]")),
        "{hint:?}"
    );
    assert_eq!(explain("exit code: 3"), None);
}

#[test]
fn manifest_labels_win() {
    let mut config = kiln_compile::EffectiveConfig::default();
    config
        .labels
        .insert("kiln.target".into(), "inherited".into());
    config.labels.insert("mine".into(), "manifest".into());
    let manifest = BTreeMap::from([("mine".to_string(), "manifest".to_string())]);
    let kiln = BTreeMap::from([
        ("kiln.target".to_string(), "app".to_string()),
        ("mine".to_string(), "kiln".to_string()),
    ]);
    let out = with_labels(&config, &manifest, Some(&kiln));
    assert_eq!(out.labels["kiln.target"], "app");
    assert_eq!(out.labels["mine"], "manifest");
}

#[test]
fn pool_warnings_carry_the_builder_error_once_without_an_error_prefix() {
    use crate::pool::{failover_warning, left_out_warning};
    let builder = kiln_buildkit::Endpoint::Unix {
        path: PathBuf::from("/run/b2.sock"),
    };
    let stalled = crate::SolveError::Step(Box::new(crate::StepFailed {
        target: "app".to_string(),
        stage: "build",
        source: kiln_buildkit::Error::Stalled {
            action: "solve",
            seconds: 20,
        },
        step: Some("[1/2] RUN make".to_string()),
        output: None,
        hint: None,
    }));
    let moved = ["app".to_string(), "web".to_string()];
    assert_eq!(
        failover_warning(&builder, &stalled, &moved, "docker:///var/run/docker.sock"),
        "builder unix:///run/b2.sock stopped answering (app/build: BuildKit stopped answering \
         during solve: no reply to a keepalive ping within 20 s (the daemon, or something \
         between kiln and it, is frozen or overloaded); kiln gave up); moving app, web to \
         docker:///var/run/docker.sock"
    );
    let refused = crate::SolveError::Connect {
        source: kiln_buildkit::Error::Connect {
            endpoint: builder.to_string(),
            reason: "Connection refused".to_string(),
        },
        hint: "start it",
    };
    assert_eq!(
        left_out_warning(&builder, &refused),
        "builder unix:///run/b2.sock is left out of this build: cannot reach BuildKit at \
         unix:///run/b2.sock: Connection refused"
    );
}
