//! The `kiln` binary: parses arguments with clap and calls `kiln-app`. No behaviour lives here
//! beyond mapping results to output and exit codes, and rendering errors (`report`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_app::{AppError, PackagesMode, PlanFormat, Settings};

mod progress;
mod report;

use progress::{ProgressFormat, Renderer};

/// kiln: build container images from a TOML manifest on BuildKit, with a package-lock
/// lifecycle (refresh, pinned build, smoke test) written back to git.
#[derive(Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
struct Cli {
    /// Manifest file to read (repeatable). Default: `kiln.toml` in the current directory,
    /// else every `manifests/*.toml` at the git root.
    #[arg(short = 'f', long = "file", global = true, value_name = "MANIFEST")]
    files: Vec<PathBuf>,
    /// Profile to apply (image overrides, vars, labels).
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Set a manifest variable; wins over the environment and defaults (repeatable).
    #[arg(long = "set", global = true, value_name = "K=V", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// How to show build progress: `auto` is `tty` on a terminal, else `plain`.
    #[arg(long, global = true, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// BuildKit to use: docker:// (Docker Engine's embedded BuildKit), unix:///path (a
    /// buildkitd socket), tcp://host:port. Repeat it for a pool `kiln build` schedules
    /// across. Default: BUILDKIT_HOST, else `builders` in $KILN_CONFIG or
    /// ~/.config/kiln/config.toml, else the Docker Engine at DOCKER_HOST or /var/run/docker.sock.
    #[arg(long, global = true, value_name = "URL")]
    builder: Vec<String>,
    /// CA certificate to verify a tcp:// builder with (or KILN_TLS_CA).
    #[arg(long, global = true, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS with a tcp:// builder (or KILN_TLS_CERT).
    #[arg(long, global = true, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS with a tcp:// builder (or KILN_TLS_KEY).
    #[arg(long, global = true, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name the builder's certificate must carry (default: the host of the URL).
    #[arg(long, global = true, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Let the manifests read local files outside the repository that holds them (contexts,
    /// CA bundles, secret files), below PATH (repeatable).
    #[arg(long = "allow", global = true, value_name = "fs.read=PATH", value_parser = parse_allow)]
    allow: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the manifests; exit non-zero naming every problem.
    Check {
        /// The CI gate: also fail, naming each problem, when a base image is not pinned in
        /// kiln.lock, a target's inputs differ from what kiln.lock recorded, or a lock file
        /// does not pin what its package files declare.
        #[arg(long)]
        locked: bool,
    },
    /// Resolve base images to registry digests and record them in kiln.lock; builds use them.
    Pin {
        /// Targets or groups (default: the `default` group, else every target).
        targets: Vec<String>,
        /// Resolve again what kiln.lock already pins (take a moved tag).
        #[arg(long)]
        update: bool,
    },
    /// Show targets, their stages and LLB digests without building.
    Plan {
        /// Targets or groups (default: the `default` group, else every target).
        targets: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Package stage to plan.
        #[arg(long, value_enum, default_value_t = Mode::Pinned)]
        mode: Mode,
        /// Write the serialised LLB Definition of STAGE (`TARGET/STAGE` or `TARGET`) to
        /// stdout, as `buildctl build` reads it.
        #[arg(long, value_name = "STAGE", conflicts_with_all = ["targets", "format"])]
        llb: Option<String>,
    },
    /// Build targets on BuildKit: smoke test, then the image, loaded into the Docker Engine's
    /// image store under the target's `image` name.
    Build {
        /// Targets or groups (default: the `default` group, else every target).
        targets: Vec<String>,
        /// Solve even targets that kiln.lock says are up to date.
        #[arg(long)]
        force: bool,
        /// Solve the selected targets with every step run again, not taken from the build
        /// cache (implies --force).
        #[arg(long)]
        no_cache: bool,
        /// Export the named targets' filesystems to DIR (DIR/TARGET when several are named;
        /// dependencies are built, not exported) instead of loading an image; any builder.
        #[arg(long, value_name = "DIR", conflicts_with = "push")]
        output: Option<PathBuf>,
        /// Push each image to its registry and record the pushed digest in kiln.lock.
        #[arg(long)]
        push: bool,
        /// Also label the images with the git commit and its time (a new image per commit).
        #[arg(long)]
        stamp: bool,
        /// Load each image into the Docker Engine (DOCKER_HOST, else /var/run/docker.sock): a
        /// standalone buildkitd streams it there (without --load or --push its images stay in
        /// its cache); Docker's own BuildKit stores it there anyway.
        #[arg(long, conflicts_with = "output")]
        load: bool,
        /// Save each image as a `docker load`-able tarball: FILE for one target, FILE/TARGET.tar
        /// for several (from the Docker Engine's image store; with a buildkitd, add --load).
        #[arg(long, value_name = "FILE", conflicts_with = "output")]
        output_image: Option<PathBuf>,
        /// Registry repository for the build cache (wins over `[defaults] cache`): each
        /// target's cache is exported to REF:TARGET and imported from there on every build.
        #[arg(long, value_name = "REF", value_parser = kiln_app::cache_repository)]
        cache: Option<kiln_app::Reference>,
        /// Write the result as JSON to FILE (per target: status, image, image id, pushed
        /// digest, builder, steps solved and cached, duration), also when the build fails.
        #[arg(long, value_name = "FILE")]
        metadata_file: Option<PathBuf>,
        /// What stdout says: a line per target, or the same JSON as --metadata-file.
        #[arg(long, value_enum, default_value_t = BuildFormat::Text)]
        format: BuildFormat,
    },
    /// Install from the committed locks and run the smoke tests; no image is produced.
    SmokeTest {
        /// Targets or groups (default: the `default` group, else every target).
        targets: Vec<String>,
    },
    /// Re-resolve packages inside the build, smoke-test the result and, only if it passes,
    /// replace the lock files in the tree (atomically) and say what changed.
    Refresh {
        /// Targets or groups with packages (default: the `default` group, else every target).
        targets: Vec<String>,
        /// Show what would change without writing anything.
        #[arg(long, conflicts_with = "commit")]
        dry_run: bool,
        /// Commit the changed lock files (and nothing else) with the change list as message.
        #[arg(long)]
        commit: bool,
    },
    /// Which engine kiln uses; start or stop one that kiln owns.
    /// Which manifest, target, commit, base and package versions built an image.
    Trace {
        /// An image name, `repo@sha256:…`, or an image id / pushed digest.
        image: String,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Which targets (and, with --history, which recorded images) a change or bad version reaches.
    Affected {
        /// NAME, NAME==VERSION, or NAME and a specifier (`NAME>=1.0,<1.2`).
        #[arg(long, value_name = "SPEC", group = "what")]
        package: Option<String>,
        /// Targets built on this image (or copying from it).
        #[arg(long, value_name = "REF", group = "what")]
        base: Option<String>,
        /// Targets whose manifest or stages read this file (`--file` is the manifest option).
        #[arg(long = "path", value_name = "PATH", group = "what")]
        file: Option<PathBuf>,
        /// Targets whose files, manifest or base pins changed since this git ref.
        #[arg(long, value_name = "GIT_REF", group = "what")]
        since: Option<String>,
        /// Also every image recorded in kiln.lock on this branch whose locks pinned it.
        #[arg(long, requires = "package")]
        history: bool,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// A CycloneDX 1.5 SBOM of a target, from its lock files (exact, not scanned).
    Sbom { target: String },
    Engine {
        #[command(subcommand)]
        action: EngineAction,
    },
    /// Print a shell completion script, e.g. `kiln completion bash > ~/.local/share/bash-completion/completions/kiln`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum EngineAction {
    /// Say which engine would be used, its version and who started it.
    Status,
    /// Start a Docker Engine (dockerd) when none is reachable; kiln owns it.
    Up,
    /// Stop the engine kiln started (never one it did not start).
    Down,
}

#[derive(Clone, Copy, ValueEnum)]
enum BuildFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressArg {
    Auto,
    Tty,
    Plain,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Pinned,
    Refresh,
}

fn parse_allow(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("fs.read=") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!(
            "expected fs.read=PATH (the only entitlement kiln grants), got `{s}`"
        )),
    }
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got `{s}`")),
    }
}

/// The process environment; a variable whose name or value is not UTF-8 cannot be a manifest
/// variable or a setting, so it is left out (and said, since a user may wonder).
fn environment() -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let mut env = std::collections::BTreeMap::new();
    let mut skipped = Vec::new();
    for (key, value) in std::env::vars_os() {
        match (key.into_string(), value.into_string()) {
            (Ok(k), Ok(v)) => {
                env.insert(k, v);
            }
            (Ok(k), Err(_)) => skipped.push(k),
            (Err(k), _) => skipped.push(k.to_string_lossy().into_owned()),
        }
    }
    (env, skipped)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(cli.progress, ProgressArg::Json);
    let (env, skipped) = environment();
    let settings = Settings {
        files: cli.files,
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        profile: cli.profile,
        set: cli.set,
        env,
        builder: kiln_app::BuilderOptions {
            url: cli.builder.first().cloned(),
            more: cli.builder.iter().skip(1).cloned().collect(),
            tls_ca: cli.tls_ca,
            tls_cert: cli.tls_cert,
            tls_key: cli.tls_key,
            tls_server_name: cli.tls_server_name,
        },
        warnings: kiln_app::Warnings::default(),
        allow_read: cli.allow,
        resolved: kiln_app::ResolvedOnce::default(),
    };
    let progress = cli.progress;
    if !skipped.is_empty() {
        let message = format!(
            "ignoring environment variables that are not UTF-8: {}",
            skipped.join(", ")
        );
        if json {
            eprintln!("{}", progress::json_warning(&message));
        } else {
            eprintln!("warning: {message}");
        }
    }
    // What stdout says even when the command fails (`build --format json`).
    let mut stdout_on_error: Option<String> = None;
    let result = match cli.command {
        Command::Check { locked } => {
            kiln_app::check(&settings, locked).map(|s| Output::Text(s + "\n"))
        }
        Command::Pin { targets, update } => {
            kiln_app::pin(&settings, &kiln_app::PinOptions { targets, update }).map(Output::Text)
        }
        Command::Build {
            targets,
            force,
            no_cache,
            output,
            push,
            stamp,
            load,
            output_image,
            cache,
            metadata_file,
            format,
        } => with_progress(progress, |show| {
            let options = kiln_app::BuildOptions {
                targets,
                force,
                no_cache,
                push,
                stamp,
                load,
                cache,
                output: output.map(|dir| settings.cwd.join(dir)),
                output_image: output_image.map(|file| settings.cwd.join(file)),
                metadata_file,
                ..kiln_app::BuildOptions::default()
            };
            let (result, metadata) = kiln_app::build_images_report(&settings, &options, show);
            match format {
                BuildFormat::Text => result,
                // The JSON goes to stdout also when the build fails (the error to stderr).
                BuildFormat::Json => {
                    stdout_on_error = Some(metadata.to_json());
                    result.map(|_| metadata.to_json())
                }
            }
        }),
        Command::SmokeTest { targets } => with_progress(progress, |show| {
            let options = kiln_app::BuildOptions {
                targets,
                goal: kiln_app::Goal::SmokeTest,
                ..kiln_app::BuildOptions::default()
            };
            kiln_app::build_images(&settings, &options, show)
        }),
        Command::Refresh {
            targets,
            dry_run,
            commit,
        } => with_progress(progress, |show| {
            let options = kiln_app::RefreshOptions {
                targets,
                dry_run,
                commit,
            };
            kiln_app::refresh(&settings, &options, show)
        }),
        Command::Trace { image, format } => kiln_app::trace(
            &settings,
            &kiln_app::TraceOptions {
                image,
                json: format == ReportFormat::Json,
            },
        )
        .map(Output::Text),
        Command::Affected {
            package,
            base,
            file,
            since,
            history,
            format,
        } => kiln_app::affected(
            &settings,
            &kiln_app::AffectedOptions {
                package,
                base,
                file,
                since,
                history,
                json: format == ReportFormat::Json,
            },
        )
        .map(Output::Text),
        Command::Sbom { target } => kiln_app::sbom(&settings, &target).map(Output::Text),
        Command::Engine { action } => match action {
            EngineAction::Status => kiln_app::engine_status(&settings),
            EngineAction::Up => kiln_app::engine_up(&settings, &mut |line| eprintln!("{line}")),
            EngineAction::Down => kiln_app::engine_down(&settings),
        }
        .map(|s| Output::Text(s + "\n")),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "kiln",
                &mut script,
            );
            Ok(Output::Text(String::from_utf8_lossy(&script).into_owned()))
        }
        Command::Plan {
            targets,
            format,
            mode,
            llb,
        } => {
            let mode = match mode {
                Mode::Pinned => PackagesMode::Pinned,
                Mode::Refresh => PackagesMode::Refresh,
            };
            match llb {
                Some(stage) => kiln_app::plan_llb(&settings, &stage, mode).map(Output::Bytes),
                None => {
                    let format = match format {
                        Format::Text => PlanFormat::Text,
                        Format::Json => PlanFormat::Json,
                        Format::Dot => PlanFormat::Dot,
                        Format::Mermaid => PlanFormat::Mermaid,
                    };
                    kiln_app::plan(&settings, &targets, format, mode).map(Output::Text)
                }
            }
        }
    };
    // What the command found that is not an error (e.g. an override rule that matches nothing).
    for warning in settings.warnings.take() {
        if json {
            eprintln!("{}", progress::json_warning(&warning));
        } else {
            eprintln!("warning: {warning}");
        }
    }
    match result {
        Ok(output) => write_output(output, json),
        Err(err) => {
            if let Some(text) = stdout_on_error {
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
            }
            fail(&err, json)
        }
    }
}

enum Output {
    Text(String),
    Bytes(Vec<u8>),
}

/// Run `work` with progress rendered on stderr as `progress` asks; its text goes to stdout.
fn with_progress(
    progress: ProgressArg,
    work: impl FnOnce(&mut dyn FnMut(kiln_app::Progress)) -> Result<String, AppError>,
) -> Result<Output, AppError> {
    let format = match progress {
        ProgressArg::Auto if std::io::stderr().is_terminal() => ProgressFormat::Tty,
        ProgressArg::Tty => ProgressFormat::Tty,
        ProgressArg::Auto | ProgressArg::Plain => ProgressFormat::Plain,
        ProgressArg::Json => ProgressFormat::Json,
    };
    let mut renderer = Renderer::new(format);
    let result = work(&mut |p: kiln_app::Progress| {
        // Render first, then take stderr's lock only to write: in tty mode indicatif draws from
        // its own ticker thread, which holds its state while it waits for stderr, so holding
        // stderr while calling into indicatif deadlocks.
        let lines = renderer.render(&p);
        if !lines.is_empty() {
            let mut err = std::io::stderr().lock();
            for line in lines {
                let _ = writeln!(err, "{line}");
            }
        }
    });
    renderer.finish();
    result.map(Output::Text)
}

fn write_output(output: Output, json: bool) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let bytes = match &output {
        Output::Text(s) => s.as_bytes(),
        Output::Bytes(b) => {
            if stdout.is_terminal() {
                return fail(&AppError::Usage(
                    "refusing to write binary LLB to a terminal\n  hint: redirect it to a file or pipe it, e.g. `kiln plan --llb app | buildctl build`".into(),
                ), json);
            }
            b.as_slice()
        }
    };
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("error: cannot write output: {e}");
            if json {
                eprintln!("{}", progress::json_error(&message, 2));
            } else {
                eprintln!("{message}");
            }
            ExitCode::from(2)
        }
    }
}

/// Say what failed (as a JSON event with `--progress json`) and exit with its code.
fn fail(err: &AppError, json: bool) -> ExitCode {
    let code = err.exit_code();
    if json {
        eprintln!("{}", progress::json_error(&report::render(err), code));
    } else {
        eprintln!("{}", report::render(err));
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
