//! Which messages a client may get at all: only on topics it is subscribed to, not once its
//! UNSUBACK is in, and not after the message expired.

use std::collections::BTreeMap;
use std::time::Duration;

use tern::codec::Packet;
use tern::topic::filter_matches;

use super::model::{
    client_id, message_key, session_starts, shared_or_plain, Faults, Subscriptions,
};
use super::Violation;
use crate::scenario::Scenario;
use crate::trace::{Event, Trace};

/// No client gets a message on a topic none of its subscriptions matches (which includes:
/// `$` topics never match a leading wildcard). Unsubscribing does not count here: deliveries
/// already under way may still complete (spec: [MQTT-3.10.4-3]); `none_after_unsuback`
/// judges those.
pub fn matches_subscription(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let mut subs = Subscriptions::new(false);
    for (i, e) in trace.entries.iter().enumerate() {
        // Sessions belong to client ids: two hosts with one id share them.
        let id = client_id(scenario, &e.host);
        subs.observe(&id, &e.host, &e.event);
        if let Event::Received(Packet::Publish(p)) = &e.event {
            if !subs.may_reach(&id, &e.host, p.topic()) {
                return Err((
                    format!(
                        "{} received {} without a matching subscription",
                        e.host,
                        p.topic()
                    ),
                    i,
                ));
            }
        }
    }
    Ok(())
}

/// Once a client has its UNSUBACK, the broker adds no new message for the removed filter
/// (spec: [MQTT-3.10.4-2]): a message first published after the UNSUBACK of every filter that
/// could carry it must not reach the client.
pub fn none_after_unsuback(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let starts = session_starts(scenario, trace);
    // (client id, filter) -> None while held (or its UNSUBACK has not come), Some(entry of
    // the UNSUBACK) once removed
    let mut filters: BTreeMap<(String, String), Option<usize>> = BTreeMap::new();
    let mut subscribing: BTreeMap<(String, u16), Vec<String>> = BTreeMap::new();
    let mut unsubscribing: BTreeMap<(String, u16), Vec<String>> = BTreeMap::new();
    // message -> entry of its first PUBLISH by any client
    let mut first_sent: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        let id = client_id(scenario, &e.host);
        match &e.event {
            Event::Received(Packet::ConnAck(_)) if starts.contains(&i) => {
                filters.retain(|(holder, _), _| *holder != id);
            }
            Event::Sent(Packet::Publish(p)) => {
                first_sent
                    .entry(message_key(p.topic(), p.payload()))
                    .or_insert(i);
            }
            Event::Sent(Packet::Subscribe(s)) => {
                let list = s.filters.iter().map(|(f, _)| f.to_string()).collect();
                subscribing.insert((id, s.packet_id.get()), list);
            }
            Event::Received(Packet::SubAck(a)) => {
                let list = subscribing.remove(&(id.clone(), a.packet_id.get()));
                for (filter, code) in list.unwrap_or_default().into_iter().zip(&a.reason_codes) {
                    if !code.is_error() {
                        filters.insert((id.clone(), filter), None);
                    }
                }
            }
            Event::Sent(Packet::Unsubscribe(u)) => {
                let list = u.filters.iter().map(|f| f.to_string()).collect();
                unsubscribing.insert((id, u.packet_id.get()), list);
            }
            Event::Received(Packet::UnsubAck(a)) => {
                let list = unsubscribing.remove(&(id.clone(), a.packet_id.get()));
                for filter in list.unwrap_or_default() {
                    if let Some(removed) = filters.get_mut(&(id.clone(), filter)) {
                        *removed = Some(i);
                    }
                }
            }
            Event::Received(Packet::Publish(p)) => {
                let Some(&sent) = first_sent.get(&message_key(p.topic(), p.payload())) else {
                    continue;
                };
                let mut carriers = filters.iter().filter(|((holder, filter), _)| {
                    *holder == id && filter_matches(shared_or_plain(filter).1, p.topic())
                });
                // Some filter could carry it: one still held, or removed after it was sent.
                let carried = carriers
                    .clone()
                    .any(|(_, removed)| removed.is_none_or(|u| u > sent));
                if let Some(((_, filter), Some(unsuback))) = carriers.next().filter(|_| !carried) {
                    return Err((
                        format!(
                            "{} got {} {:?}, published after its UNSUBACK for {filter} (entry {unsuback})",
                            e.host,
                            p.topic(),
                            String::from_utf8_lossy(p.payload())
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

/// A message with a Message Expiry Interval is not sent to a subscriber after it expired
/// (spec: [MQTT-3.3.2-5]), and a copy sent to an MQTT 5 client carries the interval left,
/// never more than the publisher gave (spec: [MQTT-3.3.2-6]). Resends of a delivery already
/// started are allowed, so only first sends (no DUP) count. The broker got the message at the
/// latest when its publisher got the acknowledgement (or one link delay after a QoS 0 send),
/// and sent a copy at the earliest one link delay before the subscriber got it; a second of
/// slack covers the whole seconds the interval counts in.
pub fn none_after_expiry(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let faults = Faults::of(trace);
    let slack = faults.latency_max + Duration::from_secs(1);
    // message -> (latest time the broker can have received it, its interval in seconds)
    let mut expiring: BTreeMap<(String, String), (Duration, u32)> = BTreeMap::new();
    let mut unacked: BTreeMap<(String, u16), (String, String)> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        match &e.event {
            Event::Sent(Packet::Publish(p)) if !p.dup => {
                let Some(interval) = p.properties.message_expiry_interval() else {
                    continue;
                };
                let key = message_key(p.topic(), p.payload());
                let received_by = if faults.stable(&e.host, i, e.at, e.at + faults.latency_max) {
                    e.at + faults.latency_max
                } else {
                    Duration::MAX
                };
                expiring.insert(key.clone(), (received_by, interval));
                if let Some(id) = p.packet_id {
                    unacked.insert((e.host.clone(), id.get()), key);
                }
            }
            Event::Received(Packet::PubAck(a) | Packet::PubRec(a)) => {
                if let Some(key) = unacked.remove(&(e.host.clone(), a.packet_id.get())) {
                    if let Some(entry) = expiring.get_mut(&key) {
                        entry.0 = entry.0.min(e.at);
                    }
                }
            }
            Event::Received(Packet::Publish(p)) if !p.dup => {
                let key = message_key(p.topic(), p.payload());
                let Some(&(received_by, interval)) = expiring.get(&key) else {
                    continue;
                };
                let v5 = scenario
                    .clients
                    .get(&e.host)
                    .is_some_and(|c| c.version == crate::scenario::Version::V5);
                let left = p.properties.message_expiry_interval();
                if v5 && left.is_none_or(|left| left > interval) {
                    return Err((
                        format!(
                            "{} got {} {:?} with Message Expiry Interval {left:?}; the publisher gave {interval}",
                            e.host, key.0, key.1
                        ),
                        i,
                    ));
                }
                let deadline =
                    received_by.saturating_add(Duration::from_secs(u64::from(interval)) + slack);
                if e.at > deadline && faults.stable(&e.host, i, deadline, e.at) {
                    return Err((
                        format!(
                            "{} got {} {:?} at {:.3}s; it expired {interval}s after the broker had it (by {:.3}s)",
                            e.host,
                            key.0,
                            key.1,
                            e.at.as_secs_f64(),
                            received_by.as_secs_f64()
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
