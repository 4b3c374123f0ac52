//! The retained store as a model: what a new subscription gets is never older than what the
//! broker had acknowledged before the subscription, and once the publishes on a topic have
//! settled, a new subscription gets exactly the last acknowledged one.
//!
//! `$SYS/` topics are the broker's own (its counters, published retained every interval; no
//! client may publish there): they are not in the model.

use std::collections::BTreeMap;

use tern::codec::Packet;
use tern::topic::filter_matches;

use super::model::{message_key, shared_or_plain, stays_connected, Fault, Faults};
use super::qos::LIVENESS_BOUND;
use super::Violation;
use crate::scenario::Scenario;
use crate::trace::{Event, Trace};

/// One retained PUBLISH a client sent, and whether and when the broker acknowledged it.
struct RetainedSend {
    at: usize,
    host: String,
    topic: String,
    payload: String,
    /// Entry of the PUBACK/PUBREC (QoS 1/2) that acknowledged it.
    acked: Option<usize>,
    /// It carried a Message Expiry Interval (the broker may drop it at any time).
    expires: bool,
}

fn retained_sends(trace: &Trace) -> Vec<RetainedSend> {
    let mut sends: Vec<RetainedSend> = Vec::new();
    let mut open: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        match &e.event {
            Event::Sent(Packet::Publish(p)) if p.retain && !p.dup => {
                let (topic, payload) = message_key(p.topic(), p.payload());
                if let Some(id) = p.packet_id {
                    open.insert((e.host.clone(), id.get()), sends.len());
                }
                sends.push(RetainedSend {
                    at: i,
                    host: e.host.clone(),
                    topic,
                    payload,
                    acked: None,
                    expires: p.properties.message_expiry_interval().is_some(),
                });
            }
            Event::Received(Packet::PubAck(a) | Packet::PubRec(a)) if !a.reason_code.is_error() => {
                if let Some(n) = open.remove(&(e.host.clone(), a.packet_id.get())) {
                    sends[n].acked = Some(i);
                }
            }
            _ => {}
        }
    }
    sends
}

/// Whether send `a` certainly reached the broker before send `b`: it was acknowledged before
/// `b` was sent, or both came from one client in that order.
fn certainly_before(a: &RetainedSend, b: &RetainedSend) -> bool {
    a.acked.is_some_and(|ack| ack < b.at) || (a.host == b.host && a.at < b.at)
}

/// Retained wills: (topic, payload) the broker may store for a client at any time.
fn retained_wills(trace: &Trace) -> Vec<(String, String)> {
    trace
        .entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::Sent(Packet::Connect(c)) => c
                .will
                .as_ref()
                .filter(|w| w.retain)
                .map(|w| message_key(&w.topic, &w.payload)),
            _ => None,
        })
        .collect()
}

/// The filters of one SUBSCRIBE and, per topic, the retained publish (index in the sends) the
/// broker had acknowledged last when it was sent.
type Subscribed = (Vec<String>, BTreeMap<String, usize>);

/// A retained message sent on subscribe was really published with RETAIN (or is a retained
/// will), is not empty, and is not stale: when the broker had acknowledged retained message L
/// on the topic before the SUBSCRIBE, a different payload P may come only if some publish of P
/// may have reached the broker after L (it was not acknowledged before L was sent, nor sent
/// before L by L's own publisher).
pub fn never_stale(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let sends = retained_sends(trace);
    let wills = retained_wills(trace);
    // topic -> index in `sends` of the latest acknowledged retained publish
    let mut acknowledged: BTreeMap<String, usize> = BTreeMap::new();
    // host -> its SUBSCRIBEs, latest last
    let mut subscribed: BTreeMap<String, Vec<Subscribed>> = BTreeMap::new();
    let mut by_ack: BTreeMap<usize, usize> = BTreeMap::new();
    for (n, s) in sends.iter().enumerate() {
        if let Some(ack) = s.acked {
            by_ack.insert(ack, n);
        }
    }
    for (i, e) in trace.entries.iter().enumerate() {
        if let Some(&n) = by_ack.get(&i) {
            acknowledged.insert(sends[n].topic.clone(), n);
        }
        match &e.event {
            // Without persistence a crashed broker restarts with no retained messages; with
            // it, what was acknowledged is still there.
            event if Fault::crashes_broker(event) && !scenario.broker.persistence => {
                acknowledged.clear()
            }
            Event::Sent(Packet::Subscribe(s)) => {
                let filters = s.filters.iter().map(|(f, _)| f.to_string()).collect();
                subscribed
                    .entry(e.host.clone())
                    .or_default()
                    .push((filters, acknowledged.clone()));
            }
            // A bridge gets live messages with RETAIN as published: its copies cannot be told
            // from those sent on subscribe, so they are not judged here.
            Event::Delivered { retain: true, .. }
                if scenario.clients.get(&e.host).is_some_and(|c| c.bridge) => {}
            Event::Delivered { topic, .. } if topic.starts_with("$SYS/") => {}
            Event::Delivered {
                topic,
                payload,
                retain: true,
                ..
            } => {
                let key = (topic.clone(), payload.clone());
                if payload.is_empty() {
                    return Err((
                        format!("{} got an empty retained message on {topic}", e.host),
                        i,
                    ));
                }
                let publishes: Vec<&RetainedSend> = sends
                    .iter()
                    .filter(|s| s.at < i && s.topic == *topic && s.payload == *payload)
                    .collect();
                if publishes.is_empty() && !wills.contains(&key) {
                    return Err((
                        format!(
                            "{} got retained {topic} {payload:?}, never published retained",
                            e.host
                        ),
                        i,
                    ));
                }
                // The copy answers one of the host's matching SUBSCRIBEs, which one the trace
                // cannot always tell (a held link delays an earlier answer past a later
                // SUBSCRIBE): it is stale only if it is stale for each of them.
                let candidates: Vec<Option<usize>> = subscribed
                    .get(&e.host)
                    .map(|subs| {
                        subs.iter()
                            .filter(|(filters, _)| {
                                filters
                                    .iter()
                                    .any(|f| filter_matches(shared_or_plain(f).1, topic))
                            })
                            .map(|(_, acked)| acked.get(topic).copied())
                            .collect()
                    })
                    .unwrap_or_default();
                let is_stale = |latest: &RetainedSend| {
                    latest.payload != *payload
                        && !wills.contains(&key)
                        && publishes.iter().all(|p| certainly_before(p, latest))
                };
                let stale_for_all = !candidates.is_empty()
                    && candidates
                        .iter()
                        .all(|latest| latest.is_some_and(|n| is_stale(&sends[n])));
                if stale_for_all {
                    let latest = &sends[candidates
                        .last()
                        .copied()
                        .flatten()
                        .expect("stale for all: each has a latest")];
                    return Err((
                        format!(
                            "{} got stale retained {topic} {payload:?}: {:?} was acknowledged at entry {} before it subscribed",
                            e.host,
                            latest.payload,
                            latest.acked.unwrap_or_default()
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

/// Convergence: once every retained publish on a topic has been answered, a client that then
/// subscribes with a matching (non-shared) filter gets exactly the last acknowledged message
/// within `LIVENESS_BOUND`, if it stays connected and nothing disturbs its path (a newer
/// retained publish sent meanwhile may take its place). "Last" must be certain: the message
/// is known only when every other retained publish on the topic since the last broker crash
/// certainly reached the broker before it. Not checked in runs that lower the broker's memory
/// limit.
pub fn converges(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    if scenario.broker.memory_bytes_max.is_some() {
        return Ok(());
    }
    let faults = Faults::of(trace);
    let sends = retained_sends(trace);
    let wills = retained_wills(trace);
    // topic -> the payload the broker certainly holds (empty: none)
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    let mut subscribes: BTreeMap<(String, u16), Vec<String>> = BTreeMap::new();
    let mut since_crash = 0;
    for (i, e) in trace.entries.iter().enumerate() {
        match &e.event {
            // With persistence an acknowledged retained message survives the crash, and so
            // does the model of it.
            event if Fault::crashes_broker(event) && !scenario.broker.persistence => {
                model.clear();
                since_crash = i;
            }
            Event::Sent(Packet::Publish(p)) if p.retain && !p.dup => {
                model.remove(p.topic());
            }
            Event::Received(Packet::PubAck(_) | Packet::PubRec(_)) => {
                let Some(n) = sends.iter().position(|s| s.acked == Some(i)) else {
                    continue;
                };
                let this = &sends[n];
                let last = !this.expires
                    && !wills.iter().any(|(t, _)| *t == this.topic)
                    && sends.iter().enumerate().all(|(m, other)| {
                        m == n
                            || other.topic != this.topic
                            || other.at < since_crash
                            || other.at > i
                            || (!other.expires && certainly_before(other, this))
                    });
                if last {
                    model.insert(this.topic.clone(), this.payload.clone());
                }
            }
            Event::Sent(Packet::Subscribe(s)) => {
                let filters = s.filters.iter().map(|(f, _)| f.to_string()).collect();
                subscribes.insert((e.host.clone(), s.packet_id.get()), filters);
            }
            Event::Received(Packet::SubAck(ack)) => {
                let filters = subscribes
                    .remove(&(e.host.clone(), ack.packet_id.get()))
                    .unwrap_or_default();
                for (filter, code) in filters.iter().zip(&ack.reason_codes) {
                    if code.is_error() || shared_or_plain(filter).0.is_some() {
                        continue;
                    }
                    check_retained_arrives(scenario, trace, &faults, &model, &e.host, filter, i)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The retained messages the model knows for topics matching `filter` reach `host` (which got
/// its SUBACK at entry `at`) within the bound, when it stays connected and its path is calm.
fn check_retained_arrives(
    scenario: &Scenario,
    trace: &Trace,
    faults: &Faults,
    model: &BTreeMap<String, String>,
    host: &str,
    filter: &str,
    at: usize,
) -> Result<(), Violation> {
    let start = trace.entries[at].at;
    let until = start + LIVENESS_BOUND;
    // A client that does not acknowledge may have its window full: retained copies wait.
    let acknowledges = scenario.clients.get(host).is_some_and(|c| c.auto_ack);
    if !acknowledges
        || !stays_connected(trace, host, at, until)
        || !faults.stable(host, at, start, until)
    {
        return Ok(());
    }
    let window_end = trace.entries.partition_point(|e| e.at <= until);
    for (topic, payload) in model {
        if payload.is_empty() || !filter_matches(filter, topic) {
            continue;
        }
        let newer_sent = |p: &str| {
            trace.entries[at..window_end].iter().any(|x| {
                matches!(&x.event, Event::Sent(Packet::Publish(q)) if q.retain && q.topic() == topic.as_str() && q.payload() == p.as_bytes())
            })
        };
        let got = trace.entries[at..window_end].iter().any(|x| {
            x.host == host
                && matches!(&x.event, Event::Delivered { topic: t, payload: p, retain: true, .. }
                    if t == topic && (p == payload || newer_sent(p)))
        });
        if !got {
            return Err((
                format!(
                    "{host} subscribed to {filter} but did not get the retained {topic} {payload:?} within {LIVENESS_BOUND:?}"
                ),
                at,
            ));
        }
    }
    Ok(())
}
