//! Bugs planted on purpose, for one test: that `tern-sim explore` finds and shrinks bugs of
//! the kinds that bite real brokers. The bug code exists only with the `planted-bugs` cargo
//! feature (used by that test alone, never by a release build): without it `active` is a
//! constant `false`, so the one-line planted branches compile away, and the larger ones (a
//! recursive matcher, a session flag) are not compiled at all. This enum and its names are
//! always there, so tools can say which bugs exist.
//!
//! A bug is switched on per thread (the simulation runs a broker on one thread), so tests on
//! other threads never see it.

/// The planted bugs. Each names the rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// A `$` topic is matched by a filter starting with a wildcard (breaks [MQTT-4.7.2-1]).
    DollarWildcard,
    /// Message expiry is never checked: an expired message still leaves a session queue (and
    /// the retained store), with an interval of 0 left (breaks [MQTT-3.3.2-5]).
    ExpiryFrozenWhileQueued,
    /// After a session takeover, the messages in flight to the old connection are never
    /// resent to the new one (breaks [MQTT-4.4.0-1]).
    TakeoverDropsInflight,
    /// A retained message is not replaced by a newer one on the same topic (breaks
    /// [MQTT-3.3.1-5]).
    RetainedFirstWins,
    /// A 3.x client resuming its session is told session present = 0 (breaks [MQTT-3.2.2-2]).
    SessionPresentLostV3,
    /// UNSUBSCRIBE of a wildcard filter is acknowledged but the subscription stays in the
    /// routing tree (breaks [MQTT-3.10.4-2]).
    UnsubscribeLeavesWildcard,
    /// Topic matching recurses once per topic level, so a deep enough topic overflows the
    /// stack and aborts the process (Tern shipped this one; the simulation must contain it).
    RecursiveMatch,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 7] = [
        PlantedBug::DollarWildcard,
        PlantedBug::ExpiryFrozenWhileQueued,
        PlantedBug::TakeoverDropsInflight,
        PlantedBug::RetainedFirstWins,
        PlantedBug::SessionPresentLostV3,
        PlantedBug::UnsubscribeLeavesWildcard,
        PlantedBug::RecursiveMatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::DollarWildcard => "dollar-wildcard",
            PlantedBug::ExpiryFrozenWhileQueued => "expiry-frozen-while-queued",
            PlantedBug::TakeoverDropsInflight => "takeover-drops-inflight",
            PlantedBug::RetainedFirstWins => "retained-first-wins",
            PlantedBug::SessionPresentLostV3 => "session-present-lost-v3",
            PlantedBug::UnsubscribeLeavesWildcard => "unsubscribe-leaves-wildcard",
            PlantedBug::RecursiveMatch => "recursive-match",
        }
    }

    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// Whether this build can plant bugs at all.
pub const AVAILABLE: bool = cfg!(feature = "planted-bugs");

#[cfg(feature = "planted-bugs")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<PlantedBug>> = const { std::cell::Cell::new(None) };
}

/// Switches `bug` on (or all off) for this thread. Without the feature it does nothing.
pub fn plant(bug: Option<PlantedBug>) {
    #[cfg(feature = "planted-bugs")]
    ACTIVE.set(bug);
    #[cfg(not(feature = "planted-bugs"))]
    let _ = bug;
}

/// Whether `bug` is switched on for this thread.
#[inline(always)]
pub fn active(bug: PlantedBug) -> bool {
    #[cfg(feature = "planted-bugs")]
    return ACTIVE.get() == Some(bug);
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}
