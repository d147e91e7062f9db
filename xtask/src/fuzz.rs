//! `cargo xtask fuzz [--seconds N] [--libfuzzer]`: a short bounded fuzz run of the manifest
//! loader and the planner (`fuzz/src/lib.rs`, the bodies the cargo-fuzz targets run).
//!
//! By default it runs on stable, with no instrumentation: every seed (each kiln manifest in the
//! repository, and those written out in its tests) once, then inputs made by stacking random
//! mutations on the seeds (bit flips, token insertions, deletions, duplications, splices of
//! two seeds) until the time is up, half of it per target. A panic or an input slower than 2 s
//! fails the run; the input is written to `target/fuzz-crashes/`. `KILN_FUZZ_SEED` replays a
//! run. `--libfuzzer` runs `cargo +nightly fuzz run` (coverage-guided, needs cargo-fuzz and a
//! nightly toolchain) for the same time, with the same seeds as its corpus.

#[path = "../../fuzz/src/lib.rs"]
mod bodies;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest input made: manifests are small, and a huge one only measures the allocator.
const MAX_INPUT: usize = 64 * 1024;
/// An input slower than this is reported as a hang.
const SLOW: Duration = Duration::from_secs(2);

type Body = fn(&[u8]);
const TARGETS: [(&str, Body); 2] = [("manifest", bodies::manifest), ("plan", bodies::plan)];

/// What mutations insert: the manifest language's punctuation and keys.
const TOKENS: &[&str] = &[
    "[target.x]\n",
    "[target.y]\nfrom = \"target:x\"\n",
    "from = \"target:x\"\n",
    "from = \"debian:bookworm\"\n",
    "${V}",
    "$${V}",
    "${",
    "[vars]\nV = \"1\"\n",
    "V = { default = \"a\", env = \"E\" }\n",
    "[profiles.p.image-overrides]\n",
    "\"re:^(.*)$\" = \"$1\"\n",
    "[profiles.p.vars]\nV = \"2\"\n",
    "copy = [{ src = \"*\", dest = \"/\" }]\n",
    "copy = [{ from = \"target:x\", src = \"/a\", dest = \"b\" }]\n",
    "run = [\"x\"]\n",
    "[groups]\ndefault = [\"x\"]\n",
    "packages = { manager = \"uv\", files = [\"pyproject.toml\"], lock = [\"uv.lock\"] }\n",
    "packages = { manager = \"custom\", refresh = \"r\", install = \"i\" }\n",
    "[target.x.smoke-test]\nrun = [\"x\"]\ncopy = [\"t\"]\n",
    "[target.x.config]\nworkdir = \"/app\"\nuser = \"1:1\"\nports = [\"80\"]\n",
    "env = { A = \"${A}\" }\n",
    "build-env = { B = \"$B\" }\n",
    "platform = \"linux/arm64/v8\"\n",
    "network = \"host\"\n",
    "ca-certificates = \"host\"\n",
    "image = \"a:b\"\n",
    "artifacts = [{ src = \"a.tar\", extract-to = \"/x\" }]\n",
    "context = \"..\"\n",
    "version = 1\n",
    "\"\"\"",
    "'''",
    "[[",
    "]]",
    "{}",
    "[]",
    " = ",
    "\n",
    "\t",
    "\\u0000",
    "é",
    "\u{1F600}",
    "#=== \n",
];

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut libfuzzer = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s| *s > 0)
                    .ok_or("--seconds takes a number of seconds")?;
            }
            "--libfuzzer" => libfuzzer = true,
            other => return Err(format!("fuzz: unknown argument `{other}`")),
        }
    }
    let seeds = bodies::seeds(root);
    if seeds.is_empty() {
        return Err("fuzz: no manifests found for the seed corpus".to_string());
    }
    eprintln!(
        "fuzz: {} seeds (every manifest in the repository and in its tests)",
        seeds.len()
    );
    let per_target = Duration::from_secs(seconds) / TARGETS.len() as u32;
    if libfuzzer {
        return run_libfuzzer(root, &seeds, per_target);
    }
    let seed = std::env::var("KILN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("fuzz: seed {seed} (KILN_FUZZ_SEED={seed} replays this run)");
    let inputs: Vec<&[u8]> = seeds.iter().map(|(_, bytes)| bytes.as_slice()).collect();
    // The bodies panic only on a bug; keep the default hook's backtrace noise out of the loop.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = TARGETS
        .iter()
        .try_for_each(|(name, body)| fuzz_one(root, name, *body, &inputs, per_target, seed));
    std::panic::set_hook(hook);
    result
}

fn fuzz_one(
    root: &Path,
    name: &str,
    body: Body,
    seeds: &[&[u8]],
    budget: Duration,
    seed: u64,
) -> Result<(), String> {
    let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let mut runs = 0u64;
    let mut slowest = Duration::ZERO;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut next = 0usize;
    loop {
        let input: Vec<u8> = if next < seeds.len() {
            next += 1;
            seeds[next - 1].to_vec()
        } else {
            if start.elapsed() >= budget {
                break;
            }
            let base = if !pool.is_empty() && rng.below(4) == 0 {
                pool[rng.below(pool.len())].clone()
            } else {
                seeds[rng.below(seeds.len())].to_vec()
            };
            let mutant = mutate(&mut rng, base, seeds);
            if pool.len() < 256 {
                pool.push(mutant.clone());
            } else if rng.below(8) == 0 {
                let slot = rng.below(pool.len());
                pool[slot] = mutant.clone();
            }
            mutant
        };
        let began = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| body(&input)));
        let took = began.elapsed();
        runs += 1;
        slowest = slowest.max(took);
        let problem = match outcome {
            Err(payload) => Some(format!("panics: {}", panic_message(&payload))),
            Ok(()) if took > SLOW => Some(format!("takes {took:?}")),
            Ok(()) => None,
        };
        if let Some(problem) = problem {
            let dir = root.join("target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{seed}-{runs}"));
            let _ = std::fs::write(&file, &input);
            return Err(format!(
                "fuzz {name}: the input in {} {problem}",
                file.display()
            ));
        }
    }
    eprintln!(
        "fuzz {name}: {runs} inputs in {:.1} s ({:.0}/s), no panic, slowest {slowest:?}",
        start.elapsed().as_secs_f64(),
        runs as f64 / start.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// One to eight mutations stacked on `input`; most results that are not UTF-8 are repaired
/// (the loader only sees text, so raw bytes mostly test `from_utf8`).
fn mutate(rng: &mut Rng, mut input: Vec<u8>, seeds: &[&[u8]]) -> Vec<u8> {
    for _ in 0..1 + rng.below(8) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = b"[]\"'={}$\n.,:/\\*#-0 \xff"[rng.below(20)];
            }
            2 | 3 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                input.drain(at..end);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(64)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, copy);
            }
            6 => {
                let other = seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let at = rng.below(other.len());
                    let end = (at + 1 + rng.below(256)).min(other.len());
                    let to = rng.below(len + 1);
                    input.splice(to..to, other[at..end].iter().copied());
                }
            }
            _ if len > 0 => input.truncate(rng.below(len)),
            _ => input.extend_from_slice(TOKENS[0].as_bytes()),
        }
    }
    input.truncate(MAX_INPUT);
    if std::str::from_utf8(&input).is_err() && rng.below(8) != 0 {
        input = String::from_utf8_lossy(&input).into_owned().into_bytes();
    }
    input
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// xorshift64*: small, fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        if self.0 == 0 {
            self.0 = 0x2545_f491_4f6c_dd1d;
        }
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `cargo +nightly fuzz run TARGET` for each target, `budget` each, with the seeds written out
/// as its corpus (its own corpus directory keeps what it finds).
fn run_libfuzzer(root: &Path, seeds: &[(String, Vec<u8>)], budget: Duration) -> Result<(), String> {
    let dir = root.join("target/fuzz-seeds");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("fuzz: {}: {e}", dir.display()))?;
    for (i, (_, bytes)) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:04}")), bytes)
            .map_err(|e| format!("fuzz: {}: {e}", dir.display()))?;
    }
    let seeds_dir = dir
        .to_str()
        .ok_or("fuzz: the seed directory is not UTF-8")?;
    let max_time = format!("-max_total_time={}", budget.as_secs().max(1));
    for (name, _) in TARGETS {
        let corpus = root.join("fuzz/corpus").join(name);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("fuzz: {}: {e}", corpus.display()))?;
        let corpus = corpus
            .to_str()
            .ok_or("fuzz: the corpus path is not UTF-8")?;
        crate::run(
            "cargo",
            &[
                "+nightly", "fuzz", "run", name, corpus, seeds_dir, "--", &max_time,
            ],
        )?;
    }
    Ok(())
}
