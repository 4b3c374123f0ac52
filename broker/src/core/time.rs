//! Time as the core sees it: an instant passed in by the driver, and the deadlines it waits
//! for (a keyed timer queue, and an index-free set for the keep-alive checks).
//!
//! The core never reads a clock. The driver measures time since it started (real or simulated)
//! and passes it in; the core answers with the next instant it wants to be woken at.

use std::collections::{BTreeMap, BTreeSet};
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

/// Deadlines, at most one per key: each entry carries what to check when it passes.
///
/// Scheduling a key that is already queued moves its deadline; cancelling removes it. So the
/// queue never holds more entries than there are live keys (connections, sessions), however
/// often a client reconnects; before this, stale entries piled up until their deadline (a day
/// for a day's session expiry). Handlers still re-check the real state when an entry fires.
#[derive(Debug)]
pub struct TimerQueue<T: Ord> {
    /// Ordered by deadline, then by the order of scheduling.
    entries: BTreeSet<(Instant, u64, T)>,
    /// Where each key sits in `entries`.
    by_key: BTreeMap<T, (Instant, u64)>,
    sequence: u64,
}

impl<T: Ord + Clone> TimerQueue<T> {
    pub fn new() -> TimerQueue<T> {
        TimerQueue {
            entries: BTreeSet::new(),
            by_key: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// Sets `what`'s deadline to `at`, replacing any deadline it had.
    pub fn schedule(&mut self, at: Instant, what: T) {
        self.cancel(&what);
        self.sequence += 1;
        self.entries.insert((at, self.sequence, what.clone()));
        self.by_key.insert(what, (at, self.sequence));
        debug_assert_eq!(self.entries.len(), self.by_key.len());
    }

    /// Removes `what`'s deadline, if it has one.
    pub fn cancel(&mut self, what: &T) {
        if let Some((at, sequence)) = self.by_key.remove(what) {
            let removed = self.entries.remove(&(at, sequence, what.clone()));
            debug_assert!(removed, "timer index out of step with the queue");
        }
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
        let (at, _, what) = self.entries.pop_first().expect("checked above");
        self.by_key.remove(&what);
        Some((at, what))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Deadlines of many keys that each remember their own: no index beside the entries, so an
/// entry costs its 24 bytes and its share of a B-tree node (about 50 bytes in all, against
/// about 155 in a [`TimerQueue`]; heaptrack). Made for the keep-alive checks, the one deadline every idle
/// connection holds (issue 15). The owner of a key keeps the instant it was inserted at and
/// passes it to [`DeadlineSet::remove`]; equal deadlines come out in key order.
#[derive(Debug)]
pub struct DeadlineSet<K: Ord + Copy> {
    entries: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> DeadlineSet<K> {
    pub fn new() -> DeadlineSet<K> {
        DeadlineSet {
            entries: BTreeSet::new(),
        }
    }

    /// Adds `key` at `at`; false if it was there already (a bug in the owner's bookkeeping).
    pub fn insert(&mut self, at: Instant, key: K) -> bool {
        self.entries.insert((at, key))
    }

    /// Removes `key`'s entry at `at`; false if there was none.
    pub fn remove(&mut self, at: Instant, key: K) -> bool {
        self.entries.remove(&(at, key))
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.first().map(|(at, _)| *at)
    }

    #[cfg(test)]
    pub fn contains(&self, at: Instant, key: K) -> bool {
        self.entries.contains(&(at, key))
    }

    /// Removes and returns the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (at, _) = self.entries.first()?;
        if *at > now {
            return None;
        }
        self.entries.pop_first()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Ord + Copy> Default for DeadlineSet<K> {
    fn default() -> Self {
        DeadlineSet::new()
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

    #[test]
    fn equal_deadlines_come_out_in_scheduling_order_not_key_order() {
        let t = |s| Instant::from_since_epoch(Duration::from_secs(s));
        let mut q = TimerQueue::new();
        assert!(q.is_empty());
        q.schedule(t(5), "z");
        q.schedule(t(5), "a");
        assert!(!q.is_empty());
        assert_eq!(q.pop_due(t(4)), None);
        assert_eq!(q.pop_due(t(5)), Some((t(5), "z")));
        assert_eq!(q.pop_due(t(5)), Some((t(5), "a")));
        assert_eq!(t(1) + Duration::from_secs(2), t(3));
        assert_eq!(t(3) - t(1), Duration::from_secs(2));
        assert_eq!(t(1) - t(3), Duration::ZERO);
    }

    #[test]
    fn a_deadline_set_pops_in_deadline_then_key_order_and_removes_by_deadline() {
        let t = |s| Instant::from_since_epoch(Duration::from_secs(s));
        let mut set = DeadlineSet::new();
        assert!(set.insert(t(5), 2));
        assert!(set.insert(t(5), 1));
        assert!(set.insert(t(3), 9));
        assert!(!set.insert(t(3), 9), "an entry is there once");
        assert_eq!(set.next_deadline(), Some(t(3)));
        assert!(
            !set.remove(t(4), 9),
            "removal needs the deadline the entry has"
        );
        assert!(set.remove(t(3), 9));
        assert_eq!(set.len(), 2);
        assert_eq!(set.pop_due(t(4)), None);
        assert_eq!(set.pop_due(t(5)), Some((t(5), 1)));
        assert_eq!(set.pop_due(t(5)), Some((t(5), 2)));
        assert!(set.is_empty());
    }

    #[test]
    fn one_entry_per_key_rescheduled_or_cancelled() {
        let t = |s| Instant::from_since_epoch(Duration::from_secs(s));
        let mut q = TimerQueue::new();
        for s in 0..1000 {
            q.schedule(t(100 + s), "session");
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_deadline(), Some(t(1099)));
        q.schedule(t(5), "conn");
        q.cancel(&"session");
        q.cancel(&"nothing");
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(t(2000)), Some((t(5), "conn")));
        assert!(q.is_empty());
        q.schedule(t(1), "conn");
        assert_eq!(q.pop_due(t(1)), Some((t(1), "conn")));
    }
}
