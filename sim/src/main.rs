//! `tern-sim`: run scenario files and report, one line per run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tern_sim::scenario::Scenario;
use tern_sim::world::{self, Options, RANDOM_LATENCY_MAX};

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
        /// Also run this many extra seeds (seed+1, seed+2, ...) with random link latency.
        #[arg(long, default_value_t = 0)]
        seeds: u64,
        /// Run the first seed with random link latency too (to replay an extra-seed run).
        #[arg(long)]
        random_latency: bool,
        /// Write the trace of the last run to this file.
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

// Wall time is reported to the user, never fed to the simulation.
#[allow(clippy::disallowed_methods)]
fn main() -> ExitCode {
    let Command::Run {
        paths,
        seed,
        seeds,
        random_latency,
        trace,
    } = Args::parse().command;
    let mut files = Vec::new();
    for path in &paths {
        collect(path, &mut files);
    }
    let total = files.len() as u64 * (1 + seeds);
    let (mut ran, mut failed) = (0u64, 0u64);
    let started = std::time::Instant::now();
    for file in &files {
        let scenario = match Scenario::load(file) {
            Ok(s) => s,
            Err(error) => {
                println!("FAIL {error}");
                failed += 1;
                continue;
            }
        };
        let base = seed.unwrap_or(scenario.seed);
        for k in 0..=seeds {
            let run_seed = base.wrapping_add(k);
            let random = k > 0 || random_latency;
            let options = Options {
                seed: run_seed,
                max_latency: random.then_some(RANDOM_LATENCY_MAX),
            };
            let wall = std::time::Instant::now();
            let outcome = world::run(&scenario, &options);
            ran += 1;
            let wall = wall.elapsed().as_secs_f64();
            let simulated = outcome.simulated.as_secs_f64();
            let status = if outcome.failure.is_some() {
                "FAIL"
            } else {
                "ok  "
            };
            // On long sweeps print failures and a progress line every 100 runs, not every run.
            if seeds < 10 || outcome.failure.is_some() {
                println!(
                    "{status} {} seed={run_seed}{} simulated={simulated:.1}s wall={wall:.2}s ({:.0}x real time)",
                    file.display(),
                    if random { " (random latency)" } else { "" },
                    simulated / wall.max(1e-9)
                );
            } else if ran % 100 == 0 {
                println!(
                    "... {ran}/{total} runs, {failed} failed, {:.0}s",
                    started.elapsed().as_secs_f64()
                );
            }
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
                let latency = if random { " --random-latency" } else { "" };
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
