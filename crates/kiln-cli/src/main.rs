//! The `kiln` binary: parses arguments with clap and calls `kiln-app`. No behaviour lives here
//! beyond mapping results to output and exit codes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_app::{AppError, PackagesMode, PlanFormat, Settings};

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
    /// buildkitd socket), tcp://host:port. Default: BUILDKIT_HOST, else the Docker Engine at
    /// DOCKER_HOST or /var/run/docker.sock.
    #[arg(long, global = true, value_name = "URL")]
    builder: Option<String>,
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
        /// Export the filesystem to DIR (DIR/TARGET with several targets) instead of loading
        /// an image; works on any builder.
        #[arg(long, value_name = "DIR", conflicts_with = "push")]
        output: Option<PathBuf>,
        /// Push each image to its registry and record the pushed digest in kiln.lock.
        #[arg(long)]
        push: bool,
        /// Load each image into the Docker Engine (DOCKER_HOST, else /var/run/docker.sock): a
        /// standalone buildkitd streams it there (without --load or --push its images stay in
        /// its cache); Docker's own BuildKit stores it there anyway.
        #[arg(long, conflicts_with = "output")]
        load: bool,
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
    Engine {
        #[command(subcommand)]
        action: EngineAction,
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
enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
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

fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got `{s}`")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings {
        files: cli.files,
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        profile: cli.profile,
        set: cli.set,
        env: std::env::vars().collect(),
        builder: kiln_app::BuilderOptions {
            url: cli.builder,
            tls_ca: cli.tls_ca,
            tls_cert: cli.tls_cert,
            tls_key: cli.tls_key,
            tls_server_name: cli.tls_server_name,
        },
    };
    let progress = cli.progress;
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
            output,
            push,
            load,
        } => with_progress(progress, |show| {
            let options = kiln_app::BuildOptions {
                targets,
                force,
                push,
                load,
                output: output.map(|dir| settings.cwd.join(dir)),
                ..kiln_app::BuildOptions::default()
            };
            kiln_app::build_images(&settings, &options, show)
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
        Command::Engine { action } => match action {
            EngineAction::Status => kiln_app::engine_status(&settings),
            EngineAction::Up => kiln_app::engine_up(&settings),
            EngineAction::Down => kiln_app::engine_down(&settings),
        }
        .map(|s| Output::Text(s + "\n")),
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
    match result {
        Ok(output) => write_output(output),
        Err(err) => fail(&err),
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
        ProgressArg::Auto if std::io::stderr().is_terminal() => kiln_app::ProgressFormat::Tty,
        ProgressArg::Tty => kiln_app::ProgressFormat::Tty,
        ProgressArg::Auto | ProgressArg::Plain => kiln_app::ProgressFormat::Plain,
        ProgressArg::Json => kiln_app::ProgressFormat::Json,
    };
    let mut renderer = kiln_app::Renderer::new(format);
    let result = work(&mut |p: kiln_app::Progress| {
        let mut err = std::io::stderr().lock();
        for line in renderer.render(&p) {
            let _ = writeln!(err, "{line}");
        }
    });
    renderer.finish();
    result.map(Output::Text)
}

fn write_output(output: Output) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let bytes = match &output {
        Output::Text(s) => s.as_bytes(),
        Output::Bytes(b) => {
            if stdout.is_terminal() {
                return fail(&AppError::Usage(
                    "refusing to write binary LLB to a terminal\n  hint: redirect it to a file or pipe it, e.g. `kiln plan --llb app | buildctl build`".into(),
                ));
            }
            b.as_slice()
        }
    };
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write output: {e}");
            ExitCode::from(2)
        }
    }
}

fn fail(err: &AppError) -> ExitCode {
    eprintln!("{err}");
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
}
