//! Warnings about hostile input, at most one line per address per window.
//!
//! A client that sends garbage a thousand times a second must not write a thousand log lines
//! a second (filling the disk, or hiding everything else): the first offence from an address
//! in a window is logged, the rest are counted and the count goes with the next line logged
//! for that address. The memory is bounded: at most [`ADDRESSES_MAX`] addresses are
//! remembered, and a new one pushes out the one whose window began first. Pure data with the
//! time passed in, so the core can use it and the simulation replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// How long one address stays quiet after a warning.
pub const WINDOW_MS: u64 = 60_000;

/// Addresses remembered at once.
pub const ADDRESSES_MAX: usize = 4096;

#[derive(Debug, Default)]
pub struct HostileWarnings {
    windows: BTreeMap<IpAddr, Window>,
    /// The same windows by start, oldest first: which one to forget when full.
    by_start: BTreeSet<(u64, IpAddr)>,
}

#[derive(Debug)]
struct Window {
    start_ms: u64,
    suppressed: u64,
}

impl HostileWarnings {
    /// Records an offence from `addr` at `now_ms`. `Some(n)`: log it, saying `n` more
    /// offences from this address were not logged since its last line. `None`: stay quiet.
    pub fn offence(&mut self, addr: IpAddr, now_ms: u64) -> Option<u64> {
        if let Some(window) = self.windows.get_mut(&addr) {
            if now_ms < window.start_ms.saturating_add(WINDOW_MS) {
                window.suppressed += 1;
                return None;
            }
            let suppressed = window.suppressed;
            self.by_start.remove(&(window.start_ms, addr));
            self.by_start.insert((now_ms, addr));
            *window = Window {
                start_ms: now_ms,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if self.windows.len() >= ADDRESSES_MAX {
            if let Some((_, oldest)) = self.by_start.pop_first() {
                self.windows.remove(&oldest);
            }
        }
        self.windows.insert(
            addr,
            Window {
                start_ms: now_ms,
                suppressed: 0,
            },
        );
        self.by_start.insert((now_ms, addr));
        debug_assert_eq!(self.windows.len(), self.by_start.len());
        assert!(self.windows.len() <= ADDRESSES_MAX);
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn one_line_per_window_with_the_count_of_the_rest() {
        let mut w = HostileWarnings::default();
        assert_eq!(w.offence(ip(1), 0), Some(0));
        for t in 1..=5 {
            assert_eq!(w.offence(ip(1), t), None);
        }
        // Another address has its own window.
        assert_eq!(w.offence(ip(2), 10), Some(0));
        assert_eq!(w.offence(ip(1), WINDOW_MS - 1), None);
        assert_eq!(w.offence(ip(1), WINDOW_MS), Some(6));
        assert_eq!(w.offence(ip(1), WINDOW_MS + 1), None);
    }

    #[test]
    fn a_flood_of_addresses_keeps_memory_bounded() {
        let mut w = HostileWarnings::default();
        for n in 0..(ADDRESSES_MAX as u32 * 3) {
            assert_eq!(w.offence(ip(n), u64::from(n)), Some(0));
        }
        assert_eq!(w.windows.len(), ADDRESSES_MAX);
        assert_eq!(w.by_start.len(), ADDRESSES_MAX);
        // The newest are remembered, the oldest forgotten (and so logged again).
        let newest = ADDRESSES_MAX as u32 * 3 - 1;
        assert_eq!(w.offence(ip(newest), u64::from(newest) + 1), None);
        assert_eq!(w.offence(ip(0), u64::from(newest) + 1), Some(0));
    }
}
