//! What an operator sees of a running broker: one [`Snapshot`] of every counter, taken by the
//! broker task when asked, rendered two ways, as Mosquitto's `$SYS` topics (`sys.rs`) and as
//! Prometheus text (`prometheus.rs`).
//!
//! The core keeps its counters as plain numbers (`core::Stats`, no clock, no globals) and
//! counts its gauges on demand (`core::Sample`); the driver keeps what only it sees (sockets,
//! bytes, stalled writes, commits) in atomics (`driver.rs`). Nothing here is process-global:
//! each server has its own, so a simulated host has its own too.

mod driver;
pub mod prometheus;
pub mod sys;

use std::time::Duration;

pub use driver::{
    DriverMetrics, DriverSample, HistogramSample, ListenerMetrics, ListenerSample, OpenSocket,
    StoreMetrics, StoreSample,
};

use crate::core::Sample;

/// Every counter of one broker at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub core: Sample,
    pub driver: DriverSample,
    /// Since the server started.
    pub uptime: Duration,
}

/// The broker's version as `$SYS/broker/version` and `tern_build_info` show it.
pub const VERSION: &str = concat!("tern version ", env!("CARGO_PKG_VERSION"));
