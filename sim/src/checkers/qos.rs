//! The QoS promises: QoS 2 at most once, QoS 1/2 at least once (eventually, and within a bound
//! while nothing disturbs the path), in publisher order, and never more unanswered than the
//! client's Receive Maximum.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tern::codec::Packet;

use super::model::{
    client_id, connected_at, message_key, session_starts, stays_connected, Fault, Faults,
    Subscriptions,
};
use super::Violation;
use crate::scenario::Scenario;
use crate::trace::{Event, Trace};

/// How long a QoS 1/2 message may take to reach a connected subscriber while nothing disturbs
/// its path to the broker (simulated time; deliveries take a few link delays).
pub const LIVENESS_BOUND: Duration = Duration::from_secs(5);

/// A QoS 2 message reaches a client application at most once per session and matching
/// subscription (overlapping subscriptions may each bring a copy, [MQTT-3.3.4-2]).
pub fn qos2_exactly_once(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let starts = session_starts(scenario, trace);
    let mut subs = Subscriptions::new(false);
    let mut seen: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        let id = client_id(scenario, &e.host);
        subs.observe(&id, &e.host, &e.event);
        match &e.event {
            // A new session, or a client process that lost its state in a crash, takes a
            // resent QoS 2 message as new: the broker is not at fault.
            Event::Received(Packet::ConnAck(_)) if starts.contains(&i) => {
                seen.retain(|(host, _, _), _| host != &e.host);
            }
            Event::Fault(f) if Fault::parse(f).kind == "crash" => {
                let crashed = Fault::parse(f).hosts;
                seen.retain(|(host, _, _), _| !crashed.contains(host));
            }
            Event::Delivered {
                topic,
                payload,
                qos: 2,
                retain: false,
            } => {
                let copies = seen
                    .entry((e.host.clone(), topic.clone(), payload.clone()))
                    .or_default();
                *copies += 1;
                if *copies > subs.matching(&id, topic).max(1) {
                    return Err((
                        format!(
                            "{} got QoS 2 message {topic} {payload:?} {copies} times",
                            e.host
                        ),
                        i,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Messages one client published on one topic at QoS 1 or 2 reach each subscriber in the
/// order they were published (spec: [MQTT-4.6.0-6]), ignoring repeats.
pub fn publisher_order(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    // (topic, payload) -> (publisher, position in that publisher's sequence on the topic)
    let mut origin: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &trace.entries {
        if let Event::Sent(Packet::Publish(p)) = &e.event {
            if p.qos.bits() > 0 && !p.dup {
                let key = message_key(p.topic(), p.payload());
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
        subs.observe(&id, &e.host, &e.event);
        let Event::Delivered {
            topic,
            payload,
            qos,
            retain: false,
        } = &e.event
        else {
            continue;
        };
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
        if last.get(&key).is_some_and(|previous| position < previous) {
            return Err((
                format!(
                    "{} got {topic} {payload:?} from {publisher} out of order",
                    e.host
                ),
                i,
            ));
        }
        last.insert(key, *position);
    }
    Ok(())
}

/// A QoS 1/2 message the broker acknowledged, with who was owed it then.
struct Accepted {
    /// Entry of the PUBLISH.
    sent: usize,
    /// Entry of the PUBACK or PUBREC the publisher got.
    at: usize,
    topic: String,
    payload: String,
    /// Client ids with a matching non-shared QoS 1/2 subscription then.
    owed: Vec<String>,
    /// Shared groups (their members' client ids) with a matching QoS 1/2 subscription then.
    groups: Vec<Vec<String>>,
}

/// A QoS 1/2 PUBLISH awaiting its acknowledgement: topic, payload, whether it expires, its
/// entry, and the client ids owed it when it was sent.
/// A QoS 1/2 PUBLISH on its way: topic, payload, whether it expires, its entry, the client
/// ids and the shared groups (by `$share/...` filter) owed it when it was sent.
type InFlight = (String, String, bool, usize, Vec<String>, BTreeSet<String>);

/// Every QoS 1/2 message the broker acknowledged (PUBACK, PUBREC without error) and carrying
/// no expiry interval, in order.
fn accepted(scenario: &Scenario, trace: &Trace) -> Vec<Accepted> {
    let mut subs = Subscriptions::new(true).with_persistence(scenario.broker.persistence);
    // (publisher, packet id) -> (topic, payload, expires, entry, ids owed it when sent)
    let mut in_flight: BTreeMap<(String, u16), InFlight> = BTreeMap::new();
    let mut accepted = Vec::new();
    for (i, e) in trace.entries.iter().enumerate() {
        subs.observe(&client_id(scenario, &e.host), &e.host, &e.event);
        match &e.event {
            Event::Sent(Packet::Publish(p)) if p.qos.bits() > 0 && !p.dup => {
                let (topic, payload) = message_key(p.topic(), p.payload());
                let expires = p.properties.message_expiry_interval().is_some();
                let mut owed_then = subs.at_least_once(&topic);
                // A bridge is not sent back what it published (loop prevention).
                if scenario.clients.get(&e.host).is_some_and(|c| c.bridge) {
                    let own = client_id(scenario, &e.host);
                    owed_then.retain(|id| *id != own);
                }
                let groups_then = subs.shared_at_least_once(&topic).into_keys().collect();
                if let Some(id) = p.packet_id {
                    let sent = (topic, payload, expires, i, owed_then, groups_then);
                    in_flight.insert((e.host.clone(), id.get()), sent);
                }
            }
            Event::Received(Packet::PubAck(a) | Packet::PubRec(a)) if !a.reason_code.is_error() => {
                let Some((topic, payload, expires, sent, owed_then, groups_then)) =
                    in_flight.remove(&(e.host.clone(), a.packet_id.get()))
                else {
                    continue;
                };
                if !expires {
                    // Owed: subscribed when it was sent and still when it was acknowledged
                    // (the broker routes it somewhere in between).
                    let owed_now = subs.at_least_once(&topic);
                    accepted.push(Accepted {
                        sent,
                        at: i,
                        owed: owed_then
                            .into_iter()
                            .filter(|id| owed_now.contains(id))
                            .collect(),
                        groups: subs
                            .shared_at_least_once(&topic)
                            .into_iter()
                            .filter(|(group, _)| groups_then.contains(group))
                            .map(|(_, members)| members)
                            .collect(),
                        topic,
                        payload,
                    });
                }
            }
            _ => {}
        }
    }
    accepted
}

/// Whether a host of client id `id` got the message in entries `range`.
fn delivered(
    scenario: &Scenario,
    trace: &Trace,
    id: &str,
    m: &Accepted,
    range: std::ops::Range<usize>,
) -> bool {
    trace.entries[range].iter().any(|e| {
        matches!(&e.event, Event::Delivered { topic, payload, .. } if *topic == m.topic && *payload == m.payload)
            && client_id(scenario, &e.host) == id
    })
}

/// Whether a host of client id `id` got the message and either acknowledged it (PUBACK,
/// PUBREC) on that connection or still holds that connection at the end of the run (a client
/// may sit on a message it does not acknowledge). A copy given to a connection that ended
/// unacknowledged does not count: the session owes it to the next connection
/// (spec: [MQTT-4.4.0-1]).
fn handed_over(scenario: &Scenario, trace: &Trace, id: &str, m: &Accepted) -> bool {
    let entries = &trace.entries;
    entries.iter().enumerate().any(|(j, e)| {
        let Event::Received(Packet::Publish(p)) = &e.event else {
            return false;
        };
        if client_id(scenario, &e.host) != id
            || p.topic() != m.topic.as_str()
            || p.payload() != m.payload.as_bytes()
        {
            return false;
        }
        let Some(packet_id) = p.packet_id else {
            return true;
        };
        // What the host did next on this connection: acknowledged it, or ended the connection.
        let next = entries[j + 1..].iter().find_map(|x| {
            if x.host != e.host {
                return None;
            }
            match &x.event {
                Event::Sent(Packet::PubAck(a) | Packet::PubRec(a)) if a.packet_id == packet_id => {
                    Some(true)
                }
                Event::Closed { .. } | Event::Sent(Packet::Connect(_)) => Some(false),
                _ => None,
            }
        });
        next.unwrap_or_else(|| connected_at(trace, &e.host, entries.len()))
    })
}

/// A QoS 1/2 message the broker acknowledged (PUBACK, PUBREC) reaches every client id that
/// then held a matching QoS 1/2 subscription, if that session lasts to the end of the run, a
/// client with that id is connected at the end, and no partition or hold is still in force
/// then (the convergence condition). Excluded, as documented drops: messages with an expiry
/// interval, runs that lower the broker's queue limit, and messages accepted before a broker
/// crash when the broker has no persistence. With persistence this is the promise of the
/// store: an acknowledged message survives crashes and restarts and reaches every persistent
/// session that held a matching subscription.
pub fn at_least_once(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    if scenario.broker.queued_messages_max.is_some() {
        return Ok(());
    }
    let faults = Faults::of(trace);
    if faults.any_active_at_end() {
        return Ok(());
    }
    let end = trace.entries.len();
    let connected_ids: BTreeSet<String> = scenario
        .clients
        .keys()
        .filter(|h| connected_at(trace, h, end))
        .map(|h| client_id(scenario, h))
        .collect();
    let starts = session_starts(scenario, trace);
    for m in accepted(scenario, trace) {
        if !scenario.broker.persistence && faults.broker_crashed_between(m.at, end) {
            continue;
        }
        // Could this client id be expected to hold the message at the end of the run?
        let owed = |id: &String| {
            let reset_later = starts
                .range(m.at..)
                .any(|&i| client_id(scenario, &trace.entries[i].host) == *id);
            !reset_later && connected_ids.contains(id)
        };
        let got = |id: &String| handed_over(scenario, trace, id, &m);
        for group in &m.groups {
            // A shared group owes the message to one member; a group whose members all left
            // or reset may have lost it with them.
            if group.iter().all(owed) && !group.iter().any(got) {
                return Err((
                    format!(
                        "no member of shared group {group:?} got {} {:?}, accepted by the broker at entry {}",
                        m.topic, m.payload, m.at
                    ),
                    m.at,
                ));
            }
        }
        if let Some(id) = m.owed.iter().find(|id| owed(id) && !got(id)) {
            return Err((
                format!(
                    "{id} never got {} {:?}, accepted by the broker at entry {}",
                    m.topic, m.payload, m.at
                ),
                m.at,
            ));
        }
    }
    Ok(())
}

/// Liveness: a QoS 1/2 message the broker acknowledged reaches each client that was then
/// connected with a matching non-shared QoS 1/2 subscription within `LIVENESS_BOUND`, when
/// the client stays connected, keeps acknowledging, keeps the subscription, and nothing
/// disturbs its path to the broker over that time. (Eventual delivery despite faults is
/// `at_least_once`.) Not checked in runs that lower the broker's queue or memory limits.
pub fn liveness(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let b = &scenario.broker;
    if b.queued_messages_max.is_some() || b.memory_bytes_max.is_some() {
        return Ok(());
    }
    let faults = Faults::of(trace);
    for m in accepted(scenario, trace) {
        let at = trace.entries[m.at].at;
        let until = at + LIVENESS_BOUND;
        for id in &m.owed {
            for (host, spec) in &scenario.clients {
                if client_id(scenario, host) != *id
                    || !spec.auto_ack
                    || !stays_connected(trace, host, m.at, until)
                    || !faults.stable(host, m.at, at, until)
                    || unsubscribes(trace, host, m.at, until)
                {
                    continue;
                }
                let window_end = trace.entries.partition_point(|e| e.at <= until);
                if !delivered(scenario, trace, id, &m, m.sent..window_end) {
                    return Err((
                        format!(
                            "{host} was connected and subscribed, but did not get {} {:?} within {LIVENESS_BOUND:?} of its acknowledgement",
                            m.topic, m.payload
                        ),
                        m.at,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether `host` sends an UNSUBSCRIBE after entry `from` and by time `until`.
fn unsubscribes(trace: &Trace, host: &str, from: usize, until: Duration) -> bool {
    trace.entries[from..]
        .iter()
        .take_while(|e| e.at <= until)
        .any(|e| e.host == host && matches!(e.event, Event::Sent(Packet::Unsubscribe(_))))
}

/// The broker never has more QoS 1/2 PUBLISHes outstanding to an MQTT 5 client than the
/// Receive Maximum the client sent (spec: [MQTT-3.3.4-9], [MQTT-4.9.0-2]). Outstanding: received
/// on the current connection and not yet answered with PUBACK, PUBCOMP, or a PUBREC carrying an
/// error. Every connection starts at zero, so resends on a new connection count too.
pub fn receive_maximum(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
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
