//! Stage identities and the chain of stages a target generates.

use kiln_manifest::Target;
use serde::Serialize;

/// Which package stage a build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackagesMode {
    /// Install strictly from the committed lock (`kiln build`).
    #[default]
    Pinned,
    /// Resolve and upgrade, producing a new lock (`kiln refresh`).
    Refresh,
}

/// The kinds of stage, in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    /// `from` plus `run`.
    Pre,
    /// Package files copied in and resolved/upgraded.
    PackagesRefresh,
    /// Package files and lock copied in and installed strictly.
    PackagesPinned,
    /// `copy` and `artifacts`.
    Post,
    /// Post plus test files and test commands.
    SmokeTest,
    /// Post plus the image config; what gets exported.
    Image,
}

impl StageKind {
    /// Every kind, in chain order.
    pub const ALL: [StageKind; 6] = [
        StageKind::Pre,
        StageKind::PackagesRefresh,
        StageKind::PackagesPinned,
        StageKind::Post,
        StageKind::SmokeTest,
        StageKind::Image,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Pre => "pre",
            StageKind::PackagesRefresh => "packages-refresh",
            StageKind::PackagesPinned => "packages-pinned",
            StageKind::Post => "post",
            StageKind::SmokeTest => "smoke-test",
            StageKind::Image => "image",
        }
    }

    /// Parse a stage name as printed by [`StageKind::as_str`].
    pub fn parse(s: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One stage of one target, printed as `target/stage`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StageId {
    pub target: String,
    pub kind: StageKind,
}

impl StageId {
    pub fn new(target: &str, kind: StageKind) -> StageId {
        StageId {
            target: target.to_string(),
            kind,
        }
    }
}

/// The stages `target` generates, in chain order.
pub fn chain(target: &Target, mode: PackagesMode) -> Vec<StageKind> {
    let mut stages = vec![StageKind::Pre];
    if target.packages.is_some() {
        stages.push(match mode {
            PackagesMode::Pinned => StageKind::PackagesPinned,
            PackagesMode::Refresh => StageKind::PackagesRefresh,
        });
    }
    stages.push(StageKind::Post);
    if target.smoke_test.is_some() {
        stages.push(StageKind::SmokeTest);
    }
    stages.push(StageKind::Image);
    stages
}
