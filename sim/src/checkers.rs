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
    ("qos1-at-least-once", qos1_at_least_once),
    ("will-on-abnormal-end", will_on_abnormal_end),
    ("receive-maximum", receive_maximum),
    ("client-errors", client_errors),
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
    /// client id -> filter -> granted QoS
    granted: BTreeMap<String, BTreeMap<String, u8>>,
    pending: BTreeMap<(String, u16), Vec<String>>,
    /// Forget a filter as soon as it is unsubscribed (messages already under way may still
    /// arrive, so the delivery checker keeps it).
    forget_on_unsubscribe: bool,
}

impl Subscriptions {
    fn new(forget_on_unsubscribe: bool) -> Subscriptions {
        Subscriptions {
            granted: BTreeMap::new(),
            pending: BTreeMap::new(),
            forget_on_unsubscribe,
        }
    }

    fn observe(&mut self, id: &str, event: &Event) {
        match event {
            Event::Received(Packet::ConnAck(ack)) if !ack.session_present => {
                self.granted.remove(id);
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
            Event::Sent(Packet::Unsubscribe(u)) if self.forget_on_unsubscribe => {
                if let Some(filters) = self.granted.get_mut(id) {
                    for f in &u.filters {
                        filters.remove(f.as_str());
                    }
                }
            }
            _ => {}
        }
    }

    fn matches(&self, id: &str, topic: &str) -> bool {
        self.granted.get(id).is_some_and(|filters| {
            filters
                .keys()
                .any(|f| filter_matches(shared_or_plain(f).1, topic))
        })
    }

    /// Whether `id` has a non-shared subscription matching `topic`.
    fn has_plain_match(&self, id: &str, topic: &str) -> bool {
        self.granted.get(id).is_some_and(|filters| {
            filters
                .keys()
                .any(|f| shared_or_plain(f).0.is_none() && filter_matches(f, topic))
        })
    }

    /// Client ids with a non-shared subscription of QoS 1 or more matching `topic`.
    fn at_least_once(&self, topic: &str) -> Vec<String> {
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

    /// For each shared subscription (`$share/{group}/{filter}`) of QoS 1 or more matching
    /// `topic`, the client ids in it: the message is owed to one of them.
    fn shared_at_least_once(&self, topic: &str) -> Vec<Vec<String>> {
        let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (id, filters) in &self.granted {
            for (f, qos) in filters {
                if let (Some(_), inner) = shared_or_plain(f) {
                    if *qos >= 1 && filter_matches(inner, topic) {
                        groups.entry(f).or_default().push(id.clone());
                    }
                }
            }
        }
        groups.into_values().collect()
    }
}

/// A `$share/{group}/{filter}` subscription split into (Some(group), filter); any other
/// filter as (None, filter).
fn shared_or_plain(filter: &str) -> (Option<&str>, &str) {
    match tern::topic::parse_shared(filter) {
        Ok(Some((group, inner))) => (Some(group), inner),
        _ => (None, filter),
    }
}

/// No client gets a message on a topic none of its subscriptions matches (which includes:
/// `$` topics never match a leading wildcard). Unsubscribing does not count: deliveries
/// already under way may still complete (spec: [MQTT-3.10.4-3]).
fn delivery_matches_subscription(
    scenario: &Scenario,
    trace: &Trace,
) -> Result<(), (String, usize)> {
    let mut subs = Subscriptions::new(false);
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
fn publisher_order(scenario: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
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
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut subs = Subscriptions::new(false);
    for (i, e) in trace.entries.iter().enumerate() {
        let id = client_id(scenario, &e.host);
        subs.observe(&id, &e.event);
        if let Event::Delivered {
            topic,
            payload,
            qos,
            retain: false,
        } = &e.event
        {
            // Order is promised on non-shared subscriptions only (spec: [MQTT-4.6.0-6], v5): a
            // shared group's messages may move between members.
            if *qos == 0 || !subs.has_plain_match(&id, topic) {
                continue;
            }
            let Some((publisher, position)) = origin.get(&(topic.clone(), payload.clone())) else {
                continue;
            };
            // A QoS 1 message seen again (resent after a lost PUBACK) is a duplicate MQTT
            // allows, not a reordering: order is about first deliveries.
            if !seen.insert((e.host.clone(), topic.clone(), payload.clone())) {
                continue;
            }
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

/// A message the broker accepted: (trace index, topic, payload, client ids owed it, shared
/// groups each owed it once).
type Accepted = (usize, String, String, Vec<String>, Vec<Vec<String>>);

/// A QoS 1/2 message the broker acknowledged (PUBACK, PUBREC) reaches every client id that
/// then held a matching QoS 1/2 subscription, if that session lasts to the end of the run, a
/// client with that id is connected at the end, and no fault is still active then (the
/// convergence condition). Excluded, as documented drops: messages with an expiry interval,
/// runs that lower the broker's queue limit, and messages accepted before a broker crash
/// (there is no persistence yet).
fn qos1_at_least_once(scenario: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    if scenario.broker.queued_messages_max.is_some() {
        return Ok(());
    }
    let id_of = |host: &str| client_id(scenario, host);
    let mut subs = Subscriptions::new(true);
    let mut in_flight: BTreeMap<(String, u16), (String, String, bool)> = BTreeMap::new();
    // (entry index, topic, payload, client ids expected to get it, shared groups each owed it)
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut crashed_at: Option<usize> = None;
    let mut connected: BTreeSet<String> = BTreeSet::new();
    let mut active_faults: BTreeSet<String> = BTreeSet::new();
    for (i, e) in trace.entries.iter().enumerate() {
        subs.observe(&id_of(&e.host), &e.event);
        match &e.event {
            Event::Sent(Packet::Publish(p)) if p.qos.bits() > 0 && !p.dup => {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                let expires = p.properties.message_expiry_interval().is_some();
                if let Some(id) = p.packet_id {
                    in_flight.insert(
                        (e.host.clone(), id.get()),
                        (p.topic.to_string(), payload, expires),
                    );
                }
            }
            Event::Received(Packet::PubAck(a) | Packet::PubRec(a)) if !a.reason_code.is_error() => {
                if let Some((topic, payload, expires)) =
                    in_flight.remove(&(e.host.clone(), a.packet_id.get()))
                {
                    if !expires {
                        let ids = subs.at_least_once(&topic);
                        let groups = subs.shared_at_least_once(&topic);
                        accepted.push((i, topic, payload, ids, groups));
                    }
                }
            }
            Event::Received(Packet::ConnAck(ack)) if !ack.reason_code.is_error() => {
                connected.insert(e.host.clone());
            }
            Event::Closed { .. } => {
                connected.remove(&e.host);
            }
            Event::Fault(f) => {
                let words: Vec<&str> = f.splitn(2, ' ').collect();
                match (words[0], words.get(1)) {
                    ("crash", Some(&"broker")) => {
                        crashed_at = Some(i);
                        connected.clear();
                    }
                    ("crash", Some(host)) => {
                        connected.remove(*host);
                    }
                    ("partition" | "hold", Some(link)) => {
                        active_faults.insert(link.replace("->", "<->"));
                    }
                    ("repair" | "release", Some(link)) => {
                        active_faults.remove(&link.replace("->", "<->"));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !active_faults.is_empty() {
        return Ok(());
    }
    let connected_ids: BTreeSet<String> = connected.iter().map(|h| id_of(h)).collect();
    for (at, topic, payload, ids, groups) in &accepted {
        if crashed_at.is_some_and(|c| c > *at) {
            continue;
        }
        // Could this client id be expected to hold the message at the end of the run?
        let owed = |id: &String| {
            let reset_later = trace.entries[*at..].iter().any(|e| {
                id_of(&e.host) == *id
                    && matches!(&e.event, Event::Received(Packet::ConnAck(a)) if !a.session_present)
            });
            !reset_later && connected_ids.contains(id)
        };
        let delivered_to = |id: &String| {
            trace.entries.iter().any(|e| {
                id_of(&e.host) == *id
                    && matches!(&e.event, Event::Delivered { topic: t, payload: p, .. } if t == topic && p == payload)
            })
        };
        for group in groups {
            // A shared group owes the message to one member; a group whose members all left
            // or reset may have lost it with them.
            if group.iter().all(&owed) && !group.iter().any(delivered_to) {
                return Err((
                    format!(
                        "no member of shared group {group:?} got {topic} {payload:?}, accepted by the broker at entry {at}"
                    ),
                    *at,
                ));
            }
        }
        for id in ids {
            if !owed(id) {
                continue;
            }
            let delivered = delivered_to(id);
            if !delivered {
                return Err((
                    format!(
                        "{id} never got {topic} {payload:?}, accepted by the broker at entry {at}"
                    ),
                    *at,
                ));
            }
        }
    }
    Ok(())
}

/// A client found the broker at fault (a wrong SCRAM server proof, say).
fn client_errors(_: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    match trace
        .entries
        .iter()
        .enumerate()
        .find(|(_, e)| matches!(e.event, Event::ClientError(_)))
    {
        Some((i, e)) => Err((format!("{}: {}", e.host, e.line()), i)),
        None => Ok(()),
    }
}

/// The broker never has more QoS 1/2 PUBLISHes outstanding to an MQTT 5 client than the
/// Receive Maximum the client sent (spec: [MQTT-3.3.4-9], [MQTT-4.9.0-2]). Outstanding: received
/// on the current connection and not yet answered with PUBACK, PUBCOMP, or a PUBREC carrying an
/// error. Every connection starts at zero, so resends on a new connection count too.
fn receive_maximum(scenario: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    let mut outstanding: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        let Some(max) = scenario
            .clients
            .get(&e.host)
            .and_then(|c| c.receive_maximum)
        else {
            continue;
        };
        let ids = outstanding.entry(e.host.as_str()).or_default();
        match &e.event {
            Event::Sent(Packet::Connect(_)) => ids.clear(),
            Event::Received(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    ids.insert(id.get());
                }
                if ids.len() > usize::from(max) {
                    return Err((
                        format!(
                            "{} has {} unacknowledged QoS 1/2 messages, its Receive Maximum is {max}",
                            e.host,
                            ids.len()
                        ),
                        i,
                    ));
                }
            }
            Event::Sent(Packet::PubAck(a) | Packet::PubComp(a)) => {
                ids.remove(&a.packet_id.get());
            }
            Event::Sent(Packet::PubRec(a)) if a.reason_code.is_error() => {
                ids.remove(&a.packet_id.get());
            }
            _ => {}
        }
    }
    Ok(())
}

/// The other half of the will rule: a connection that the client ended without DISCONNECT
/// (it closed its socket, or its host crashed) gets its will published, so a client that was
/// subscribed to the will topic then, and stays connected, receives it. Checked for wills
/// without a delay, when the run goes on for at least a second afterwards and the owner's
/// link to the broker was not partitioned (the broker could not have seen the end).
fn will_on_abnormal_end(scenario: &Scenario, trace: &Trace) -> Result<(), (String, usize)> {
    let end = trace.entries.last().map(|e| e.at).unwrap_or_default();
    for (owner, spec) in &scenario.clients {
        let Some(will) = spec.will.as_ref().filter(|w| w.delay.is_none()) else {
            continue;
        };
        let mut subs = Subscriptions::new(true);
        let mut connected = false;
        let mut partitioned = false;
        for (i, e) in trace.entries.iter().enumerate() {
            subs.observe(&client_id(scenario, &e.host), &e.event);
            let ended = match &e.event {
                Event::Received(Packet::ConnAck(ack))
                    if e.host == *owner && !ack.reason_code.is_error() =>
                {
                    connected = true;
                    false
                }
                Event::Closed {
                    by_client: true,
                    normal: false,
                } if e.host == *owner => true,
                Event::Closed { .. } if e.host == *owner => {
                    connected = false;
                    false
                }
                Event::Fault(f) if f.starts_with("partition") && f.contains(owner.as_str()) => {
                    partitioned = true;
                    false
                }
                Event::Fault(f) if f.starts_with("repair") && f.contains(owner.as_str()) => {
                    partitioned = false;
                    false
                }
                Event::Fault(f) => f == &format!("crash {owner}"),
                _ => false,
            };
            if !(ended && connected) || partitioned || end.saturating_sub(e.at).as_secs() < 1 {
                if ended {
                    connected = false;
                }
                continue;
            }
            connected = false;
            let watchers: Vec<String> = subs
                .granted
                .iter()
                .filter(|(_, filters)| filters.keys().any(|f| filter_matches(f, &will.topic)))
                .map(|(id, _)| id.clone())
                .collect();
            for watcher in watchers {
                let hosts: Vec<&String> = scenario
                    .clients
                    .keys()
                    .filter(|h| client_id(scenario, h) == watcher)
                    .collect();
                // Only a watcher that stays connected from here to the end can be expected to see it.
                let stays =
                    hosts.iter().any(|h| {
                        let connected_now = trace.entries[..i].iter().rev().find_map(|x| match &x
                            .event
                        {
                            Event::Received(Packet::ConnAck(_)) if &x.host == *h => Some(true),
                            Event::Closed { .. } if &x.host == *h => Some(false),
                            _ => None,
                        });
                        connected_now == Some(true)
                            && !trace.entries[i..].iter().any(|x| {
                                &x.host == *h
                                    && matches!(
                                        x.event,
                                        Event::Closed { .. } | Event::Sent(Packet::Connect(_))
                                    )
                            })
                    });
                if !stays || *owner == watcher {
                    continue;
                }
                let got = trace.entries[i..].iter().any(|x| {
                    hosts.contains(&&x.host)
                        && matches!(&x.event, Event::Delivered { topic, payload, .. } if *topic == will.topic && *payload == will.payload)
                });
                if !got {
                    return Err((format!("{owner}'s connection ended without DISCONNECT but {watcher} never got its will"), i));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::path::Path;
    use std::time::Duration;
    use tern::codec::*;
    use tern::types::{PacketId, QoS};

    fn scenario() -> Scenario {
        let text =
            "goal: g\nclients:\n  s: { version: 3.1.1 }\n  p: { version: 3.1.1 }\nsteps: []\n";
        Scenario::parse(text, Path::new("x.yaml")).unwrap()
    }

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    /// s subscribed to t at QoS 1 and p's QoS 1 message to t was acknowledged.
    fn accepted_but(delivered: bool) -> Trace {
        accepted_on("t", delivered)
    }

    /// `s` subscribed to `filter` at QoS 1 and p's QoS 1 message to t was acknowledged.
    fn accepted_on(filter: &'static str, delivered: bool) -> Trace {
        let mut t = Trace::default();
        let at = Duration::ZERO;
        let connack = || {
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::Success,
                properties: Properties::new(),
            })
        };
        t.push(at, "s", Event::Received(connack()));
        t.push(at, "p", Event::Received(connack()));
        let filters = vec![(
            ByteStr::from_static(filter),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )];
        t.push(
            at,
            "s",
            Event::Sent(Packet::Subscribe(Subscribe {
                packet_id: id(1),
                properties: Properties::new(),
                filters,
            })),
        );
        t.push(
            at,
            "s",
            Event::Received(Packet::SubAck(SubAck {
                packet_id: id(1),
                properties: Properties::new(),
                reason_codes: vec![ReasonCode::GrantedQoS1],
            })),
        );
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteStr::from_static("t"),
            packet_id: Some(id(7)),
            properties: Properties::new(),
            payload: Bytes::from_static(b"m"),
        };
        t.push(at, "p", Event::Sent(Packet::Publish(publish)));
        t.push(at, "p", Event::Received(Packet::PubAck(Ack::new(id(7)))));
        if delivered {
            t.push(
                at,
                "s",
                Event::Delivered {
                    topic: "t".into(),
                    payload: "m".into(),
                    qos: 1,
                    retain: false,
                },
            );
        }
        t
    }

    #[test]
    fn a_client_error_fails_the_run() {
        let mut t = accepted_but(true);
        assert!(client_errors(&scenario(), &t).is_ok());
        t.push(
            Duration::ZERO,
            "s",
            Event::ClientError("the broker's SCRAM proof is missing or wrong".into()),
        );
        assert!(client_errors(&scenario(), &t).is_err());
    }

    #[test]
    fn more_unacknowledged_messages_than_receive_maximum_are_caught() {
        let text = "goal: g\nclients:\n  s: { version: 5, receive_maximum: 1 }\nsteps: []\n";
        let scenario = Scenario::parse(text, Path::new("x.yaml")).unwrap();
        let publish = |n: u16| {
            Event::Received(Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: ByteStr::from_static("t"),
                packet_id: Some(id(n)),
                properties: Properties::new(),
                payload: Bytes::from_static(b"m"),
            }))
        };
        let mut t = Trace::default();
        t.push(Duration::ZERO, "s", publish(1));
        t.push(
            Duration::ZERO,
            "s",
            Event::Sent(Packet::PubAck(Ack::new(id(1)))),
        );
        t.push(Duration::ZERO, "s", publish(2));
        assert!(receive_maximum(&scenario, &t).is_ok());
        t.push(Duration::ZERO, "s", publish(3));
        assert!(receive_maximum(&scenario, &t).is_err());
    }

    #[test]
    fn a_shared_group_must_get_an_acknowledged_message_in_any_order() {
        let shared = "$share/g/t";
        assert!(qos1_at_least_once(&scenario(), &accepted_on(shared, true)).is_ok());
        let err = qos1_at_least_once(&scenario(), &accepted_on(shared, false)).unwrap_err();
        assert!(err.0.contains("shared group"), "{}", err.0);
        assert!(delivery_matches_subscription(&scenario(), &accepted_on(shared, true)).is_ok());
        assert!(publisher_order(&scenario(), &accepted_on(shared, true)).is_ok());
    }

    #[test]
    fn an_acknowledged_message_must_reach_the_subscriber() {
        assert!(qos1_at_least_once(&scenario(), &accepted_but(true)).is_ok());
        let err = qos1_at_least_once(&scenario(), &accepted_but(false)).unwrap_err();
        assert!(err.0.contains("never got t"), "{}", err.0);
    }

    #[test]
    fn a_will_missing_after_an_abnormal_end_is_caught() {
        let text = "goal: g\nclients:\n  s: { version: 3.1.1 }\n  d: { version: 3.1.1, will: { topic: w, payload: gone } }\nsteps: []\n";
        let scenario = Scenario::parse(text, Path::new("x.yaml")).unwrap();
        let build = |delivered: bool| {
            let mut t = accepted_but(true);
            let connack = Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::Success,
                properties: Properties::new(),
            });
            let filters = vec![(
                ByteStr::from_static("w"),
                SubscriptionOptions::new(QoS::AtMostOnce),
            )];
            t.push(
                Duration::ZERO,
                "s",
                Event::Sent(Packet::Subscribe(Subscribe {
                    packet_id: id(2),
                    properties: Properties::new(),
                    filters,
                })),
            );
            t.push(
                Duration::ZERO,
                "s",
                Event::Received(Packet::SubAck(SubAck {
                    packet_id: id(2),
                    properties: Properties::new(),
                    reason_codes: vec![ReasonCode::Success],
                })),
            );
            t.push(Duration::ZERO, "d", Event::Received(connack));
            t.push(
                Duration::from_secs(1),
                "d",
                Event::Closed {
                    by_client: true,
                    normal: false,
                },
            );
            if delivered {
                t.push(
                    Duration::from_secs(1),
                    "s",
                    Event::Delivered {
                        topic: "w".into(),
                        payload: "gone".into(),
                        qos: 0,
                        retain: false,
                    },
                );
            }
            t.push(
                Duration::from_secs(3),
                "director",
                Event::Fault("end".into()),
            );
            t
        };
        assert!(will_on_abnormal_end(&scenario, &build(true)).is_ok());
        assert!(will_on_abnormal_end(&scenario, &build(false)).is_err());
    }

    #[test]
    fn a_qos2_message_delivered_twice_is_caught() {
        let mut t = Trace::default();
        for _ in 0..2 {
            t.push(
                Duration::ZERO,
                "s",
                Event::Delivered {
                    topic: "t".into(),
                    payload: "m".into(),
                    qos: 2,
                    retain: false,
                },
            );
        }
        assert!(qos2_exactly_once(&scenario(), &t).is_err());
    }

    #[test]
    fn delivery_without_subscription_is_caught() {
        let mut t = Trace::default();
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from_static("secret"),
            packet_id: None,
            properties: Properties::new(),
            payload: Bytes::from_static(b"x"),
        };
        t.push(
            Duration::ZERO,
            "s",
            Event::Received(Packet::Publish(publish)),
        );
        assert!(delivery_matches_subscription(&scenario(), &t).is_err());
    }
}
