//! A short exploration of the correct broker finds nothing: the generator writes only steps a
//! correct broker can carry out and the checkers raise no false alarm (a longer sweep is
//! `cargo run --release -p tern-sim -- explore --seeds 5000`).

use tern_sim::explore::{explore, generate, InProcess, Plan};
use tern_sim::scenario::Scenario;

#[test]
fn generated_scenarios_are_in_the_scenario_language_and_replay_alike() {
    for seed in 1..=50 {
        let plan: Plan = generate(seed);
        assert_eq!(plan, generate(seed), "seed {seed} is not deterministic");
        let yaml = plan.to_yaml("explore/x", "a generated scenario");
        let parsed = Scenario::parse(&yaml, std::path::Path::new("x.yaml"));
        assert!(parsed.is_ok(), "seed {seed}: {parsed:?}\n{yaml}");
    }
}

#[test]
fn a_short_exploration_of_the_correct_broker_finds_nothing() {
    let mut runner = InProcess::default();
    let found = explore(&mut runner, 1..=200, &mut |_| {}, &mut || false);
    assert!(
        found.is_none(),
        "{}",
        found.map(|f| f.yaml() + &f.report).unwrap_or_default()
    );
}
