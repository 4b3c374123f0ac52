//! The `$SYS` tree: Mosquitto's topic names for the counters that have a counterpart there,
//! so dashboards and scripts written for Mosquitto read Tern too.
//!
//! The broker task takes a snapshot every `sys_interval_secs` and publishes (retained, QoS 0)
//! the values that changed since the last interval. The load averages are Mosquitto's:
//! exponentially damped averages of the per-minute rate over 1, 5 and 15 minutes, updated
//! once per interval.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::{Snapshot, VERSION};

/// The windows of the load averages, as their topics name them.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// The `$SYS` state of one broker: the last values published and the load averages.
#[derive(Debug, Default)]
pub struct SysTree {
    published: BTreeMap<String, Bytes>,
    /// The last snapshot's counters behind each load series, and when it was taken.
    previous: Option<(Duration, Vec<u64>)>,
    /// Per series, per window: the damped per-minute rate.
    loads: Vec<[f64; 3]>,
    /// The most clients connected at once, as seen at the intervals.
    clients_maximum: usize,
}

/// The series with a load average: (topic part, the counter it follows).
fn load_series(s: &Snapshot) -> Vec<(&'static str, u64)> {
    let stats = &s.core.stats;
    vec![
        ("messages/received", stats.packets_received),
        ("messages/sent", stats.packets_sent),
        ("publish/received", stats.messages_received.total()),
        ("publish/sent", stats.messages_sent.total()),
        ("publish/dropped", stats.deliveries_dropped()),
        ("bytes/received", s.driver.bytes_received()),
        ("bytes/sent", s.driver.bytes_sent()),
        (
            "sockets",
            s.driver.listeners.iter().map(|l| l.accepted).sum(),
        ),
        ("connections", stats.connections_accepted),
    ]
}

/// Every `$SYS` topic Tern publishes with its value in `s` (the load averages excepted: see
/// [`SysTree::update`]). The README's table lists the same topics.
pub fn values(s: &Snapshot, clients_maximum: usize) -> Vec<(String, String)> {
    let stats = &s.core.stats;
    let core = &s.core;
    let stored = core.queued_messages + core.inflight_messages + core.retained_messages;
    let disconnected = core.sessions.saturating_sub(core.clients_connected);
    let plain = [
        ("version", VERSION.to_owned()),
        ("uptime", format!("{} seconds", s.uptime.as_secs())),
        ("clients/connected", core.clients_connected.to_string()),
        ("clients/active", core.clients_connected.to_string()),
        ("clients/disconnected", disconnected.to_string()),
        ("clients/inactive", disconnected.to_string()),
        ("clients/total", core.sessions.to_string()),
        ("clients/maximum", clients_maximum.to_string()),
        ("messages/received", stats.packets_received.to_string()),
        ("messages/sent", stats.packets_sent.to_string()),
        ("messages/stored", stored.to_string()),
        ("messages/inflight", core.inflight_messages.to_string()),
        ("store/messages/count", stored.to_string()),
        ("store/messages/bytes", stats.held_bytes().to_string()),
        (
            "publish/messages/received",
            stats.messages_received.total().to_string(),
        ),
        (
            "publish/messages/sent",
            stats.messages_sent.total().to_string(),
        ),
        (
            "publish/messages/dropped",
            stats.deliveries_dropped().to_string(),
        ),
        (
            "publish/bytes/received",
            stats.publish_bytes_received.to_string(),
        ),
        ("publish/bytes/sent", stats.publish_bytes_sent.to_string()),
        ("bytes/received", s.driver.bytes_received().to_string()),
        ("bytes/sent", s.driver.bytes_sent().to_string()),
        ("subscriptions/count", core.subscriptions.to_string()),
        (
            "retained messages/count",
            core.retained_messages.to_string(),
        ),
    ];
    plain
        .into_iter()
        .map(|(name, value)| (format!("$SYS/broker/{name}"), value))
        .collect()
}

impl SysTree {
    /// Folds `snapshot` into the load averages and returns the topics whose value changed
    /// since the last call (all of them the first time), with their new payloads.
    pub fn update(&mut self, snapshot: &Snapshot) -> Vec<(String, Bytes)> {
        self.clients_maximum = self.clients_maximum.max(snapshot.core.clients_connected);
        let mut all = values(snapshot, self.clients_maximum);
        all.extend(self.update_loads(snapshot));
        let mut changed = Vec::new();
        for (topic, value) in all {
            let payload = Bytes::from(value);
            if self.published.get(&topic) != Some(&payload) {
                self.published.insert(topic.clone(), payload.clone());
                changed.push((topic, payload));
            }
        }
        changed
    }

    /// `topic`'s last value did not reach the retained store: the next update publishes it
    /// whether it changed or not.
    pub fn forget(&mut self, topic: &str) {
        self.published.remove(topic);
    }

    /// Mosquitto's damped averages: each interval, `load = rate + e^(-interval/window) *
    /// (load - rate)`, with `rate` the interval's count per minute.
    fn update_loads(&mut self, snapshot: &Snapshot) -> Vec<(String, String)> {
        let series = load_series(snapshot);
        let counts: Vec<u64> = series.iter().map(|(_, count)| *count).collect();
        if self.loads.len() != series.len() {
            self.loads = vec![[0.0; 3]; series.len()];
        }
        if let Some((then, before)) = &self.previous {
            let interval = snapshot.uptime.saturating_sub(*then).as_secs_f64();
            if interval > 0.0 {
                for ((load, now), before) in self.loads.iter_mut().zip(&counts).zip(before) {
                    let rate = now.saturating_sub(*before) as f64 * 60.0 / interval;
                    for (value, (_, window)) in load.iter_mut().zip(WINDOWS) {
                        let damping = (-interval / window).exp();
                        *value = rate + damping * (*value - rate);
                    }
                }
            }
        }
        self.previous = Some((snapshot.uptime, counts));
        let mut out = Vec::new();
        for ((name, _), load) in series.iter().zip(&self.loads) {
            for (value, (window, _)) in load.iter().zip(WINDOWS) {
                out.push((
                    format!("$SYS/broker/load/{name}/{window}"),
                    format!("{value:.2}"),
                ));
            }
        }
        out
    }
}

/// Every `$SYS` topic Tern may publish (for the README's table and its test).
pub fn topics() -> Vec<String> {
    let snapshot = Snapshot::default();
    let mut topics: Vec<String> = values(&snapshot, 0).into_iter().map(|(t, _)| t).collect();
    for (name, _) in load_series(&snapshot) {
        for (window, _) in WINDOWS {
            topics.push(format!("$SYS/broker/load/{name}/{window}"));
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(secs: u64, packets: u64) -> Snapshot {
        let mut s = Snapshot {
            uptime: Duration::from_secs(secs),
            ..Snapshot::default()
        };
        s.core.stats.packets_received = packets;
        s
    }

    fn value<'a>(changed: &'a [(String, Bytes)], topic: &str) -> Option<&'a str> {
        changed
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn only_changed_values_are_published_again() {
        let mut tree = SysTree::default();
        let first = tree.update(&snapshot(10, 5));
        assert_eq!(first.len(), topics().len(), "everything the first time");
        assert_eq!(value(&first, "$SYS/broker/messages/received"), Some("5"));
        let second = tree.update(&snapshot(10, 5));
        assert!(second.is_empty(), "nothing changed: {second:?}");
        let third = tree.update(&snapshot(20, 7));
        assert_eq!(value(&third, "$SYS/broker/messages/received"), Some("7"));
        assert_eq!(value(&third, "$SYS/broker/uptime"), Some("20 seconds"));
        assert_eq!(value(&third, "$SYS/broker/version"), None);
    }

    #[test]
    fn load_averages_follow_the_rate_as_mosquitto_damps_it() {
        let mut tree = SysTree::default();
        tree.update(&snapshot(0, 0));
        // 600 packets in 60 s: 600 per minute, after one full window the 1-minute average is
        // 600 * (1 - e^-1) = 379.27.
        let changed = tree.update(&snapshot(60, 600));
        assert_eq!(
            value(&changed, "$SYS/broker/load/messages/received/1min"),
            Some("379.27")
        );
        // A steady rate converges.
        for minute in 2..=60 {
            tree.update(&snapshot(60 * minute, 600 * minute));
        }
        tree.update(&snapshot(60 * 61, 600 * 61));
        let published = |topic: &str| -> f64 {
            std::str::from_utf8(&tree.published[topic])
                .unwrap()
                .parse()
                .unwrap()
        };
        let slowest = published("$SYS/broker/load/messages/received/15min");
        // 61 intervals of 60 s: 600 * (1 - e^(-61/15)) = 589.72.
        assert!((slowest - 589.72).abs() < 0.01, "{slowest}");
        let fastest = published("$SYS/broker/load/messages/received/1min");
        assert!((fastest - 600.0).abs() < 0.01, "{fastest}");
    }

    #[test]
    fn every_topic_is_under_sys_broker() {
        for topic in topics() {
            assert!(topic.starts_with("$SYS/broker/"), "{topic}");
            assert!(!topic.contains(['+', '#']), "{topic} is not a topic name");
        }
    }
}
