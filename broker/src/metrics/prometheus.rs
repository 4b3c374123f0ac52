//! The snapshot as Prometheus text (format 0.0.4, or OpenMetrics when the scraper asks),
//! through `prometheus-client`: a registry made per scrape, holding one collector that encodes
//! the snapshot. No process-global registry, so several servers (or simulated hosts) never
//! share one.
//!
//! Names follow Prometheus conventions: `tern_` prefix, the unit in the name, `_total` on
//! counters (added by the encoder). [`series`] is the one list of metrics: the encoder, the
//! README's table and its test all read it.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{HistogramSample, Snapshot};

/// The content type of [`encode`]'s output for each format.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a metric's values are kept.
#[derive(Debug, Clone)]
pub enum Values {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, u64)>),
    /// Buckets in whole units, shown divided by `scale` (microseconds as seconds: 1e6).
    Histogram {
        sample: HistogramSample,
        scale: f64,
    },
}

pub type Labels = Vec<(&'static str, String)>;

/// One metric family: its name without the unit or `_total`, its help and its values.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: &'static str,
    pub unit: Option<&'static str>,
    pub help: &'static str,
    pub values: Values,
}

impl Series {
    /// The name a scraper sees (unit and `_total` included).
    pub fn full_name(&self) -> String {
        let mut name = self.name.to_owned();
        if let Some(unit) = self.unit {
            name = format!("{name}_{unit}");
        }
        if let Values::Counter(_) = self.values {
            name.push_str("_total");
        }
        name
    }
}

fn one(value: impl TryInto<u64>) -> Vec<(Labels, u64)> {
    vec![(Vec::new(), value.try_into().unwrap_or(u64::MAX))]
}

fn counter(name: &'static str, help: &'static str, value: u64) -> Series {
    Series {
        name,
        unit: None,
        help,
        values: Values::Counter(one(value)),
    }
}

fn gauge(name: &'static str, help: &'static str, value: impl TryInto<u64>) -> Series {
    Series {
        name,
        unit: None,
        help,
        values: Values::Gauge(one(value)),
    }
}

fn bytes(mut series: Series) -> Series {
    series.unit = Some("bytes");
    series
}

fn by(label: &'static str, values: &[(&str, u64)]) -> Vec<(Labels, u64)> {
    values
        .iter()
        .map(|(name, value)| (vec![(label, (*name).to_owned())], *value))
        .collect()
}

fn family(name: &'static str, help: &'static str, values: Vec<(Labels, u64)>) -> Series {
    Series {
        name,
        unit: None,
        help,
        values: Values::Counter(values),
    }
}

/// Every metric, with its values in `s`.
pub fn series(s: &Snapshot) -> Vec<Series> {
    let mut all = core_series(s);
    all.extend(driver_series(s));
    all
}

/// The core's metrics. Long on purpose: one entry per metric, name, help and value side by
/// side, so the list reads as the catalogue it is (split, it would be harder to check).
fn core_series(s: &Snapshot) -> Vec<Series> {
    let st = &s.core.stats;
    let per_qos = |counts: &crate::core::PerQos| {
        use crate::types::QoS::*;
        by(
            "qos",
            &[
                ("0", counts.get(AtMostOnce)),
                ("1", counts.get(AtLeastOnce)),
                ("2", counts.get(ExactlyOnce)),
            ],
        )
    };
    vec![
        counter(
            "tern_connections_accepted",
            "CONNECTs answered with a successful CONNACK.",
            st.connections_accepted,
        ),
        counter(
            "tern_connections_refused",
            "CONNECTs answered with a refusing CONNACK.",
            st.connections_refused,
        ),
        counter(
            "tern_bridge_connections_accepted",
            "Connections accepted from other brokers' bridges.",
            st.bridge_connections_accepted,
        ),
        counter(
            "tern_takeovers",
            "Connections closed because another took their client id.",
            st.takeovers,
        ),
        family(
            "tern_disconnections",
            "Connections that ended, by who ended them (DISCONNECT, network, broker).",
            by(
                "by",
                &[
                    ("client", st.disconnects),
                    ("network", st.connections_lost),
                    ("broker", st.connections_closed),
                ],
            ),
        ),
        counter(
            "tern_keep_alive_timeouts",
            "Connections closed for a silent client (1.5 times its keep alive).",
            st.keep_alive_timeouts,
        ),
        counter(
            "tern_malformed_packets",
            "Packets the codec refused (the connection is closed).",
            st.malformed_packets,
        ),
        counter(
            "tern_packets_received",
            "MQTT packets of every type received.",
            st.packets_received,
        ),
        counter(
            "tern_packets_sent",
            "MQTT packets of every type sent.",
            st.packets_sent,
        ),
        family(
            "tern_messages_received",
            "Application messages received (PUBLISH and wills), by QoS.",
            per_qos(&st.messages_received),
        ),
        family(
            "tern_messages_sent",
            "Deliveries sent for the first time, by QoS.",
            per_qos(&st.messages_sent),
        ),
        bytes(counter(
            "tern_publish_received",
            "Payload bytes of the messages received.",
            st.publish_bytes_received,
        )),
        bytes(counter(
            "tern_publish_sent",
            "Payload bytes of the deliveries sent.",
            st.publish_bytes_sent,
        )),
        counter(
            "tern_messages_resent",
            "PUBLISHes sent again (DUP) after a reconnect or restart.",
            st.messages_resent,
        ),
        counter(
            "tern_deliveries",
            "Messages handed to a session (one per receiving session).",
            st.deliveries,
        ),
        counter(
            "tern_deliveries_restored",
            "Queued deliveries read back from the store at start.",
            st.deliveries_restored,
        ),
        counter(
            "tern_deliveries_moved",
            "Queued shared-subscription deliveries moved to another member.",
            st.deliveries_moved,
        ),
        family(
            "tern_messages_dropped",
            "Deliveries not made, by reason.",
            by(
                "reason",
                &[
                    ("queue_full", st.messages_dropped_queue_full),
                    ("memory", st.messages_dropped_memory),
                    ("expired", st.messages_dropped_expired),
                    ("too_large", st.messages_dropped_too_large),
                    ("slow_consumer_qos0", st.qos0_dropped_slow_consumer),
                    ("offline_qos0", st.qos0_dropped_offline),
                    ("session_ended", st.messages_discarded),
                    ("not_authorized", st.deliveries_denied),
                    (
                        "no_shared_member",
                        st.shared_unclaimed + st.shared_dropped_no_member,
                    ),
                ],
            ),
        ),
        family(
            "tern_publishes_refused",
            "PUBLISHes refused (v5: a reason code; 3.x: closed, or acked and dropped).",
            by(
                "reason",
                &[
                    ("memory", st.publishes_refused_memory),
                    ("store_full", st.publishes_refused_store_full),
                    ("not_authorized", st.publishes_denied),
                ],
            ),
        ),
        counter(
            "tern_retained_refused",
            "Retained messages not stored (limits, memory, full store).",
            st.retained_refused,
        ),
        counter(
            "tern_wills_published",
            "Wills published.",
            st.wills_published,
        ),
        counter(
            "tern_logins_failed",
            "CONNECTs refused for their credentials.",
            st.logins_failed,
        ),
        counter(
            "tern_authentications_failed",
            "Enhanced authentications (SCRAM) that failed.",
            st.authentications_failed,
        ),
        counter(
            "tern_subscriptions_denied",
            "SUBSCRIBE filters the ACL did not allow.",
            st.subscriptions_denied,
        ),
        counter(
            "tern_persistent_work_refused",
            "Persistent CONNECTs and subscriptions refused for a full store.",
            st.persistent_work_refused_store_full,
        ),
        counter(
            "tern_shared_handed_back",
            "Shared-subscription messages moved from a member that went away.",
            st.shared_handed_back,
        ),
        counter(
            "tern_slow_consumers_disconnected",
            "Connections closed for not reading their replies.",
            st.slow_consumers_disconnected,
        ),
        gauge(
            "tern_connections",
            "Open MQTT connections (including those before CONNECT).",
            s.core.connections,
        ),
        gauge(
            "tern_clients_connected",
            "Sessions with a connection.",
            s.core.clients_connected,
        ),
        gauge(
            "tern_sessions",
            "Sessions, connected or not.",
            s.core.sessions,
        ),
        gauge(
            "tern_subscriptions",
            "Subscriptions of all sessions.",
            s.core.subscriptions,
        ),
        gauge(
            "tern_retained_messages",
            "Retained messages.",
            s.core.retained_messages,
        ),
        bytes(gauge(
            "tern_retained",
            "Bytes of retained messages.",
            st.retained_bytes,
        )),
        gauge(
            "tern_queued_messages",
            "Deliveries waiting in session queues.",
            s.core.queued_messages,
        ),
        bytes(gauge(
            "tern_queued",
            "Bytes of queued deliveries.",
            st.queued_bytes,
        )),
        gauge(
            "tern_inflight_messages",
            "Deliveries sent and not yet acknowledged.",
            s.core.inflight_messages,
        ),
        bytes(gauge(
            "tern_inflight",
            "Bytes of unacknowledged deliveries.",
            st.inflight_bytes,
        )),
    ]
}

/// The driver's metrics: as long as its list of metrics, for the reason `core_series` is.
fn driver_series(s: &Snapshot) -> Vec<Series> {
    let d = &s.driver;
    let per_listener = |read: fn(&super::ListenerSample) -> u64| -> Vec<(Labels, u64)> {
        d.listeners
            .iter()
            .map(|l| (vec![("listener", l.name.clone())], read(l)))
            .collect()
    };
    vec![
        Series {
            name: "tern_listener_open_sockets",
            unit: None,
            help: "Sockets open on the listener (handshaking or serving).",
            values: Values::Gauge(per_listener(|l| l.open)),
        },
        family(
            "tern_listener_accepted_sockets",
            "Sockets accepted.",
            per_listener(|l| l.accepted),
        ),
        family(
            "tern_listener_refused_sockets",
            "Sockets closed at once: connections_max reached.",
            per_listener(|l| l.refused_at_limit),
        ),
        family(
            "tern_listener_handshake_failures",
            "TLS or WebSocket handshakes failed or timed out.",
            per_listener(|l| l.handshakes_failed),
        ),
        bytes(family(
            "tern_received",
            "MQTT bytes read (inside TLS and WebSocket).",
            per_listener(|l| l.bytes_received),
        )),
        bytes(family(
            "tern_sent",
            "MQTT bytes written (inside TLS and WebSocket).",
            per_listener(|l| l.bytes_sent),
        )),
        family(
            "tern_write_stalls",
            "Connections closed because a write made no progress.",
            per_listener(|l| l.write_stalls),
        ),
        counter(
            "tern_outbound_waits",
            "Times the core waited for room in a connection's outbound queue.",
            d.outbound_waits,
        ),
        counter(
            "tern_log_lines_dropped",
            "Log lines dropped because the log writer could not keep up.",
            d.log_lines_dropped,
        ),
        gauge(
            "tern_event_queue_depth",
            "Events from connections waiting for the core.",
            d.event_queue_depth,
        ),
        gauge(
            "tern_store_pending_batches",
            "Batches handed to the store, not yet durable.",
            d.store_batches_pending,
        ),
        Series {
            name: "tern_store_commit_duration",
            unit: Some("seconds"),
            help: "Duration of each store commit, fsync included.",
            values: Values::Histogram {
                sample: d.store.commit_micros.clone(),
                scale: 1e6,
            },
        },
        Series {
            name: "tern_store_commit_operations",
            unit: None,
            help: "Operations written by each store commit.",
            values: Values::Histogram {
                sample: d.store.commit_ops.clone(),
                scale: 1.0,
            },
        },
        counter(
            "tern_store_commit_failures",
            "Store commits that failed.",
            d.store.commit_failures,
        ),
        Series {
            name: "tern_uptime",
            unit: Some("seconds"),
            help: "Seconds since the broker started.",
            values: Values::Gauge(one(s.uptime.as_secs())),
        },
        Series {
            name: "tern_build_info",
            unit: None,
            help: "The broker's version (always 1).",
            values: Values::Gauge(vec![(
                vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
                1,
            )]),
        },
    ]
}

/// Encodes a snapshot for the registry.
#[derive(Debug)]
struct SnapshotCollector(Vec<Series>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for series in &self.0 {
            let unit = series.unit.map(|u| match u {
                "bytes" => Unit::Bytes,
                "seconds" => Unit::Seconds,
                other => Unit::Other(other.to_owned()),
            });
            let kind = match series.values {
                Values::Counter(_) => MetricType::Counter,
                Values::Gauge(_) => MetricType::Gauge,
                Values::Histogram { .. } => MetricType::Histogram,
            };
            let mut metric =
                encoder.encode_descriptor(series.name, series.help, unit.as_ref(), kind)?;
            match &series.values {
                Values::Counter(values) => {
                    for (labels, value) in values {
                        if labels.is_empty() {
                            metric.encode_counter::<NoLabelSet, _, u64>(value, None)?;
                        } else {
                            metric
                                .encode_family(labels)?
                                .encode_counter::<NoLabelSet, _, u64>(value, None)?;
                        }
                    }
                }
                Values::Gauge(values) => {
                    for (labels, value) in values {
                        if labels.is_empty() {
                            metric.encode_gauge(value)?;
                        } else {
                            metric.encode_family(labels)?.encode_gauge(value)?;
                        }
                    }
                }
                Values::Histogram { sample, scale } => {
                    // The encoders sum the buckets themselves: each gets its own count.
                    let mut below = 0;
                    let mut buckets: Vec<(f64, u64)> = Vec::new();
                    for (bound, cumulative) in &sample.buckets {
                        buckets.push((*bound as f64 / scale, cumulative - below));
                        below = *cumulative;
                    }
                    buckets.push((f64::INFINITY, sample.count - below));
                    metric.encode_histogram::<NoLabelSet>(
                        sample.sum as f64 / scale,
                        sample.count,
                        &buckets,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The snapshot as Prometheus text 0.0.4, or OpenMetrics text when `openmetrics`.
pub fn encode(snapshot: &Snapshot, openmetrics: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(series(snapshot))));
    let mut text = String::new();
    let encoded = if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
    };
    // Writing to a String cannot fail, and every name and label here is ours.
    encoded.expect("encoding metrics into a String");
    text
}

/// Every metric's full name (for the README's table and its test).
pub fn names() -> Vec<String> {
    series(&Snapshot::default())
        .iter()
        .map(Series::full_name)
        .collect()
}
