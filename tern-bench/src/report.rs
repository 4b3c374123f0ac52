//! What a run prints, and whether it passed.

use std::fmt;

use hdrhistogram::Histogram;
use tern::types::QoS;

use crate::ledger::Verdict;

#[derive(Debug)]
pub struct Report {
    pub scenario: String,
    pub qos: QoS,
    /// Messages sent by all publishers, and acknowledged by the broker.
    pub sent: u64,
    pub acked: u64,
    /// Deliveries counted in the measured window, and its length.
    pub measured: u64,
    pub seconds: f64,
    pub latency_us: Histogram<u64>,
    /// All subscribers' verdicts, summed.
    pub verdict: Verdict,
    /// The broker's CPU use over the measured window (1.0 = one core) and its largest RSS.
    pub broker_cpu: Option<f64>,
    pub broker_rss_bytes: Option<u64>,
    /// Idle scenario: connections held, and broker memory per connection.
    pub connections: Option<u64>,
    pub bytes_per_connection: Option<f64>,
}

/// Publish-to-delivery latency in microseconds: 1 µs to a minute, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

impl Report {
    pub fn msgs_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.measured as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Loss of an acknowledged QoS 1/2 message, a QoS 2 duplicate or reordering.
    pub fn failed(&self) -> bool {
        self.verdict.failed(self.qos)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario      {} qos {}", self.scenario, self.qos as u8)?;
        if let (Some(n), Some(per)) = (self.connections, self.bytes_per_connection) {
            writeln!(f, "connections   {n}")?;
            writeln!(f, "broker memory {per:.0} bytes per connection")?;
        } else {
            writeln!(
                f,
                "throughput    {:.0} msg/s ({} deliveries in {:.1} s)",
                self.msgs_per_second(),
                self.measured,
                self.seconds
            )?;
            let h = &self.latency_us;
            if !h.is_empty() {
                writeln!(
                    f,
                    "latency       p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.9),
                    h.value_at_quantile(0.99),
                    h.value_at_quantile(0.999),
                    h.max()
                )?;
            }
            writeln!(
                f,
                "sent          {} (acknowledged {})",
                self.sent, self.acked
            )?;
            let v = &self.verdict;
            writeln!(
                f,
                "verified      {} received, {} lost, {} duplicates, {} out of order",
                v.received, v.lost, v.duplicates, v.out_of_order
            )?;
            if v.wrong_qos + v.misrouted + v.unacknowledged > 0 {
                writeln!(
                    f,
                    "wrong         {} at another QoS, {} misrouted, {} never acknowledged",
                    v.wrong_qos, v.misrouted, v.unacknowledged
                )?;
            }
        }
        if let Some(cpu) = self.broker_cpu {
            writeln!(f, "broker cpu    {:.0}% of one core", cpu * 100.0)?;
        }
        if let Some(rss) = self.broker_rss_bytes {
            writeln!(f, "broker rss    {:.1} MiB", rss as f64 / (1024.0 * 1024.0))?;
        }
        let outcome = if self.failed() { "FAILED" } else { "ok" };
        write!(f, "result        {outcome}")
    }
}
