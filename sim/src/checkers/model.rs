//! What several checkers need to know about a run, rebuilt from the trace: which client id a
//! host uses, the subscriptions each session holds, which faults touched which hosts when, and
//! whether a host stayed connected through a stretch of time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tern::codec::{ConnAck, Connect, Packet, ProtocolVersion};
use tern::topic::filter_matches;

use crate::scenario::Scenario;
use crate::trace::{Entry, Event, Trace};

/// The client id a host connects with.
pub fn client_id(scenario: &Scenario, host: &str) -> String {
    scenario
        .clients
        .get(host)
        .and_then(|c| c.id.clone())
        .unwrap_or_else(|| host.to_string())
}

/// The (topic, payload) pair that names a message in a scenario.
pub fn message_key(topic: &str, payload: &[u8]) -> (String, String) {
    (
        topic.to_string(),
        String::from_utf8_lossy(payload).into_owned(),
    )
}

/// Filters each client id holds in its current session, as its clients saw them granted.
pub struct Subscriptions {
    /// client id -> filter -> granted QoS
    pub granted: BTreeMap<String, BTreeMap<String, u8>>,
    /// Which CONNACKs start a new session.
    connects: Connects,
    /// client id -> (host whose CONNECT started a new session, the filters held before): the
    /// connection it took over may still get messages sent under the old filters.
    replaced: BTreeMap<String, (String, BTreeMap<String, u8>)>,
    pending: BTreeMap<(String, u16), Vec<String>>,
    /// Forget a filter as soon as it may be gone (unsubscribed, or lost in a broker crash).
    /// The delivery checker keeps it: messages already under way may still arrive.
    forget_early: bool,
    /// The broker has a store: a crash keeps the subscriptions of persistent sessions.
    persistence: bool,
}

impl Subscriptions {
    pub fn new(forget_early: bool) -> Subscriptions {
        Subscriptions {
            granted: BTreeMap::new(),
            connects: Connects::default(),
            replaced: BTreeMap::new(),
            pending: BTreeMap::new(),
            forget_early,
            persistence: false,
        }
    }

    /// The same, for a broker with (or without) a store.
    pub fn with_persistence(mut self, persistence: bool) -> Subscriptions {
        self.persistence = persistence;
        self
    }

    pub fn observe(&mut self, id: &str, host: &str, event: &Event) {
        match event {
            Event::Sent(Packet::Connect(c)) => self.connects.connect(host, c),
            Event::Received(Packet::ConnAck(ack)) if !ack.reason_code.is_error() => {
                // Told of every accepted CONNECT (it tracks which sessions outlive theirs).
                let fresh = self.connects.connected(host, id, ack);
                if fresh {
                    let old = self.granted.remove(id).unwrap_or_default();
                    self.replaced
                        .insert(id.to_string(), (host.to_string(), old));
                }
            }
            // A crashed broker comes back without sessions, or with a store only with those
            // that outlive their connections.
            Event::Fault(f) if self.forget_early && Fault::parse(f).is_broker_crash() => {
                let connects = &self.connects;
                let keep = |id: &String| self.persistence && connects.outlives(id);
                self.granted.retain(|id, _| keep(id));
            }
            Event::Sent(Packet::Subscribe(s)) => {
                let filters = s.filters.iter().map(|(f, _)| f.to_string()).collect();
                self.pending
                    .insert((id.to_string(), s.packet_id.get()), filters);
            }
            Event::Received(Packet::SubAck(ack)) => {
                if let Some(filters) = self.pending.remove(&(id.to_string(), ack.packet_id.get())) {
                    for (filter, code) in filters.into_iter().zip(&ack.reason_codes) {
                        if !code.is_error() {
                            self.granted
                                .entry(id.to_string())
                                .or_default()
                                .insert(filter, *code as u8);
                        }
                    }
                }
            }
            Event::Sent(Packet::Unsubscribe(u)) if self.forget_early => {
                if let Some(filters) = self.granted.get_mut(id) {
                    for f in &u.filters {
                        filters.remove(f.as_str());
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether any filter `id` holds matches `topic`.
    pub fn matches(&self, id: &str, topic: &str) -> bool {
        self.granted.get(id).is_some_and(|filters| {
            filters
                .keys()
                .any(|f| filter_matches(shared_or_plain(f).1, topic))
        })
    }

    /// Whether a message on `topic` may reach `host` (of client id `id`): a filter the id holds
    /// matches, or the host's connection was taken over by a new session of the id and a
    /// filter of the old session matched (a message already under way to it).
    pub fn may_reach(&self, id: &str, host: &str, topic: &str) -> bool {
        self.matches(id, topic)
            || self.replaced.get(id).is_some_and(|(by, old)| {
                by != host
                    && old
                        .keys()
                        .any(|f| filter_matches(shared_or_plain(f).1, topic))
            })
    }

    /// How many of `id`'s subscriptions match `topic`: the copies of one message it may get
    /// (the spec allows one per matching subscription, [MQTT-3.3.4-2]).
    pub fn matching(&self, id: &str, topic: &str) -> usize {
        self.granted.get(id).map_or(0, |filters| {
            filters
                .keys()
                .filter(|f| filter_matches(shared_or_plain(f).1, topic))
                .count()
        })
    }

    /// Whether `id` has a non-shared subscription matching `topic`.
    pub fn has_plain_match(&self, id: &str, topic: &str) -> bool {
        self.granted.get(id).is_some_and(|filters| {
            filters
                .keys()
                .any(|f| shared_or_plain(f).0.is_none() && filter_matches(f, topic))
        })
    }

    /// Client ids with a non-shared subscription of QoS 1 or more matching `topic`.
    pub fn at_least_once(&self, topic: &str) -> Vec<String> {
        self.granted
            .iter()
            .filter(|(_, filters)| {
                filters.iter().any(|(f, qos)| {
                    *qos >= 1 && shared_or_plain(f).0.is_none() && filter_matches(f, topic)
                })
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// For each shared subscription (`$share/{group}/{filter}`) matching `topic` that some
    /// member holds at QoS 1 or more, all the client ids in it: the message is owed to one of
    /// them (the broker may pick a QoS 0 member; a copy to any member settles it).
    pub fn shared_at_least_once(&self, topic: &str) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<&str, (bool, Vec<String>)> = BTreeMap::new();
        for (id, filters) in &self.granted {
            for (f, qos) in filters {
                if let (Some(_), inner) = shared_or_plain(f) {
                    if filter_matches(inner, topic) {
                        let group = groups.entry(f).or_default();
                        group.0 |= *qos >= 1;
                        group.1.push(id.clone());
                    }
                }
            }
        }
        groups
            .into_iter()
            .filter(|(_, (owed, _))| *owed)
            .map(|(group, (_, members))| (group.to_string(), members))
            .collect()
    }
}

/// Which successful CONNACKs start a new session. A clean start does; otherwise the CONNACK's
/// session-present flag says, except in MQTT 3.1, which has no such flag (always 0): there the
/// session is resumed only if the client id's session before outlived its connection (clean
/// session 0). One that did not ended with that connection, even when the new CONNECT is the
/// one that took it over (explorer seed 729863).
#[derive(Default)]
pub struct Connects {
    /// host -> its last CONNECT (a CONNECT and its CONNACK are one host's)
    last: BTreeMap<String, Connecting>,
    /// Client ids whose last accepted CONNECT asked for a session that outlives its connection.
    persistent: BTreeSet<String>,
}

#[derive(Clone, Copy, Default)]
struct Connecting {
    v31: bool,
    clean: bool,
    outlives: bool,
}

impl Connects {
    /// A host sent a CONNECT.
    pub fn connect(&mut self, host: &str, c: &Connect) {
        let outlives = if c.protocol.is_v5() {
            c.properties.session_expiry_interval().unwrap_or(0) > 0
        } else {
            !c.clean_start
        };
        let connecting = Connecting {
            v31: c.protocol == ProtocolVersion::V3_1,
            clean: c.clean_start,
            outlives,
        };
        self.last.insert(host.to_string(), connecting);
    }

    /// A host's CONNECT was accepted as client id `id`: whether that starts a new session.
    pub fn connected(&mut self, host: &str, id: &str, ack: &ConnAck) -> bool {
        let c = self.last.get(host).copied().unwrap_or_default();
        let fresh = c.clean
            || if c.v31 {
                !self.persistent.contains(id)
            } else {
                !ack.session_present
            };
        if c.outlives {
            self.persistent.insert(id.to_string());
        } else {
            self.persistent.remove(id);
        }
        fresh
    }

    /// Whether `id`'s session outlives its connection (as its last accepted CONNECT asked).
    pub fn outlives(&self, id: &str) -> bool {
        self.persistent.contains(id)
    }
}

/// The entries of successful CONNACKs that start a new session for their client id.
pub fn session_starts(scenario: &Scenario, trace: &Trace) -> BTreeSet<usize> {
    let mut connects = Connects::default();
    let mut starts = BTreeSet::new();
    for (i, e) in trace.entries.iter().enumerate() {
        match &e.event {
            Event::Sent(Packet::Connect(c)) => connects.connect(&e.host, c),
            Event::Received(Packet::ConnAck(ack)) if !ack.reason_code.is_error() => {
                let fresh = connects.connected(&e.host, &client_id(scenario, &e.host), ack);
                if fresh {
                    starts.insert(i);
                }
            }
            _ => {}
        }
    }
    starts
}

/// A `$share/{group}/{filter}` subscription split into (Some(group), filter); any other
/// filter as (None, filter).
pub fn shared_or_plain(filter: &str) -> (Option<&str>, &str) {
    match tern::topic::parse_shared(filter) {
        Ok(Some((group, inner))) => (Some(group), inner),
        _ => (None, filter),
    }
}

/// A fault the director recorded, parsed: its kind and the hosts it names, exactly (a host
/// called `p` is not touched by a partition of `pub`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: String,
    pub hosts: Vec<String>,
    /// What follows the hosts: a latency (`50ms`) or a loss rate (`0.1`).
    pub value: Option<String>,
}

impl Fault {
    /// Parses the director's fault lines: `partition a <-> b`, `partition a -> b`, `repair ...`,
    /// `hold a <-> b`, `release ...`, `latency a <-> b 50ms`, `loss a <-> b 0.1`, `crash h`,
    /// `restart h`. Anything else (a client's `raw bytes`) has no hosts.
    pub fn parse(text: &str) -> Fault {
        let words: Vec<&str> = text.split(' ').collect();
        let kind = words[0].to_string();
        let (hosts, value) = match (kind.as_str(), words.as_slice()) {
            (
                "partition" | "repair" | "hold" | "release" | "latency" | "loss",
                [_, a, "<->" | "->", b, rest @ ..],
            ) => (vec![a.to_string(), b.to_string()], rest.first()),
            ("crash" | "restart", [_, h]) => (vec![h.to_string()], None),
            // A disk fault is the broker's; the value says which.
            ("disk", [_, what]) => (vec!["broker".to_string()], Some(what)),
            _ => (Vec::new(), None),
        };
        Fault {
            kind,
            hosts,
            value: value.map(|v| v.to_string()),
        }
    }

    /// A crash of the broker, or a disk fault that stops it the same way (a failed fsync, a
    /// power failure during one).
    pub fn is_broker_crash(&self) -> bool {
        (self.kind == "crash" && self.touches("broker"))
            || (self.kind == "disk"
                && matches!(self.value.as_deref(), Some("fail_fsync" | "tear_write")))
    }

    /// Whether `event` is a fault that crashes the broker.
    pub fn crashes_broker(event: &Event) -> bool {
        matches!(event, Event::Fault(f) if Fault::parse(f).is_broker_crash())
    }

    /// Whether this fault names `host`.
    pub fn touches(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }

    /// A fault on the network path between a client host and the broker: on its link, on the
    /// host itself, or a crash or restart of the broker.
    pub fn disturbs(&self, host: &str) -> bool {
        self.touches(host) || (self.touches("broker") && self.hosts.len() == 1)
    }
}

/// The faults of a run, in order, for questions about time spans.
pub struct Faults {
    faults: Vec<(usize, Duration, Fault)>,
    /// The longest one-way delay a link may have had: the random-latency bound or the largest
    /// `latency` step.
    pub latency_max: Duration,
}

impl Faults {
    pub fn of(trace: &Trace) -> Faults {
        let mut latency_max = crate::scenario::RANDOM_LATENCY_MAX;
        let faults: Vec<(usize, Duration, Fault)> = trace
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.event {
                Event::Fault(text) => Some((i, e.at, Fault::parse(text))),
                _ => None,
            })
            .collect();
        for (_, _, f) in &faults {
            if f.kind == "latency" {
                let latency = f.value.as_deref().and_then(|v| {
                    crate::scenario::parse_duration(v)
                        .ok()
                        .or_else(|| parse_debug_duration(v))
                });
                latency_max = latency_max.max(latency.unwrap_or(Duration::from_secs(3600)));
            }
        }
        Faults {
            faults,
            latency_max,
        }
    }

    /// Whether the path between `host` and the broker was undisturbed from entry `from` to
    /// simulated time `until`: no fault that names it happened in between, and none that
    /// degrades a link (a partition, a hold, loss, latency) was in force at `from`.
    pub fn stable(&self, host: &str, from: usize, from_at: Duration, until: Duration) -> bool {
        let mut degraded: BTreeSet<String> = BTreeSet::new();
        for (i, at, f) in &self.faults {
            if !f.disturbs(host) {
                continue;
            }
            if *i >= from || *at >= from_at {
                if *at <= until {
                    return false;
                }
                break;
            }
            let link = f.hosts.join(" ");
            match f.kind.as_str() {
                "partition" | "hold" | "latency" => {
                    degraded.insert(link);
                }
                "loss" if f.value.as_deref() != Some("0") => {
                    degraded.insert(link);
                }
                "repair" | "release" | "loss" => {
                    degraded.remove(&link);
                }
                _ => {}
            }
        }
        degraded.is_empty()
    }

    /// Whether the broker crashed between entries `from` and `to`.
    pub fn broker_crashed_between(&self, from: usize, to: usize) -> bool {
        self.faults
            .iter()
            .any(|(i, _, f)| *i > from && *i < to && f.is_broker_crash())
    }

    /// Whether any partition or hold is still in force at the end of the run.
    pub fn any_active_at_end(&self) -> bool {
        let mut active: BTreeSet<String> = BTreeSet::new();
        for (_, _, f) in &self.faults {
            let link = f.hosts.join(" ");
            match f.kind.as_str() {
                "partition" | "hold" => {
                    active.insert(link);
                }
                "repair" | "release" => {
                    active.remove(&link);
                }
                _ => {}
            }
        }
        !active.is_empty()
    }
}

/// `Duration`'s debug form as the director writes latencies (`50ms`, `1.5s`).
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    number
        .parse::<f64>()
        .ok()
        .map(|v| Duration::from_secs_f64(v * scale))
}

/// Whether `host` has a live connection at entry `index`: its last CONNACK success came after
/// its last CONNECT, no close followed, and neither a crash of the host nor a fault that drops
/// data on its link (a partition, loss) came since. Turmoil's TCP does not retransmit, so a
/// connection that lost data is stalled for good even if its client never hears of it.
pub fn connected_at(trace: &Trace, host: &str, index: usize) -> bool {
    trace.entries[..index]
        .iter()
        .rev()
        .filter(|e| e.host == host)
        .find_map(|e| match &e.event {
            Event::Received(Packet::ConnAck(a)) => Some(!a.reason_code.is_error()),
            Event::Closed { .. } | Event::Sent(Packet::Connect(_)) => Some(false),
            _ => None,
        })
        .unwrap_or(false)
        && !crashed_between(trace, host, index)
}

/// Whether a crash of `host` or a data-dropping fault on its link came after its last CONNACK
/// before `index`.
fn crashed_between(trace: &Trace, host: &str, index: usize) -> bool {
    let last_connack = trace.entries[..index]
        .iter()
        .rposition(|e| e.host == host && matches!(e.event, Event::Received(Packet::ConnAck(_))));
    trace.entries[last_connack.unwrap_or(0)..index]
        .iter()
        .any(|e| is_crash_of(e, host) || drops_data_of(e, host))
}

/// Whether `e` is a partition of, or loss on, `host`'s link.
fn drops_data_of(e: &Entry, host: &str) -> bool {
    let Event::Fault(f) = &e.event else {
        return false;
    };
    let f = Fault::parse(f);
    f.touches(host)
        && (f.kind == "partition" || (f.kind == "loss" && f.value.as_deref() != Some("0")))
}

pub fn is_crash_of(e: &Entry, host: &str) -> bool {
    matches!(&e.event, Event::Fault(f) if { let f = Fault::parse(f); f.kind == "crash" && f.touches(host) })
}

/// Whether `host`, connected at entry `index`, keeps that connection until simulated time
/// `until`, and the run lasts that long.
pub fn stays_connected(trace: &Trace, host: &str, index: usize, until: Duration) -> bool {
    let end = trace.entries.last().map(|e| e.at).unwrap_or_default();
    end >= until
        && connected_at(trace, host, index)
        && !trace.entries[index..].iter().any(|e| {
            e.at <= until
                && ((e.host == host
                    && matches!(
                        e.event,
                        Event::Closed { .. } | Event::Sent(Packet::Connect(_))
                    ))
                    || is_crash_of(e, host)
                    || drops_data_of(e, host))
        })
}
