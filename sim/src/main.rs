//! `tern-sim`: run scenario files and report, one line per run; explore random scenarios.
//!
//! Every case runs in a child worker process (`supervisor.rs`): a case that aborts it is
//! reported like any failure and the sweep goes on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tern_sim::explore::Supervised;
use tern_sim::scenario::Scenario;
use tern_sim::supervisor::{self, Case, Supervisor};

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
        /// Write the trace of the last run to this file: a sequence diagram if it ends in
        /// `.svg` or `.html`, the text trace otherwise.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Run generated scenarios until one fails, shrink it, and write it as a scenario file.
    Explore {
        /// How many seeds to try.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Stop after this much wall time (e.g. 60s, 10m), shrinking included.
        #[arg(long, value_parser = parse_budget)]
        time_budget: Option<std::time::Duration>,
        /// Where the shrunk scenario is written.
        #[arg(long, default_value = "explore-found")]
        out: PathBuf,
        /// Run the broker with a planted bug (builds with `--features planted-bugs` only):
        /// dollar-wildcard, expiry-frozen-while-queued, takeover-drops-inflight,
        /// retained-first-wins, session-present-lost-v3, unsubscribe-leaves-wildcard,
        /// recursive-match.
        #[arg(long)]
        planted_bug: Option<String>,
    },
    /// Internal: serve cases from stdin in this process (see supervisor.rs).
    #[command(hide = true)]
    Worker,
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

fn parse_budget(text: &str) -> Result<std::time::Duration, String> {
    tern_sim::scenario::parse_duration(text)
}

fn supervisor() -> Supervisor {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tern-sim"));
    Supervisor::new(exe, std::env::temp_dir().join("tern-sim"))
}

// Wall time is reported to the user, never fed to the simulation.
#[allow(clippy::disallowed_methods)]
fn run(
    paths: &[PathBuf],
    seed: Option<u64>,
    seeds: u64,
    random_latency: bool,
    trace: Option<PathBuf>,
) -> ExitCode {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files);
    }
    let total = files.len() as u64 * (1 + seeds);
    let (mut ran, mut failed) = (0u64, 0u64);
    let started = std::time::Instant::now();
    let mut supervisor = supervisor();
    for file in &files {
        let base = match (seed, Scenario::load(file)) {
            (Some(seed), _) => seed,
            (None, Ok(scenario)) => scenario.seed,
            (None, Err(error)) => {
                println!("FAIL {error}");
                failed += 1;
                continue;
            }
        };
        for k in 0..=seeds {
            let case = Case {
                path: file.clone(),
                seed: base.wrapping_add(k),
                random_latency: k > 0 || random_latency,
                trace: trace.clone(),
            };
            let report = match supervisor.run(&case) {
                Ok(report) => report,
                Err(error) => {
                    println!(
                        "FAIL {}: cannot run the worker process: {error}",
                        file.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            ran += 1;
            let status = if report.failed { "FAIL" } else { "ok  " };
            // On long sweeps print failures and a progress line every 100 runs, not every run.
            if seeds < 10 || report.failed {
                println!(
                    "{status} {} seed={}{} simulated={:.1}s wall={:.2}s ({:.0}x real time)",
                    file.display(),
                    case.seed,
                    if case.random_latency {
                        " (random latency)"
                    } else {
                        ""
                    },
                    report.simulated_secs,
                    report.wall_secs,
                    report.simulated_secs / report.wall_secs.max(1e-9)
                );
            } else if ran % 100 == 0 {
                println!(
                    "... {ran}/{total} runs, {failed} failed, {:.0}s",
                    started.elapsed().as_secs_f64()
                );
            }
            if report.failed {
                failed += 1;
                print!("{}", report.text);
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

// Wall time bounds the sweep and is reported; it never enters a simulation.
#[allow(clippy::disallowed_methods)]
fn explore(
    from: u64,
    seeds: u64,
    budget: Option<std::time::Duration>,
    out: &Path,
    planted_bug: Option<String>,
) -> ExitCode {
    let mut supervisor = supervisor();
    if let Some(name) = &planted_bug {
        if !tern::planted::AVAILABLE {
            println!(
                "this tern-sim was built without the planted bugs: add --features planted-bugs"
            );
            return ExitCode::FAILURE;
        }
        if tern::planted::PlantedBug::from_name(name).is_none() {
            println!("no planted bug named {name:?}");
            return ExitCode::FAILURE;
        }
        supervisor = supervisor.with_env(supervisor::PLANTED_BUG_ENV, name);
    }
    let mut runner = Supervised {
        // A generated case runs in about a second: a minute is a hang.
        supervisor: supervisor.with_case_limit(std::time::Duration::from_secs(60)),
        scratch: std::env::temp_dir().join(format!("tern-sim-explore-{}", std::process::id())),
    };
    let started = std::time::Instant::now();
    let mut last_report = started;
    let mut done = 0u64;
    let mut progress = |seed: u64| {
        done += 1;
        if last_report.elapsed().as_secs() >= 10 {
            last_report = std::time::Instant::now();
            println!(
                "... {done}/{seeds} seeds (at seed {seed}), {:.0}s, no failure yet",
                started.elapsed().as_secs_f64()
            );
        }
    };
    let mut out_of_time = || budget.is_some_and(|b| started.elapsed() >= b);
    let found = tern_sim::explore::explore(
        &mut runner,
        from..from + seeds,
        &mut progress,
        &mut out_of_time,
    );
    let Some(found) = found else {
        println!(
            "explored {done} seeds from {from} in {:.1}s: no failure",
            started.elapsed().as_secs_f64()
        );
        return ExitCode::SUCCESS;
    };
    let file = out.join(format!("explore-seed-{}.yaml", found.seed));
    let yaml = found.yaml();
    let written = std::fs::create_dir_all(out).and_then(|_| std::fs::write(&file, &yaml));
    println!(
        "FAIL seed {} ({}): shrunk from {} to {} steps and {} clients in {} runs, {:.1}s in all\n{}",
        found.seed,
        found.kind,
        found.steps_before,
        found.plan.steps.len(),
        found.plan.clients.len(),
        found.shrink_runs,
        started.elapsed().as_secs_f64(),
        found.report
    );
    match written {
        Ok(()) => println!(
            "--- {}\n{yaml}---\nreplay: cargo run -p tern-sim -- run {}\nto keep it: move it to scenarios/regressions/ with a name and goal saying what it shows, then INSTA_UPDATE=always cargo test --test scenarios",
            file.display(),
            file.display()
        ),
        Err(e) => println!("cannot write {}: {e}\n{yaml}", file.display()),
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Run {
            paths,
            seed,
            seeds,
            random_latency,
            trace,
        } => run(&paths, seed, seeds, random_latency, trace),
        Command::Explore {
            seeds,
            from,
            time_budget,
            out,
            planted_bug,
        } => explore(from, seeds, time_budget, &out, planted_bug),
        Command::Worker => match supervisor::serve_worker() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
    }
}
