//! Graph tests over manifests written as TOML.

use super::*;
use kiln_manifest::{LoadOptions, Source, load};

fn manifest(text: &str) -> Manifest {
    let source = Source {
        path: "kiln.toml".into(),
        text: format!("version = 1\n{text}"),
    };
    load(&[source], &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn cycle_paths(result: Result<Graph, Vec<GraphError>>) -> Vec<Vec<String>> {
    result
        .expect_err("expected cycle errors")
        .into_iter()
        .map(|e| match e {
            GraphError::Cycle { path, .. } => path,
            other => panic!("unexpected error {other}"),
        })
        .collect()
}

#[test]
fn stage_chain_follows_the_seed_pattern() {
    let m = manifest(
        r#"
[target.app]
from = "python:3.11"
packages = { manager = "uv" }
smoke-test = { run = ["true"] }
"#,
    );
    let g = Graph::build(&m, PackagesMode::Pinned).unwrap();
    let stages: Vec<String> = g.stages_of("app").iter().map(|s| s.to_string()).collect();
    assert_eq!(
        stages,
        [
            "app/pre",
            "app/packages-pinned",
            "app/post",
            "app/smoke-test",
            "app/image"
        ]
    );
    let image = StageId::new("app", StageKind::Image);
    let inputs: Vec<String> = g
        .stage_inputs(&image)
        .iter()
        .map(|(s, k)| format!("{s} {k:?}"))
        .collect();
    assert_eq!(inputs, ["app/post Chain", "app/smoke-test Gate"]);

    let g = Graph::build(&m, PackagesMode::Refresh).unwrap();
    assert!(g.contains(&StageId::new("app", StageKind::PackagesRefresh)));
    assert!(!g.contains(&StageId::new("app", StageKind::PackagesPinned)));
}

#[test]
fn minimal_target_has_pre_post_image() {
    let m = manifest("[target.a]\nfrom = \"debian:bookworm\"\n");
    let g = Graph::build(&m, PackagesMode::Pinned).unwrap();
    let stages: Vec<String> = g.stages_of("a").iter().map(|s| s.to_string()).collect();
    assert_eq!(stages, ["a/pre", "a/post", "a/image"]);
}

#[test]
fn target_edges_and_topological_order() {
    let m = manifest(
        r#"
[target.web]
from = "target:base"
copy = [{ from = "target:assets", src = "/out", dest = "/srv" }]
[target.base]
from = "debian:bookworm"
[target.assets]
from = "target:base"
[target.zzz]
from = "debian:bookworm"
"#,
    );
    let g = Graph::build(&m, PackagesMode::Pinned).unwrap();
    assert_eq!(g.topo_targets(), ["base", "assets", "web", "zzz"]);
    assert_eq!(g.depends_on("web"), ["assets", "base"]);
    let inputs: Vec<String> = g
        .stage_inputs(&StageId::new("web", StageKind::Post))
        .iter()
        .map(|(s, k)| format!("{s} {k:?}"))
        .collect();
    assert_eq!(inputs, ["web/pre Chain", "assets/image CopyFrom"]);
    let inputs: Vec<String> = g
        .stage_inputs(&StageId::new("web", StageKind::Pre))
        .iter()
        .map(|(s, k)| format!("{s} {k:?}"))
        .collect();
    assert_eq!(inputs, ["base/image From"]);
}

#[test]
fn cycle_names_every_target_in_order() {
    let m = manifest(
        r#"
[target.c]
from = "target:a"
[target.a]
from = "target:b"
[target.b]
from = "target:c"
[target.ok]
from = "debian:bookworm"
"#,
    );
    assert_eq!(
        cycle_paths(Graph::build(&m, PackagesMode::Pinned)),
        [["a", "b", "c", "a"]]
    );
}

#[test]
fn copy_cycles_are_reported() {
    let m = manifest(
        r#"
[target.x]
from = "debian:bookworm"
copy = [{ from = "target:y", src = "/a", dest = "/a" }]
[target.y]
from = "target:x"
"#,
    );
    let err = Graph::build(&m, PackagesMode::Pinned).expect_err("cycles");
    let text: Vec<String> = err.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].ends_with("dependency cycle: x → y → x"),
        "{}",
        text[0]
    );
    assert!(text[0].starts_with("kiln.toml:"), "{}", text[0]);
}

#[test]
fn selection_by_name_group_and_default() {
    let m = manifest(
        r#"
[target.base]
from = "debian:bookworm"
[target.app]
from = "target:base"
[target.tool]
from = "debian:bookworm"
[group.apps]
targets = ["app"]
"#,
    );
    let g = Graph::build(&m, PackagesMode::Pinned).unwrap();
    assert_eq!(g.select(&m, &["app".into()]).unwrap(), ["base", "app"]);
    assert_eq!(g.select(&m, &["apps".into()]).unwrap(), ["base", "app"]);
    assert_eq!(g.select(&m, &[]).unwrap(), ["base", "app", "tool"]);
    // What was asked for, without the dependencies selection adds.
    let named = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        Graph::named(&m, &names)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(named(&["app"]), ["app"]);
    assert_eq!(named(&["apps", "tool"]), ["app", "tool"]);
    assert_eq!(named(&[]), ["app", "base", "tool"]);
    let err = g.select(&m, &["aps".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no target or group named `aps`\n  hint: did you mean `app`?"
    );
}

#[test]
fn default_group_is_used_when_nothing_is_selected() {
    let m = manifest(
        r#"
[target.a]
from = "debian:bookworm"
[target.b]
from = "debian:bookworm"
[group.default]
targets = ["b"]
"#,
    );
    let g = Graph::build(&m, PackagesMode::Pinned).unwrap();
    assert_eq!(g.select(&m, &[]).unwrap(), ["b"]);
}

#[test]
fn order_is_deterministic_for_a_wide_tree() {
    let mut text = String::from("[target.root]\nfrom = \"debian:bookworm\"\n");
    for i in (0..200).rev() {
        text.push_str(&format!(
            "[target.t{i:03}]\nfrom = \"target:{}\"\n",
            if i == 0 {
                "root".to_string()
            } else {
                format!("t{:03}", i / 2)
            }
        ));
    }
    let m = manifest(&text);
    let a = Graph::build(&m, PackagesMode::Pinned).unwrap();
    let b = Graph::build(&m, PackagesMode::Pinned).unwrap();
    assert_eq!(a.topo_stages(), b.topo_stages());
    let order = a.topo_targets();
    let pos = |n: &str| order.iter().position(|t| *t == n).unwrap();
    for i in 1..200 {
        assert!(pos(&format!("t{:03}", i / 2)) < pos(&format!("t{i:03}")));
    }
}
