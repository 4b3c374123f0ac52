//! Run-wide properties checked on every trace, whatever the steps say (DESIGN.md section 6).
//!
//! The checkers see what clients saw. They rely on one convention of scenario files: a
//! (topic, payload) pair names one message, so payloads are unique per topic unless a scenario
//! means to send the same message again.

use std::collections::{BTreeMap, BTreeSet};

use tern::codec::Packet;
use tern::topic::filter_matches;

use crate::scenario::Scenario;
use crate::trace::{Event, Trace};
use crate::world::Failure;

type Check = fn(&Scenario, &Trace) -> Result<(), (String, usize)>;

/// The checkers, by name.
pub const CHECKERS: &[(&str, Check)] = &[
    (
        "delivery-matches-subscription",
        delivery_matches_subscription,
    ),
    ("qos2-exactly-once", qos2_exactly_once),
    ("publisher-order", publisher_order),
    ("retained-model", retained_model),
    ("will-never-twice", will_never_twice),
];

pub fn check(scenario: &Scenario, trace: &Trace) -> Option<Failure> {
    for (name, check) in CHECKERS {
        if let Err((message, entry)) = check(scenario, trace) {
            return Some(Failure {
                checker: (*name).to_string(),
                message,
                at_entry: Some(entry),
            });
        }
    }
    None
}

/// The client id a host connects with.
fn client_id(scenario: &Scenario, host: &str) -> String {
    scenario
        .clients
        .get(host)
        .and_then(|c| c.id.clone())
        .unwrap_or_else(|| host.to_string())
}

/// Filters each client id holds in its current session, as its clients saw them granted.
struct Subscriptions {
    granted: BTreeMap<String, BTreeSet<String>>,
    pending: BTreeMap<(String, u16), Vec<String>>,
}

impl Subscriptions {
    fn new() -> Subscriptions {
        Subscriptions {
            granted: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    fn observe(&mut self, host: &str, event: &Event) {
        match event {
            Event::Received(Packet::ConnAck(ack)) if !ack.session_present => {
                self.granted.remove(host);
            }
            Event::Sent(Packet::Subscribe(s)) => {
                let filters = s.filters.iter().map(|(f, _)| f.to_string()).collect();
                self.pending
                    .insert((host.to_string(), s.packet_id.get()), filters);
            }
            Event::Received(Packet::SubAck(ack)) => {
                if let Some(filters) = self
                    .pending
                    .remove(&(host.to_string(), ack.packet_id.get()))
                {
                    for (filter, code) in filters.into_iter().zip(&ack.reason_codes) {
                        if !code.is_error() {
                            self.granted
                                .entry(host.to_string())
                                .or_default()
                                .insert(filter);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn matches(&self, host: &str, topic: &str) -> bool {
        self.granted
            .get(host)
            .is_some_and(|filters| filters.iter().any(|f| filter_matches(f, topic)))
    }
}

/// No client gets a message on a topic none of its subscriptions matches (which includes:
/// `$` topics never match a leading wildcard). Unsubscribing does not count: deliveries
/// already under way may still complete (spec: [MQTT-3.10.4-3]).
fn delivery_matches_subscription(
    scenario: &Scenario,
    trace: &Trace,
) -> Result<(), (String, usize)> {
    let mut subs = Subscriptions::new();
    for (i, e) in trace.entries.iter().enumerate() {
        // Sessions belong to client ids: two hosts with one id share them.
        let id = client_id(scenario, &e.host);
        subs.observe(&id, &e.event);
        if let Event::Received(Packet::Publish(p)) = &e.event {
            if !subs.matches(&id, &p.topic) {
                return Err((
                    format!(
                        "{} received {} without a matching subscription",
                        e.host, p.topic
                    ),
                    i,
                ));
            }
        }
    }
    Ok(())
}

/// A QoS 2 message reaches a client application at most once per session.
fn qos2_exactly_once(_: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (i, e) in trace.entries.iter().enumerate() {
        match &e.event {
            Event::Received(Packet::ConnAck(ack)) if !ack.session_present => {
                seen.retain(|(host, _, _)| host != &e.host);
            }
            Event::Delivered {
                topic,
                payload,
                qos: 2,
                retain: false,
            } if !seen.insert((e.host.clone(), topic.clone(), payload.clone())) => {
                return Err((
                    format!("{} got QoS 2 message {topic} {payload:?} twice", e.host),
                    i,
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Messages one client published on one topic at QoS 1 or 2 reach each subscriber in the
/// order they were published (spec: [MQTT-4.6.0-6]), ignoring repeats.
fn publisher_order(_: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    // (topic, payload) -> (publisher, position in that publisher's sequence on the topic)
    let mut origin: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &trace.entries {
        if let Event::Sent(Packet::Publish(p)) = &e.event {
            if p.qos.bits() > 0 && !p.dup {
                let key = (
                    p.topic.to_string(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                );
                let n = counts.entry((e.host.clone(), key.0.clone())).or_default();
                origin.entry(key).or_insert((e.host.clone(), *n));
                *n += 1;
            }
        }
    }
    // (subscriber, publisher, topic) -> highest position delivered so far
    let mut last: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        if let Event::Delivered {
            topic,
            payload,
            qos,
            retain: false,
        } = &e.event
        {
            if *qos == 0 {
                continue;
            }
            let Some((publisher, position)) = origin.get(&(topic.clone(), payload.clone())) else {
                continue;
            };
            let key = (e.host.clone(), publisher.clone(), topic.clone());
            if let Some(previous) = last.get(&key) {
                if position < previous {
                    return Err((
                        format!(
                            "{} got {topic} {payload:?} from {publisher} out of order",
                            e.host
                        ),
                        i,
                    ));
                }
            }
            last.insert(key, *position);
        }
    }
    Ok(())
}

/// A retained message sent on subscribe was really published with RETAIN, is not empty, and
/// was not replaced by a newer retained message the broker had acknowledged before the
/// subscription was made.
fn retained_model(_: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    let mut published: BTreeSet<(String, String)> = BTreeSet::new();
    // topic -> payload of the latest retained publish the broker acknowledged
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut in_flight: BTreeMap<(String, u16), (String, String)> = BTreeMap::new();
    let mut subscribed_at: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        match &e.event {
            // A retained will is a retained publish the broker makes for the client.
            Event::Sent(Packet::Connect(c)) => {
                if let Some(will) = c.will.as_ref().filter(|w| w.retain) {
                    published.insert((
                        will.topic.to_string(),
                        String::from_utf8_lossy(&will.payload).into_owned(),
                    ));
                }
            }
            Event::Sent(Packet::Publish(p)) if p.retain => {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                published.insert((p.topic.to_string(), payload.clone()));
                if let Some(id) = p.packet_id {
                    in_flight.insert((e.host.clone(), id.get()), (p.topic.to_string(), payload));
                }
            }
            Event::Received(Packet::PubAck(a) | Packet::PubRec(a)) => {
                if let Some((topic, payload)) =
                    in_flight.remove(&(e.host.clone(), a.packet_id.get()))
                {
                    acknowledged.insert(topic, payload);
                }
            }
            Event::Sent(Packet::Subscribe(_)) => {
                subscribed_at.insert(e.host.clone(), acknowledged.clone());
            }
            Event::Delivered {
                topic,
                payload,
                retain: true,
                ..
            } => {
                if payload.is_empty() {
                    return Err((
                        format!("{} got an empty retained message on {topic}", e.host),
                        i,
                    ));
                }
                if !published.contains(&(topic.clone(), payload.clone())) {
                    return Err((
                        format!(
                            "{} got retained {topic} {payload:?}, never published retained",
                            e.host
                        ),
                        i,
                    ));
                }
                let model = subscribed_at.get(&e.host).and_then(|m| m.get(topic));
                if let Some(latest) = model {
                    // Only a message published after the acknowledged one may replace it.
                    let newer = trace.entries[..i].iter().any(|x| {
                        matches!(&x.event, Event::Sent(Packet::Publish(p))
                            if p.retain && p.topic == topic.as_str() && String::from_utf8_lossy(&p.payload) == payload.as_str())
                    });
                    if latest != payload && !newer {
                        return Err((
                            format!(
                                "{} got stale retained {topic} {payload:?}, expected {latest:?}",
                                e.host
                            ),
                            i,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A will is published only for a connection that did not end with a normal DISCONNECT, and
/// at most once per such connection (spec: [MQTT-3.1.2-8] [MQTT-3.1.2-10] [MQTT-3.14.4-3]).
/// The broker may see a connection end that its client never sees (a partition), so the
/// bound is counted from what the client did: connections made minus normal DISCONNECTs sent.
fn will_never_twice(scenario: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    for (owner, spec) in &scenario.clients {
        let Some(will) = &spec.will else { continue };
        let mut connections = 0usize;
        let mut normal_disconnects = 0usize;
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        for (i, e) in trace.entries.iter().enumerate() {
            match &e.event {
                Event::Received(Packet::ConnAck(ack))
                    if e.host == *owner && !ack.reason_code.is_error() =>
                {
                    connections += 1
                }
                Event::Sent(Packet::Disconnect(d))
                    if e.host == *owner && d.reason_code == tern::codec::ReasonCode::Success =>
                {
                    normal_disconnects += 1;
                }
                Event::Delivered {
                    topic,
                    payload,
                    retain: false,
                    ..
                } if *topic == will.topic && *payload == will.payload => {
                    let bound = connections - normal_disconnects.min(connections);
                    let n = received.entry(e.host.clone()).or_default();
                    *n += 1;
                    if *n > bound {
                        return Err((
                            format!(
                                "{owner}'s will reached {} {n} times; it may at most {bound} times",
                                e.host
                            ),
                            i,
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
