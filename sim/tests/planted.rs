//! The explorer finds and shrinks bugs planted in the broker (`tern::planted`, built only
//! with `--features planted-bugs`). CI runs the two fastest to find; the six the generator
//! reaches (the seventh, `recursive-match`, needs topics deeper than it writes: the
//! containment test below plants it):
//!
//! ```sh
//! cargo build --release -p tern-sim --features planted-bugs
//! for bug in dollar-wildcard expiry-frozen-while-queued takeover-drops-inflight \
//!            retained-first-wins session-present-lost-v3 unsubscribe-leaves-wildcard; do
//!   ./target/release/tern-sim explore --seeds 5000 --time-budget 60s --planted-bug $bug
//! done
//! ```

use std::path::Path;

use tern::planted::PlantedBug;
use tern_sim::explore::{explore, InProcess};
use tern_sim::scenario::Scenario;
use tern_sim::world::{self, Options};

/// Explores until the planted bug shows, then checks the shrunk scenario: small, in the
/// scenario language, failing with the bug and passing without it.
fn finds_and_shrinks(bug: PlantedBug, checker: &str) {
    let mut runner = InProcess {
        planted_bug: Some(bug),
    };
    let found = explore(&mut runner, 1..=500, &mut |_| {}, &mut || false)
        .unwrap_or_else(|| panic!("{} not found in 500 seeds", bug.name()));
    let yaml = found.yaml();
    assert_eq!(found.kind, checker, "{yaml}\n{}", found.report);
    assert!(
        found.plan.steps.len() <= 6 && found.plan.steps.len() < found.steps_before,
        "not shrunk: {} steps from {}\n{yaml}",
        found.plan.steps.len(),
        found.steps_before
    );
    let scenario = Scenario::parse(&yaml, Path::new("found.yaml")).expect("valid scenario");
    let with_bug = Options {
        seed: scenario.seed,
        planted_bug: Some(bug),
        ..Options::default()
    };
    let failure = world::run(&scenario, &with_bug)
        .failure
        .expect("fails with the bug");
    assert_eq!(failure.checker, checker);
    let without = Options {
        seed: scenario.seed,
        ..Options::default()
    };
    let clean = world::run(&scenario, &without);
    assert!(
        clean.failure.is_none(),
        "fails without the bug too:\n{yaml}\n{:?}",
        clean.failure
    );
}

#[test]
fn a_dollar_topic_matched_by_a_leading_wildcard_is_found() {
    finds_and_shrinks(PlantedBug::DollarWildcard, "delivery-matches-subscription");
}

#[test]
fn a_lost_session_present_flag_is_found() {
    finds_and_shrinks(PlantedBug::SessionPresentLostV3, "session-present");
}

/// A case that aborts the process (a stack overflow: no unwinding catches it) is reported as a
/// failure of that case, with its last words, the trace so far and the replay command, and the
/// run goes on with the next case.
#[test]
fn a_case_that_aborts_the_process_is_reported_and_the_sweep_goes_on() {
    let deep = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/deep-topic.yaml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tern-sim"))
        .args(["run", "--seeds", "1"])
        .arg(&deep)
        .env(
            tern_sim::supervisor::PLANTED_BUG_ENV,
            PlantedBug::RecursiveMatch.name(),
        )
        .output()
        .expect("tern-sim runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{out}");
    for needle in [
        "checker: crash",
        "overflowed its stack",
        "trace so far (replayed)",
        "SUBSCRIBE id=1",
        "replay: cargo run -p tern-sim -- run",
        "0 passed, 2 failed",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    // Without the bug the same file passes: the broker walks deep topics in a loop.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tern-sim"))
        .arg("run")
        .arg(&deep)
        .output()
        .expect("tern-sim runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
