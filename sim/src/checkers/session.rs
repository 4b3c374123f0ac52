//! The session-present flag across reconnects (spec: [MQTT-3.2.2-1] .. [MQTT-3.2.2-3]): a clean
//! start always gets `false`; otherwise the flag says whether the broker still held the
//! client id's session, which the checker works out from the trace when it can be sure.

use std::collections::BTreeMap;
use std::time::Duration;

use tern::codec::{Packet, ProtocolVersion};

use super::model::{client_id, Fault, Faults};
use super::Violation;
use crate::scenario::Scenario;
use crate::trace::{Event, Trace};

/// One client id's session as the broker must see it.
#[derive(Debug, Clone)]
struct Session {
    /// Seconds it outlives its connection (already capped by the broker's maximum).
    expiry_secs: u64,
    /// Host whose connection holds it now, if any.
    holder: Option<String>,
    /// When that connection ended as its client saw it, and the trace entry.
    ended: Option<(Duration, usize)>,
    /// The holder's connection lost data to a fault (see `present_flag`).
    stalled: bool,
    /// Held by a connection when the broker crashed (with persistence): its expiry starts
    /// when the broker is back.
    awaiting_restart: bool,
}

/// What the checker can say about a client id's session when a CONNECT is sent.
#[derive(Debug, PartialEq)]
enum Held {
    Yes,
    No,
    Unsure,
}

/// The session-present flag of every successful CONNACK is what the broker must answer: false
/// after a clean start, true when the session certainly still existed, false when it certainly
/// did not (never made, ended with its clean connection, expired, or lost in a broker crash).
/// With persistence a crash keeps every session its client saw confirmed (CONNACK) that
/// outlives its connection; one connected at the crash starts its expiry at the restart, one
/// already disconnected counts the time the broker was down. MQTT 3.1 has no such flag.
/// Margins of one link delay each way and a second of expiry rounding keep it from judging
/// what the trace cannot tell.
pub fn present_flag(scenario: &Scenario, trace: &Trace) -> Result<(), Violation> {
    let faults = Faults::of(trace);
    let margin = faults.latency_max * 2 + Duration::from_secs(1);
    let cap = u64::from(
        scenario
            .broker
            .session_expiry_max_secs
            .unwrap_or(tern::limits::Limits::default().session_expiry_max_secs),
    );
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    // host -> (what it expects, session expiry it asked for)
    let mut connecting: BTreeMap<String, (Held, u64, bool)> = BTreeMap::new();
    for (i, e) in trace.entries.iter().enumerate() {
        let id = client_id(scenario, &e.host);
        match &e.event {
            Event::Fault(f) => {
                let f = Fault::parse(f);
                if f.is_broker_crash() {
                    broker_crashed(&mut sessions, scenario.broker.persistence);
                    if scenario.broker.persistence {
                        // A CONNECT still unanswered may have been committed (a new session
                        // stored, or an old one ended by a clean start) before the crash.
                        for (host, (_, expiry_secs, _)) in &connecting {
                            let session =
                                sessions
                                    .entry(client_id(scenario, host))
                                    .or_insert(Session {
                                        expiry_secs: *expiry_secs,
                                        holder: None,
                                        ended: None,
                                        stalled: false,
                                        awaiting_restart: false,
                                    });
                            session.stalled = true;
                        }
                    }
                }
                if f.kind == "restart" && f.touches("broker") {
                    for s in sessions.values_mut() {
                        if std::mem::take(&mut s.awaiting_restart) {
                            s.ended = Some((e.at, i));
                        }
                    }
                }
                match (f.kind.as_str(), f.hosts.first()) {
                    ("crash", Some(host)) => end_connection(&mut sessions, scenario, host, e.at, i),
                    // A connection that lost data is stalled: when the broker ends it (keep
                    // alive) and so when its session's expiry starts, the trace cannot tell.
                    ("partition" | "loss", _) => {
                        for s in sessions.values_mut() {
                            if s.holder.as_ref().is_some_and(|h| f.touches(h)) {
                                s.stalled = true;
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::Sent(Packet::Connect(c)) => {
                let v5 = c.protocol.is_v5();
                let requested = if v5 {
                    u64::from(c.properties.session_expiry_interval().unwrap_or(0))
                } else if c.clean_start {
                    0
                } else {
                    u64::MAX
                };
                let held = if c.protocol == ProtocolVersion::V3_1 {
                    // MQTT 3.1 has no session-present flag (the byte is reserved, always 0).
                    Held::Unsure
                } else if c.clean_start {
                    Held::No
                } else {
                    held(sessions.get(&id), &faults, &e.host, e.at, margin)
                };
                connecting.insert(e.host.clone(), (held, requested.min(cap), c.clean_start));
            }
            Event::Received(Packet::ConnAck(ack)) => {
                let Some((held, expiry_secs, clean)) = connecting.remove(&e.host) else {
                    continue;
                };
                if ack.reason_code.is_error() {
                    continue;
                }
                let wrong = match held {
                    Held::Yes => !ack.session_present,
                    Held::No => ack.session_present,
                    Held::Unsure => false,
                };
                if wrong {
                    return Err((
                        format!(
                            "{} got session present {} but the broker {} its session{}",
                            e.host,
                            ack.session_present,
                            if held == Held::Yes {
                                "still held"
                            } else {
                                "did not hold"
                            },
                            if clean { " (clean start)" } else { "" }
                        ),
                        i,
                    ));
                }
                sessions.insert(
                    id,
                    Session {
                        expiry_secs,
                        holder: Some(e.host.clone()),
                        ended: None,
                        stalled: false,
                        awaiting_restart: false,
                    },
                );
            }
            Event::Closed { .. } => end_connection(&mut sessions, scenario, &e.host, e.at, i),
            _ => {}
        }
    }
    Ok(())
}

/// Without persistence a broker crash loses every session. With it, sessions that end with
/// their connection are gone, the others stay; those connected at the crash wait for the
/// restart to start their expiry.
fn broker_crashed(sessions: &mut BTreeMap<String, Session>, persistence: bool) {
    if !persistence {
        sessions.clear();
        return;
    }
    sessions.retain(|_, s| s.expiry_secs > 0);
    for s in sessions.values_mut() {
        if s.holder.take().is_some() {
            s.ended = None;
            s.awaiting_restart = true;
        }
    }
}

/// The connection of `host` ended at `at` (entry `index`) as its client saw it.
fn end_connection(
    sessions: &mut BTreeMap<String, Session>,
    scenario: &Scenario,
    host: &str,
    at: Duration,
    index: usize,
) {
    let id = client_id(scenario, host);
    if let Some(s) = sessions.get_mut(&id) {
        if s.holder.as_deref() == Some(host) {
            s.holder = None;
            s.ended = Some((at, index));
        }
    }
}

/// Whether the broker certainly holds (or certainly does not) the session of a client id
/// reconnecting from `host` at `at`.
fn held(
    session: Option<&Session>,
    faults: &Faults,
    host: &str,
    at: Duration,
    margin: Duration,
) -> Held {
    let Some(s) = session else {
        return Held::No;
    };
    if s.stalled {
        return Held::Unsure;
    }
    if s.awaiting_restart {
        // Reconnecting before the restart is in the trace: it cannot succeed anyway.
        return Held::Unsure;
    }
    let Some((ended_at, ended_entry)) = s.ended else {
        // Still connected (a takeover): a session that outlives its connection is there to
        // take over; one that ends with it may or may not have ended first.
        return if s.expiry_secs > 0 {
            Held::Yes
        } else {
            Held::Unsure
        };
    };
    let expiry = Duration::from_secs(s.expiry_secs.min(u64::from(u32::MAX)));
    let gap = at.saturating_sub(ended_at);
    // The broker saw the end at most one link delay after the client did if nothing stood in
    // between; otherwise (a partition) it may not have seen it at all.
    let seen_by_broker = faults.stable(host, ended_entry, ended_at, at);
    if s.expiry_secs > 0 && gap + margin < expiry {
        Held::Yes
    } else if seen_by_broker && gap > expiry + margin {
        Held::No
    } else {
        Held::Unsure
    }
}
