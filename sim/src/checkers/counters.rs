//! The broker's own account of its deliveries, read after the last step: every message it
//! handed to a session ended somewhere it counted (sent, dropped for a named reason, discarded
//! with its session, moved to another shared-group member) or is still queued. A path that
//! loses a message without counting it, or counts one twice, breaks the sum
//! (`tern::core::Sample::unaccounted_deliveries`).
//!
//! The counters are those of the broker's last start: a crash loses the counts, and a restart
//! counts what it restored from the store.

use super::Violation;
use crate::scenario::Scenario;
use crate::trace::{BrokerCounters, Trace};

pub fn deliveries_accounted(_scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let last = trace.entries.len().saturating_sub(1);
    let counters = match &trace.broker_counters {
        BrokerCounters::Read(counters) => counters,
        BrokerCounters::BrokerDown => return Ok(()),
        BrokerCounters::Unanswered => {
            return Err((
                "the broker was up after the last step and did not give its counters".into(),
                last,
            ))
        }
    };
    let unaccounted = counters.unaccounted_deliveries();
    if unaccounted == 0 {
        return Ok(());
    }
    let s = &counters.stats;
    Err((
        format!(
            "the broker's counters do not add up: {unaccounted} deliveries unaccounted for \
             (handed to sessions {} + restored {} = sent {} + dropped {} + discarded {} + \
             moved {} + queued {})",
            s.deliveries,
            s.deliveries_restored,
            s.messages_sent.total(),
            s.deliveries_dropped(),
            s.messages_discarded,
            s.deliveries_moved,
            counters.queued_messages
        ),
        last,
    ))
}
