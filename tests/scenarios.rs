//! Replays every YAML file under `scenarios/` as its own test, so `cargo test -- retain` filters
//! and a new file needs no code change. Each scenario runs with its own seed, then on extra
//! seeds with random link latency (`TERN_SIM_SEEDS`, default 8), and twice with its own seed
//! to check that the run is deterministic (same trace digest). What the clients observed on the
//! scenario's own seed is kept as a snapshot in `scenarios/snapshots/` (insta), so a change of
//! behaviour shows up in review: `INSTA_UPDATE=always cargo test --test scenarios`, then read
//! the diff.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use tern_sim::scenario::Scenario;
use tern_sim::scenario::RANDOM_LATENCY_MAX;
use tern_sim::world::{self, Options};

fn scenario_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("scenarios/ exists")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            scenario_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn replay(name: &str, path: &Path) -> Result<(), Failed> {
    let scenario = Scenario::load(path).map_err(|e| e.to_string())?;
    let extra: u64 = std::env::var("TERN_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let runs = std::iter::once((scenario.seed, None))
        .chain((1..=extra).map(|k| (scenario.seed.wrapping_add(k), Some(RANDOM_LATENCY_MAX))));
    for (seed, max_latency) in runs {
        let options = Options {
            seed,
            max_latency,
            ..Options::default()
        };
        let outcome = world::run(&scenario, &options);
        if let Some(failure) = outcome.failure {
            let around = failure
                .at_entry
                .map(|i| outcome.trace.around(i, 12))
                .unwrap_or_default();
            let latency = if max_latency.is_some() {
                " --random-latency"
            } else {
                ""
            };
            return Err(format!(
                "{} (seed {seed}{latency}): {}\n{around}\nreplay: cargo run -p tern-sim -- run {} --seed {seed}{latency}",
                failure.checker,
                failure.message,
                path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display(),
            )
            .into());
        }
    }
    let observed = world::run(
        &scenario,
        &Options {
            seed: scenario.seed,
            ..Options::default()
        },
    );
    let snapshot = name.replace('/', "__");
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/snapshots");
    let checked = std::panic::catch_unwind(|| {
        insta::with_settings!({ snapshot_path => &snapshots, prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(snapshot.as_str(), observed.trace.behaviour());
        });
    });
    if checked.is_err() {
        return Err(format!(
            "{name}: observed behaviour differs from scenarios/snapshots/{snapshot}.snap"
        )
        .into());
    }
    // The same seed gives the same run, bit for bit, with and without random latency.
    for max_latency in [None, Some(RANDOM_LATENCY_MAX)] {
        let options = Options {
            seed: scenario.seed,
            max_latency,
            ..Options::default()
        };
        let (a, b) = (
            world::run(&scenario, &options),
            world::run(&scenario, &options),
        );
        if a.trace.digest() != b.trace.digest() {
            let (a, b) = (a.trace.render(), b.trace.render());
            return Err(format!(
                "two runs with seed {} ({max_latency:?}) differ:\n{a}\n---\n{b}",
                scenario.seed
            )
            .into());
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files = Vec::new();
    scenario_files(&root, &mut files);
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(&root)
                .unwrap()
                .with_extension("")
                .display()
                .to_string();
            Trial::test(name.clone(), move || replay(&name, &path))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
