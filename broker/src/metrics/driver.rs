//! The driver's own counters: what only the network and storage tasks see (sockets, bytes,
//! stalled writes, commits). Plain atomics, written by many tasks with relaxed ordering (each
//! is a count on its own; nothing is inferred from two of them being in step) and read when
//! a sample is taken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One listener's counters.
#[derive(Debug)]
pub struct ListenerMetrics {
    /// How the listener is named in metrics: its scheme and address (`mqtts://0.0.0.0:8883`).
    pub name: String,
    open: AtomicU64,
    accepted: AtomicU64,
    refused_at_limit: AtomicU64,
    handshakes_failed: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    write_stalls: AtomicU64,
}

/// What a listener's counters read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSample {
    pub name: String,
    /// Sockets open now (handshaking, or serving a connection).
    pub open: u64,
    /// Sockets accepted.
    pub accepted: u64,
    /// Sockets closed at once because the broker had `connections_max` open.
    pub refused_at_limit: u64,
    /// TLS or WebSocket handshakes that failed or did not finish within the connect timeout.
    pub handshakes_failed: u64,
    /// MQTT bytes read and written (inside TLS and WebSocket framing).
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Connections closed because a write made no progress for `WRITE_STALL_TIMEOUT`.
    pub write_stalls: u64,
}

impl ListenerMetrics {
    pub fn new(name: String) -> ListenerMetrics {
        ListenerMetrics {
            name,
            open: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused_at_limit: AtomicU64::new(0),
            handshakes_failed: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            write_stalls: AtomicU64::new(0),
        }
    }

    /// A socket was accepted; it counts as open until the returned guard is dropped.
    pub fn accepted(self: &Arc<Self>) -> OpenSocket {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenSocket(self.clone())
    }

    pub fn refused_at_limit(&self) {
        self.refused_at_limit.fetch_add(1, Ordering::Relaxed);
    }

    pub fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: usize) {
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn write_stalled(&self) {
        self.write_stalls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sample(&self) -> ListenerSample {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ListenerSample {
            name: self.name.clone(),
            open: read(&self.open),
            accepted: read(&self.accepted),
            refused_at_limit: read(&self.refused_at_limit),
            handshakes_failed: read(&self.handshakes_failed),
            bytes_received: read(&self.bytes_received),
            bytes_sent: read(&self.bytes_sent),
            write_stalls: read(&self.write_stalls),
        }
    }
}

/// An accepted socket, counted as open while this lives.
#[derive(Debug)]
pub struct OpenSocket(Arc<ListenerMetrics>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A histogram with fixed bucket bounds, in whole units (microseconds, operations).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending; values above the last fall in `+Inf`.
    bounds: &'static [u64],
    /// One per bound, plus `+Inf`: not cumulative (the sample makes them so).
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
}

/// What a histogram read at one moment: cumulative counts per bound, as Prometheus wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSample {
    /// (upper bound, observations at or below it), ascending; `+Inf` is `count`.
    pub buckets: Vec<(u64, u64)>,
    pub count: u64,
    pub sum: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let index = self.bounds.partition_point(|&bound| bound < value);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn sample(&self) -> HistogramSample {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative
            + self
                .buckets
                .last()
                .expect("one bucket past the bounds")
                .load(Ordering::Relaxed);
        HistogramSample {
            buckets,
            count,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// Commit durations in microseconds: 50 µs (a page-cache commit) to 5 s (a dying disk).
const COMMIT_MICROS_BOUNDS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Store operations per commit (group commit gathers many inputs' batches).
const COMMIT_OPS_BOUNDS: &[u64] = &[1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000];

/// The storage task's counters.
#[derive(Debug)]
pub struct StoreMetrics {
    /// How long each commit took, fsync included.
    pub commit_micros: Histogram,
    /// Operations written by each commit.
    pub commit_ops: Histogram,
    /// Commits that failed (a full disk is retried; anything else stops the broker).
    commit_failures: AtomicU64,
}

impl Default for StoreMetrics {
    fn default() -> StoreMetrics {
        StoreMetrics {
            commit_micros: Histogram::new(COMMIT_MICROS_BOUNDS),
            commit_ops: Histogram::new(COMMIT_OPS_BOUNDS),
            commit_failures: AtomicU64::new(0),
        }
    }
}

impl StoreMetrics {
    /// One commit of `ops` operations took `took`.
    pub fn committed(&self, ops: usize, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commit_micros.observe(micros);
        self.commit_ops.observe(ops as u64);
    }

    pub fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sample(&self) -> StoreSample {
        StoreSample {
            commit_micros: self.commit_micros.sample(),
            commit_ops: self.commit_ops.sample(),
            commit_failures: self.commit_failures.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSample {
    pub commit_micros: HistogramSample,
    pub commit_ops: HistogramSample,
    pub commit_failures: u64,
}

/// Every counter the driver keeps, shared by its tasks.
#[derive(Debug)]
pub struct DriverMetrics {
    /// By listener index.
    pub listeners: Vec<Arc<ListenerMetrics>>,
    pub store: StoreMetrics,
    /// Times the core waited for room in a connection's outbound queue (a slow reader).
    outbound_waits: AtomicU64,
    /// Reads the log writer's count of dropped lines, when the owner gave one.
    log_drops: OnceLock<LogDrops>,
}

/// How the log writer's dropped lines are read (a function: the writer is the binary's).
struct LogDrops(Box<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for LogDrops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogDrops")
    }
}

impl DriverMetrics {
    /// Counters for listeners named `names` (in the order of their indexes).
    pub fn new(names: Vec<String>) -> DriverMetrics {
        DriverMetrics {
            listeners: names
                .into_iter()
                .map(|name| Arc::new(ListenerMetrics::new(name)))
                .collect(),
            store: StoreMetrics::default(),
            outbound_waits: AtomicU64::new(0),
            log_drops: OnceLock::new(),
        }
    }

    /// Reads dropped log lines with `dropped` from now on (the first call wins).
    pub fn count_log_drops(&self, dropped: Box<dyn Fn() -> u64 + Send + Sync>) {
        let _ = self.log_drops.set(LogDrops(dropped));
    }

    pub fn outbound_wait(&self) {
        self.outbound_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sample(&self) -> DriverSample {
        DriverSample {
            listeners: self.listeners.iter().map(|l| l.sample()).collect(),
            store: self.store.sample(),
            outbound_waits: self.outbound_waits.load(Ordering::Relaxed),
            log_lines_dropped: self.log_drops.get().map_or(0, |read| (read.0)()),
            event_queue_depth: 0,
            store_batches_pending: 0,
        }
    }
}

/// The driver's counters at one moment, with what the broker task adds (its queue depths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverSample {
    pub listeners: Vec<ListenerSample>,
    pub store: StoreSample,
    pub outbound_waits: u64,
    /// Log lines the log writer dropped because it could not keep up.
    pub log_lines_dropped: u64,
    /// Events from connection tasks waiting for the core.
    pub event_queue_depth: u64,
    /// Batches handed to the store and not yet durable.
    pub store_batches_pending: u64,
}

impl DriverSample {
    pub fn bytes_received(&self) -> u64 {
        self.listeners.iter().map(|l| l.bytes_received).sum()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.listeners.iter().map(|l| l.bytes_sent).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[10, 100]);
        for v in [0, 10, 11, 100, 101, 5_000] {
            h.observe(v);
        }
        let s = h.sample();
        assert_eq!(s.buckets, vec![(10, 2), (100, 4)]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 5_222);
    }

    #[test]
    fn open_sockets_count_down_when_the_guard_goes() {
        let l = Arc::new(ListenerMetrics::new("mqtt://x".into()));
        let a = l.accepted();
        let b = l.accepted();
        assert_eq!(l.sample().open, 2);
        drop(a);
        assert_eq!(l.sample().open, 1);
        assert_eq!(l.sample().accepted, 2);
        drop(b);
        assert_eq!(l.sample().open, 0);
    }
}
