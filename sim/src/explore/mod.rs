//! The explorer: generated scenarios, run with every checker, until one fails; then the
//! failure is shrunk to a small scenario and written as a YAML file ready for
//! `scenarios/regressions/`. Scripted scenarios test what someone thought of; this finds
//! what nobody did.
//!
//! - `plan.rs`: a generated scenario and its YAML form;
//! - `generate.rs`: plans from a seed;
//! - `shrink.rs`: cutting a failing plan down.
//!
//! Runs go through a [`Runner`]: in this process (tests), or in a supervised child process
//! (`tern-sim explore`), so a case that aborts is a found bug, not a dead explorer.

mod generate;
mod plan;
mod shrink;

use std::path::{Path, PathBuf};

pub use generate::generate;
pub use plan::{Plan, Step};
pub use shrink::shrink;

use crate::scenario::Scenario;
use crate::supervisor::{Case, Supervisor};
use crate::world::{self, Options};

/// What one run of a plan showed.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub failed: bool,
    /// The checker that failed (`step N` failures count as `step`), or empty.
    pub kind: String,
    /// The failure report (checker, message, trace around it).
    pub report: String,
}

/// Runs plans.
pub trait Runner {
    fn run(&mut self, plan: &Plan) -> Verdict;
}

/// The failure kind: the checker's name, or for a failed step what went wrong without the
/// step number and client name ("step: no SUBACK within 5s"), so shrinking cannot trade a
/// broker that did not answer for a script cut so that a step has nothing to answer.
fn kind_of(checker: &str, message: &str) -> String {
    if !checker.starts_with("step") {
        return checker.to_string();
    }
    let what = message.split_once(": ").map_or(message, |(_, what)| what);
    let what: String = what.chars().filter(|c| !c.is_ascii_digit()).collect();
    format!("step: {what}")
}

/// Runs plans in this process (a stack overflow would end the process: tests only).
#[derive(Default)]
pub struct InProcess {
    pub planted_bug: Option<tern::planted::PlantedBug>,
}

impl Runner for InProcess {
    fn run(&mut self, plan: &Plan) -> Verdict {
        let yaml = plan.to_yaml("explore/candidate", "a generated candidate");
        let scenario = match Scenario::parse(&yaml, Path::new("candidate.yaml")) {
            Ok(s) => s,
            Err(e) => panic!("the generator wrote an invalid scenario: {e}\n{yaml}"),
        };
        let options = Options {
            seed: scenario.seed,
            planted_bug: self.planted_bug,
            ..Options::default()
        };
        let outcome = world::run(&scenario, &options);
        match outcome.failure {
            None => Verdict {
                failed: false,
                kind: String::new(),
                report: String::new(),
            },
            Some(f) => Verdict {
                failed: true,
                kind: kind_of(&f.checker, &f.message),
                report: format!(
                    "  checker: {}\n  {}\n  trace around the failure:\n{}",
                    f.checker,
                    f.message,
                    f.at_entry
                        .map(|at| outcome.trace.around(at, 12))
                        .unwrap_or_default()
                ),
            },
        }
    }
}

/// Runs plans in a supervised child process, through a scratch file.
pub struct Supervised {
    pub supervisor: Supervisor,
    pub scratch: PathBuf,
}

impl Runner for Supervised {
    fn run(&mut self, plan: &Plan) -> Verdict {
        let path = self.scratch.join("candidate.yaml");
        let yaml = plan.to_yaml("explore/candidate", "a generated candidate");
        let written =
            std::fs::create_dir_all(&self.scratch).and_then(|_| std::fs::write(&path, yaml));
        let case = Case {
            path,
            seed: plan.seed,
            random_latency: false,
            trace: None,
        };
        match written.and_then(|_| self.supervisor.run(&case)) {
            Ok(report) => {
                let mut lines = report.text.lines().map(str::trim);
                let checker = lines
                    .find_map(|l| l.strip_prefix("checker: "))
                    .unwrap_or("unknown")
                    .to_string();
                let message = lines.next().unwrap_or_default().to_string();
                Verdict {
                    failed: report.failed,
                    kind: if report.failed {
                        kind_of(&checker, &message)
                    } else {
                        String::new()
                    },
                    report: report.text,
                }
            }
            Err(e) => Verdict {
                failed: true,
                kind: "io".into(),
                report: format!("cannot run the case: {e}"),
            },
        }
    }
}

/// A failure found and shrunk.
#[derive(Debug)]
pub struct Found {
    /// The seed whose generated scenario failed.
    pub seed: u64,
    pub kind: String,
    /// The shrunk plan and its failure report.
    pub plan: Plan,
    pub report: String,
    /// Steps before and after shrinking, and the runs shrinking took.
    pub steps_before: usize,
    pub shrink_runs: usize,
}

impl Found {
    /// The shrunk scenario as a file for `scenarios/regressions/`.
    pub fn yaml(&self) -> String {
        let first = self.report.lines().nth(1).unwrap_or_default().trim();
        self.plan.to_yaml(
            &format!("regressions/explore-seed-{}", self.seed),
            &format!(
                "Found by tern-sim explore (seed {}, shrunk from {} steps): {} - {first}",
                self.seed, self.steps_before, self.kind
            ),
        )
    }
}

/// Runs the generated scenarios of `seeds` in order until one fails, then shrinks it.
/// `progress` hears of every finished seed; `out_of_time` ends the sweep (and a shrink in
/// progress, which keeps its best so far).
pub fn explore(
    runner: &mut dyn Runner,
    seeds: impl IntoIterator<Item = u64>,
    progress: &mut dyn FnMut(u64),
    out_of_time: &mut dyn FnMut() -> bool,
) -> Option<Found> {
    for seed in seeds {
        if out_of_time() {
            return None;
        }
        let plan = generate(seed);
        let verdict = runner.run(&plan);
        progress(seed);
        if !verdict.failed {
            continue;
        }
        let steps_before = plan.steps.len();
        let (plan, shrink_runs) = shrink(plan, &verdict.kind, runner, out_of_time);
        let report = runner.run(&plan).report;
        return Some(Found {
            seed,
            kind: verdict.kind,
            plan,
            report,
            steps_before,
            shrink_runs,
        });
    }
    None
}
