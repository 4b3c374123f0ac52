//! Wills: published when a connection ends without a normal DISCONNECT, and never twice for
//! one connection (spec: [MQTT-3.1.2-8] [MQTT-3.1.2-10] [MQTT-3.14.4-3]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tern::codec::{Packet, ReasonCode};
use tern::topic::filter_matches;

use super::model::{client_id, stays_connected, Fault, Faults, Subscriptions};
use super::Violation;
use crate::scenario::Scenario;
use crate::trace::{Event, Trace};

/// A will is published only for a connection that did not end with a normal DISCONNECT, and
/// at most once per such connection (and matching subscription of the receiver). The broker may
/// see a connection end that its client never sees (a partition), so the bound is counted from
/// what the client did: connections made minus normal DISCONNECTs sent over a clear link. A
/// DISCONNECT sent while the link is held, partitioned or lossy may reach the broker only after
/// it ended the connection another way (another connection took the client id over, keep
/// alive ran out), and then the will is due ([MQTT-3.1.2-8]: only a DISCONNECT received
/// deletes it).
pub fn never_twice(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    for (owner, spec) in &scenario.clients {
        let Some(will) = &spec.will else { continue };
        let mut connections = 0usize;
        let mut normal_disconnects = 0usize;
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        let mut subs = Subscriptions::new(false);
        let mut blocked = BlockedLinks::default();
        for (i, e) in trace.entries.iter().enumerate() {
            subs.observe(&client_id(scenario, &e.host), &e.host, &e.event);
            match &e.event {
                Event::Received(Packet::ConnAck(ack))
                    if e.host == *owner && !ack.reason_code.is_error() =>
                {
                    connections += 1
                }
                Event::Sent(Packet::Disconnect(d))
                    if e.host == *owner
                        && d.reason_code == ReasonCode::Success
                        && blocked.is_clear() =>
                {
                    normal_disconnects += 1;
                }
                Event::Fault(f) => blocked.observe(owner, &Fault::parse(f)),
                // First sends only: a QoS 1 will resent (DUP) to a client that had not
                // acknowledged it is the same copy.
                Event::Received(Packet::Publish(p))
                    if !p.dup
                        && !p.retain
                        && p.topic() == will.topic.as_str()
                        && p.payload() == will.payload.as_bytes() =>
                {
                    // One copy per matching subscription may come ([MQTT-3.3.4-2]).
                    let copies = subs
                        .matching(&client_id(scenario, &e.host), p.topic())
                        .max(1);
                    let bound = (connections - normal_disconnects.min(connections)) * copies;
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

/// The other half of the will rule: a connection that the client ended without DISCONNECT
/// (it closed its socket, or its host crashed) gets its will published, so a client that was
/// subscribed to the will topic then, and stays connected, receives it. Checked for wills
/// without a delay, when the run goes on for at least a second afterwards and no partition or
/// hold was in force on the owner's link (the broker could not have seen the end).
pub fn on_abnormal_end(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let end = trace.entries.last().map(|e| e.at).unwrap_or_default();
    let faults = Faults::of(trace);
    for (owner, spec) in &scenario.clients {
        let Some(will) = spec.will.as_ref().filter(|w| w.delay.is_none()) else {
            continue;
        };
        let mut subs = Subscriptions::new(true).with_persistence(scenario.broker.persistence);
        let mut connected = false;
        let mut blocked = BlockedLinks::default();
        for (i, e) in trace.entries.iter().enumerate() {
            subs.observe(&client_id(scenario, &e.host), &e.host, &e.event);
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
                Event::Fault(f) => {
                    let f = Fault::parse(f);
                    blocked.observe(owner, &f);
                    f.kind == "crash" && f.touches(owner)
                }
                _ => false,
            };
            if !ended {
                continue;
            }
            let was_connected = std::mem::replace(&mut connected, false);
            // The broker hears of the end up to one link delay after the client, and the will
            // takes up to one more to arrive.
            let settle = Duration::from_secs(1) + faults.latency_max * 2;
            if !was_connected || !blocked.is_clear() || end.saturating_sub(e.at) < settle {
                continue;
            }
            let watchers: Vec<&String> = subs
                .granted
                .iter()
                .filter(|(id, filters)| {
                    **id != client_id(scenario, owner)
                        && filters.keys().any(|f| filter_matches(f, &will.topic))
                })
                .map(|(id, _)| id)
                .collect();
            for watcher in watchers {
                let hosts: Vec<&String> = scenario
                    .clients
                    .keys()
                    .filter(|h| client_id(scenario, h) == *watcher)
                    .collect();
                // Only a watcher that stays connected from here to the end can be expected to see it.
                // ... acknowledging what it gets, over a calm path.
                let calm = |h: &&String| {
                    scenario.clients[*h].auto_ack
                        && stays_connected(trace, h, i, end)
                        && faults.stable(h, i, e.at, end)
                };
                if !hosts.iter().any(calm) {
                    continue;
                }
                let got = trace.entries[i..].iter().any(|x| {
                    hosts.contains(&&x.host)
                        && matches!(&x.event, Event::Delivered { topic, payload, .. } if *topic == will.topic && *payload == will.payload)
                });
                if !got {
                    return Err((
                        format!("{owner}'s connection ended without DISCONNECT but {watcher} never got its will"),
                        i,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The faults in force on one client's links: while any is, what the client sends (a
/// DISCONNECT, the close of its socket) may not reach the broker, or not before the broker
/// ends the connection another way.
#[derive(Default)]
struct BlockedLinks(BTreeSet<Vec<String>>);

impl BlockedLinks {
    /// Takes note of a fault: one that blocks a link of `owner`, or clears a link.
    fn observe(&mut self, owner: &str, f: &Fault) {
        match f.kind.as_str() {
            "partition" | "hold" if f.touches(owner) => {
                self.0.insert(f.hosts.clone());
            }
            "repair" | "release" => {
                self.0.remove(&f.hosts);
            }
            // A lossy link may drop the DISCONNECT or the close itself: the broker learns of
            // the end only from keep alive, if at all.
            "loss" if f.touches(owner) => {
                let lossless = f
                    .value
                    .as_deref()
                    .is_some_and(|v| v.parse::<f64>().is_ok_and(|rate| rate == 0.0));
                if lossless {
                    self.0.remove(&f.hosts);
                } else {
                    self.0.insert(f.hosts.clone());
                }
            }
            _ => {}
        }
    }

    fn is_clear(&self) -> bool {
        self.0.is_empty()
    }
}
