//! `tern-sim`: run scenario files and report, one line per run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tern_sim::scenario::Scenario;
use tern_sim::world::{self, Options};

#[derive(Parser)]
#[command(about = "Deterministic simulation of the Tern MQTT broker")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios (files, or directories searched for *.yaml).
    Run {
        paths: Vec<PathBuf>,
        /// Run with this seed instead of the scenario's own.
        #[arg(long)]
        seed: Option<u64>,
        /// Also run this many extra seeds with random link latency.
        #[arg(long, default_value_t = 0)]
        seeds: u64,
        /// Write the trace of the (last) run to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for entry in entries {
            collect(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") || !path.exists() {
        out.push(path.to_path_buf());
    }
}

// Wall time is reported to the user, not fed to the simulation.
#[allow(clippy::disallowed_methods)]
fn main() -> ExitCode {
    let Command::Run {
        paths,
        seed,
        seeds,
        trace,
    } = Args::parse().command;
    let mut files = Vec::new();
    for path in &paths {
        collect(path, &mut files);
    }
    let mut failed = 0;
    let mut ran = 0;
    for file in &files {
        let scenario = match Scenario::load(file) {
            Ok(s) => s,
            Err(error) => {
                eprintln!("FAIL {}: {error}", file.display());
                failed += 1;
                continue;
            }
        };
        let base = seed.unwrap_or(scenario.seed);
        for (i, run_seed) in std::iter::once(base)
            .chain((1..=seeds).map(|k| base.wrapping_add(k)))
            .enumerate()
        {
            let options = Options {
                seed: run_seed,
                max_latency: (i > 0).then_some(Duration::from_millis(20)),
            };
            let wall = std::time::Instant::now();
            let outcome = world::run(&scenario, &options);
            ran += 1;
            let status = if outcome.failure.is_some() {
                "FAIL"
            } else {
                "ok  "
            };
            println!(
                "{status} {} seed={run_seed}{} simulated={:.1}s wall={:.2}s",
                file.display(),
                if i > 0 { " (random latency)" } else { "" },
                outcome.simulated.as_secs_f64(),
                wall.elapsed().as_secs_f64()
            );
            if let Some(path) = &trace {
                let _ = std::fs::write(path, outcome.trace.render());
            }
            if let Some(failure) = outcome.failure {
                failed += 1;
                println!("  checker: {}\n  {}", failure.checker, failure.message);
                if let Some(at) = failure.at_entry {
                    println!(
                        "  trace around the failure:\n{}",
                        outcome.trace.around(at, 12)
                    );
                }
                let latency = if i > 0 {
                    " --seeds 0 # with random latency: run the same --seeds as above"
                } else {
                    ""
                };
                println!(
                    "  replay: cargo run -p tern-sim -- run {} --seed {run_seed}{latency}",
                    file.display()
                );
            }
        }
    }
    println!("{} passed, {failed} failed", ran - failed.min(ran));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
