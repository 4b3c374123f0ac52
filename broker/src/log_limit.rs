//! Warnings about hostile input, at most one line per address per window.
//!
//! A client that sends garbage a thousand times a second must not write a thousand log lines
//! a second (filling the disk, or hiding everything else): the first offence from an address
//! in a window is logged, the rest are counted and the count goes with the next line logged
//! for that address. An IPv6 client is one /64 (a host gets a whole /64 to pick addresses
//! from), and all addresses together get at most [`LINES_PER_SECOND_MAX`] lines a second, so
//! rotating addresses does not help either. The memory is bounded: at most [`ADDRESSES_MAX`]
//! addresses are remembered, and a new one pushes out the one whose window began first. Pure
//! data with the time passed in, so the core can use it and the simulation replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// How long one address stays quiet after a warning.
pub const WINDOW_MS: u64 = 60_000;

/// Addresses remembered at once.
pub const ADDRESSES_MAX: usize = 4096;

/// Warning lines a second, all addresses together.
pub const LINES_PER_SECOND_MAX: u32 = 10;

#[derive(Debug, Default)]
pub struct HostileWarnings {
    windows: BTreeMap<IpAddr, Window>,
    /// The same windows by start, oldest first: which one to forget when full.
    by_start: BTreeSet<(u64, IpAddr)>,
    /// The second lines were last logged in, and how many.
    this_second: (u64, u32),
    /// Offences not logged and not in any window: silenced by the global budget, or counted
    /// in a window that was forgotten. The next line says how many.
    unlogged: u64,
}

#[derive(Debug)]
struct Window {
    start_ms: u64,
    suppressed: u64,
}

/// What a line to log says besides the offence itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Offences from this address not logged since its last line.
    pub suppressed: u64,
    /// Offences from anywhere not logged (the global budget, forgotten addresses) since the
    /// last line of all.
    pub others: u64,
}

impl HostileWarnings {
    /// Records an offence from `addr` at `now_ms`: `Some` to log it, `None` to stay quiet.
    pub fn offence(&mut self, addr: IpAddr, now_ms: u64) -> Option<Line> {
        let addr = client_of(addr);
        let second = now_ms / 1000;
        if self.this_second.0 != second {
            self.this_second = (second, 0);
        }
        let budget_left = self.this_second.1 < LINES_PER_SECOND_MAX;
        let suppressed = match self.windows.get_mut(&addr) {
            Some(window) if now_ms < window.start_ms.saturating_add(WINDOW_MS) => {
                window.suppressed += 1;
                return None;
            }
            // Its window is over: it logs as soon as the budget allows.
            Some(_) | None if !budget_left => {
                self.unlogged += 1;
                return None;
            }
            Some(window) => {
                let suppressed = window.suppressed;
                self.by_start.remove(&(window.start_ms, addr));
                *window = Window {
                    start_ms: now_ms,
                    suppressed: 0,
                };
                suppressed
            }
            None => {
                self.forget_oldest_if_full();
                let window = Window {
                    start_ms: now_ms,
                    suppressed: 0,
                };
                self.windows.insert(addr, window);
                0
            }
        };
        self.by_start.insert((now_ms, addr));
        debug_assert_eq!(self.windows.len(), self.by_start.len());
        assert!(self.windows.len() <= ADDRESSES_MAX);
        self.this_second.1 += 1;
        Some(Line {
            suppressed,
            others: std::mem::take(&mut self.unlogged),
        })
    }

    /// Makes room for one more address: the one whose window began first goes, its count
    /// to the next line.
    fn forget_oldest_if_full(&mut self) {
        if self.windows.len() < ADDRESSES_MAX {
            return;
        }
        if let Some((_, oldest)) = self.by_start.pop_first() {
            if let Some(window) = self.windows.remove(&oldest) {
                self.unlogged += window.suppressed;
            }
        }
    }
}

/// The client an address stands for: itself for IPv4, its /64 for IPv6 (an IPv4 address
/// mapped into IPv6 is the IPv4 address).
fn client_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The warning line (the same from the core and the driver).
pub fn warn(addr: &dyn std::fmt::Display, what: &dyn std::fmt::Display, line: Line) {
    tracing::warn!(
        %addr,
        %what,
        suppressed = line.suppressed,
        others = line.others,
        "hostile input (one line per address per minute, ten a second in all; `suppressed` \
         more from this address since its last line, `others` not logged from anywhere)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    fn line(suppressed: u64, others: u64) -> Option<Line> {
        Some(Line { suppressed, others })
    }

    #[test]
    fn one_line_per_window_with_the_count_of_the_rest() {
        let mut w = HostileWarnings::default();
        assert_eq!(w.offence(ip(1), 0), line(0, 0));
        for t in 1..=5 {
            assert_eq!(w.offence(ip(1), t), None);
        }
        // Another address has its own window.
        assert_eq!(w.offence(ip(2), 10), line(0, 0));
        assert_eq!(w.offence(ip(1), WINDOW_MS - 1), None);
        assert_eq!(w.offence(ip(1), WINDOW_MS), line(6, 0));
        assert_eq!(w.offence(ip(1), WINDOW_MS + 1), None);
    }

    #[test]
    fn all_addresses_together_get_a_few_lines_a_second() {
        let mut w = HostileWarnings::default();
        let logged = (0..100).filter(|n| w.offence(ip(*n), 0).is_some()).count();
        assert_eq!(logged, LINES_PER_SECOND_MAX as usize);
        // The next second has a budget again, and its first line counts the 90 not logged;
        // an address silenced by the budget was not given a window: it logs next time.
        assert_eq!(w.offence(ip(1000), 1000), line(0, 90));
        assert_eq!(w.offence(ip(99), 1001), line(0, 0));
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let mut w = HostileWarnings::default();
        let host =
            |low: u64| IpAddr::from(((0x2001_0db8_u128 << 96) | u128::from(low)).to_be_bytes());
        assert_eq!(w.offence(host(1), 0), line(0, 0));
        for low in 2..50 {
            assert_eq!(
                w.offence(host(low), 0),
                None,
                "another address of the same /64"
            );
        }
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(w.offence(mapped, 0), line(0, 0));
        assert_eq!(w.offence("10.0.0.1".parse().unwrap(), 0), None);
    }

    #[test]
    fn a_flood_of_addresses_keeps_memory_bounded_and_counts() {
        let mut w = HostileWarnings::default();
        // One per second: within the global budget.
        for n in 0..(ADDRESSES_MAX as u32 * 3) {
            let at = u64::from(n) * 1000;
            assert!(w.offence(ip(n), at).is_some());
            // A second offence in its window, counted there.
            assert_eq!(w.offence(ip(n), at + 1), None);
        }
        assert_eq!(w.windows.len(), ADDRESSES_MAX);
        assert_eq!(w.by_start.len(), ADDRESSES_MAX);
        // The newest are remembered, the oldest forgotten (and so logged again); the counts
        // of forgotten windows went to the lines that followed.
        let newest = ADDRESSES_MAX as u32 * 3 - 1;
        let later = u64::from(newest) * 1000 + 2;
        assert_eq!(w.offence(ip(newest), later), None);
        assert_eq!(w.offence(ip(0), later + 1000), line(0, 1));
    }
}
