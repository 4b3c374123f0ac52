//! Time as the core sees it: an instant passed in by the driver, and a queue of deadlines.
//!
//! The core never reads a clock. The driver measures time since it started (real or simulated)
//! and passes it in; the core answers with the next instant it wants to be woken at.

use std::collections::BTreeSet;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, as a duration since an epoch the driver chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(Duration);

impl Instant {
    pub const ZERO: Instant = Instant(Duration::ZERO);

    pub fn from_since_epoch(since_epoch: Duration) -> Instant {
        Instant(since_epoch)
    }

    pub fn since_epoch(self) -> Duration {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

/// A set of deadlines, each carrying what to check when it passes.
///
/// Entries are hints, not promises: whoever handles an expired entry re-checks the real state
/// (a keep-alive deadline may have moved since it was queued). That keeps cancellation free:
/// stale entries are simply found to be stale.
#[derive(Debug)]
pub struct TimerQueue<T: Ord> {
    entries: BTreeSet<(Instant, u64, T)>,
    sequence: u64,
}

impl<T: Ord + Clone> TimerQueue<T> {
    pub fn new() -> TimerQueue<T> {
        TimerQueue {
            entries: BTreeSet::new(),
            sequence: 0,
        }
    }

    pub fn schedule(&mut self, at: Instant, what: T) {
        self.sequence += 1;
        self.entries.insert((at, self.sequence, what));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        let (at, _, _) = self.entries.first()?;
        if *at > now {
            return None;
        }
        self.entries.pop_first().map(|(at, _, what)| (at, what))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<T: Ord + Clone> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_in_deadline_then_insertion_order() {
        let t = |s| Instant::from_since_epoch(Duration::from_secs(s));
        let mut q = TimerQueue::new();
        q.schedule(t(5), "b");
        q.schedule(t(1), "a");
        q.schedule(t(5), "c");
        assert_eq!(q.next_deadline(), Some(t(1)));
        assert_eq!(q.pop_due(t(0)), None);
        assert_eq!(q.pop_due(t(9)), Some((t(1), "a")));
        assert_eq!(q.pop_due(t(9)), Some((t(5), "b")));
        assert_eq!(q.pop_due(t(9)), Some((t(5), "c")));
        assert!(q.is_empty());
    }
}
