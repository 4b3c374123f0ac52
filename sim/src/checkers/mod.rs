//! Run-wide properties checked on every trace, whatever the steps say.
//!
//! The checkers see only what clients saw (the trace): they do not need the world that made
//! it, and each has a self-test on a synthetic trace that violates it (`tests.rs`). They rely on
//! one convention of scenario files: a (topic, payload) pair names one message, so payloads are
//! unique per topic unless a scenario means to send the same message again.
//!
//! - `delivery.rs`: a delivery matches a subscription, stops after UNSUBACK, respects expiry;
//! - `qos.rs`: exactly once, at least once, in publisher order, within a bound, within the
//!   Receive Maximum;
//! - `retained.rs`: the retained store as a model (never stale, converges to the last value);
//! - `session.rs`: the session-present flag across reconnects;
//! - `will.rs`: wills published on abnormal ends, never twice;
//! - `counters.rs`: the broker's own counters account for every delivery (read from the
//!   broker after the last step, not from what clients saw);
//! - `model.rs`: what several checkers share (subscriptions held, links and connections).

mod counters;
mod delivery;
mod model;
mod qos;
mod retained;
mod session;
mod will;

#[cfg(test)]
mod tests;

use crate::scenario::Scenario;
use crate::trace::{Event, Trace};

/// A fault line's kind and the hosts it names (for the trace picture).
pub fn fault_hosts(text: &str) -> (String, Vec<String>) {
    let f = model::Fault::parse(text);
    (f.kind, f.hosts)
}

/// A run that broke a property: which, why, and the trace entry it is about.
#[derive(Debug)]
pub struct Failure {
    pub checker: String,
    pub message: String,
    /// Index of the trace entry the failure is about, if any.
    pub at_entry: Option<usize>,
}

/// What a checker returns on a violation: the message and the trace entry it is about.
type Violation = (String, usize);

type Check = fn(&Scenario, &Trace) -> Result<(), Violation>;

/// The checkers, by name.
pub const CHECKERS: &[(&str, Check)] = &[
    (
        "delivery-matches-subscription",
        delivery::matches_subscription,
    ),
    ("no-delivery-after-unsuback", delivery::none_after_unsuback),
    ("no-delivery-after-expiry", delivery::none_after_expiry),
    ("qos2-exactly-once", qos::qos2_exactly_once),
    ("publisher-order", qos::publisher_order),
    ("qos1-at-least-once", qos::at_least_once),
    ("liveness", qos::liveness),
    ("receive-maximum", qos::receive_maximum),
    ("retained-model", retained::never_stale),
    ("retained-converges", retained::converges),
    ("session-present", session::present_flag),
    ("will-never-twice", will::never_twice),
    ("will-on-abnormal-end", will::on_abnormal_end),
    ("deliveries-accounted", counters::deliveries_accounted),
    ("client-errors", client_errors),
];

pub fn check(scenario: &Scenario, trace: &Trace) -> Option<Failure> {
    for (name, check) in CHECKERS {
        if let Err((message, entry)) = check(scenario, trace) {
            return Some(Failure {
                checker: (*name).to_string(),
                message,
                at_entry: Some(entry),
            });
        }
    }
    None
}

/// A client found the broker at fault (a wrong SCRAM server proof, say).
fn client_errors(_: &Scenario, trace: &Trace) -> Result<(), Violation> {
    match trace
        .entries
        .iter()
        .enumerate()
        .find(|(_, e)| matches!(e.event, Event::ClientError(_)))
    {
        Some((i, e)) => Err((format!("{}: {}", e.host, e.line()), i)),
        None => Ok(()),
    }
}
