//! Cutting a failing plan down to a small one that fails the same way (same checker): drop
//! whole clients, then runs of steps (halves, quarters, ... single steps, delta-debugging
//! style), then simplify what is left (shorter waits, lower QoS, no retain or expiry, plainer
//! clients), and repeat until nothing more can go. A cut that breaks the script (a step on a
//! client that is no longer connected) fails differently and is rejected.

use super::plan::{Plan, Step};
use super::{Runner, Verdict};

/// Whether `candidate` still fails with `kind`.
fn still_fails(runner: &mut dyn Runner, candidate: &Plan, kind: &str) -> bool {
    let Verdict {
        failed, kind: k, ..
    } = runner.run(candidate);
    failed && k == kind
}

/// The smallest plan found that fails with `kind`, and how many runs it took. Stops early,
/// keeping the best so far, when `out_of_time` says so.
pub fn shrink(
    mut plan: Plan,
    kind: &str,
    runner: &mut dyn Runner,
    out_of_time: &mut dyn FnMut() -> bool,
) -> (Plan, usize) {
    let mut runs = 0;
    loop {
        let before = plan.clone();
        for pass in [drop_clients as Pass, drop_steps, simplify] {
            plan = pass(plan, kind, runner, out_of_time, &mut runs);
        }
        if plan == before || out_of_time() {
            return (plan, runs);
        }
    }
}

type Pass = fn(Plan, &str, &mut dyn Runner, &mut dyn FnMut() -> bool, &mut usize) -> Plan;

/// Tries each candidate in turn, keeping every one that still fails.
fn keep_failing(
    mut plan: Plan,
    kind: &str,
    runner: &mut dyn Runner,
    out_of_time: &mut dyn FnMut() -> bool,
    runs: &mut usize,
    candidates: impl Fn(&Plan, usize) -> Option<Plan>,
) -> Plan {
    let mut n = 0;
    while let Some(candidate) = candidates(&plan, n) {
        if out_of_time() {
            break;
        }
        *runs += 1;
        if candidate != plan && still_fails(runner, &candidate, kind) {
            plan = candidate;
        } else {
            n += 1;
        }
    }
    plan
}

/// Candidate `n`: the plan without its `n`th client and everything that client did.
fn drop_clients(
    plan: Plan,
    kind: &str,
    runner: &mut dyn Runner,
    out_of_time: &mut dyn FnMut() -> bool,
    runs: &mut usize,
) -> Plan {
    keep_failing(plan, kind, runner, out_of_time, runs, |plan, n| {
        let gone = plan.clients.get(n)?.name.clone();
        let mut candidate = plan.clone();
        candidate.clients.remove(n);
        candidate
            .steps
            .retain(|s| s.client() != Some(gone.as_str()));
        Some(candidate)
    })
}

/// Removes runs of steps, halving their length down to one.
fn drop_steps(
    mut plan: Plan,
    kind: &str,
    runner: &mut dyn Runner,
    out_of_time: &mut dyn FnMut() -> bool,
    runs: &mut usize,
) -> Plan {
    let mut chunk = plan.steps.len().div_ceil(2).max(1);
    loop {
        plan = keep_failing(plan, kind, runner, out_of_time, runs, |plan, n| {
            let start = n * chunk;
            (start < plan.steps.len()).then(|| {
                let mut candidate = plan.clone();
                let end = (start + chunk).min(candidate.steps.len());
                candidate.steps.drain(start..end);
                candidate
            })
        });
        if chunk == 1 || out_of_time() {
            return plan;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// One simplification per candidate: a wait halved, a publish at a lower QoS or without
/// retain or expiry, a client without its will, with auto-ack, or without a shared id.
fn simplify(
    plan: Plan,
    kind: &str,
    runner: &mut dyn Runner,
    out_of_time: &mut dyn FnMut() -> bool,
    runs: &mut usize,
) -> Plan {
    keep_failing(plan, kind, runner, out_of_time, runs, |plan, n| {
        let mut candidates = simplifications(plan);
        (n < candidates.len()).then(|| candidates.swap_remove(n))
    })
}

fn simplifications(plan: &Plan) -> Vec<Plan> {
    let mut out = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let mut with = |s: Step| {
            let mut candidate = plan.clone();
            candidate.steps[i] = s;
            out.push(candidate);
        };
        match step {
            Step::WaitMs(ms) if *ms > 50 => with(Step::WaitMs(ms / 2)),
            Step::Publish {
                client,
                topic,
                payload,
                qos,
                retain,
                expiry,
            } => {
                let publish = |qos: u8, retain: bool, expiry: Option<u32>| Step::Publish {
                    client: client.clone(),
                    topic: topic.clone(),
                    payload: payload.clone(),
                    qos,
                    retain,
                    expiry,
                };
                if *qos > 0 {
                    with(publish(qos - 1, *retain, *expiry));
                }
                if *retain {
                    with(publish(*qos, false, *expiry));
                }
                if expiry.is_some() {
                    with(publish(*qos, *retain, None));
                }
            }
            Step::Subscribe {
                client,
                filter,
                qos,
            } if *qos > 0 => with(Step::Subscribe {
                client: client.clone(),
                filter: filter.clone(),
                qos: qos - 1,
            }),
            _ => {}
        }
    }
    for (i, client) in plan.clients.iter().enumerate() {
        let mut with = |change: &dyn Fn(&mut super::plan::Client)| {
            let mut candidate = plan.clone();
            change(&mut candidate.clients[i]);
            out.push(candidate);
        };
        if client.will.is_some() {
            with(&|c| c.will = None);
        }
        if !client.auto_ack {
            with(&|c| c.auto_ack = true);
        }
        if client.id.is_some() {
            with(&|c| c.id = None);
        }
    }
    out
}
