//! The trace of a run: every packet each client sent and received, every fault, with the
//! simulated time. It is what the checkers judge, what a failure prints, and what the
//! determinism test compares (by digest).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tern::codec::{Packet, ReasonCode};

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A scenario step began.
    Step {
        index: usize,
        text: String,
    },
    Sent(Packet),
    Received(Packet),
    /// A message the client application got: new, not a QoS 2 resend it already had.
    Delivered {
        topic: String,
        payload: String,
        qos: u8,
        retain: bool,
    },
    ConnectFailed(String),
    /// The client's connection ended; `normal` if the client had sent DISCONNECT.
    Closed {
        by_client: bool,
        normal: bool,
    },
    Fault(String),
    /// The client found the broker at fault (e.g. a wrong SCRAM server proof); fails the run.
    ClientError(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub at: Duration,
    pub host: String,
    pub event: Event,
}

#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub entries: Vec<Entry>,
    /// The broker's counters read after the last step. Not part of the rendered trace: the
    /// checkers judge them (`checkers/counters.rs`).
    pub broker_counters: BrokerCounters,
}

/// What the director got when it asked the broker for its counters after the last step.
#[derive(Debug, Default, Clone)]
pub enum BrokerCounters {
    /// The broker was down (crashed, or stopped by a disk fault): nothing to judge.
    #[default]
    BrokerDown,
    Read(Box<tern::core::Sample>),
    /// The broker was up and did not answer.
    Unanswered,
}

fn reason(code: ReasonCode) -> String {
    format!("{:#04x} {}", code as u8, code.description())
}

/// An acknowledgement's reason code, shown only when it refuses (success is the rule).
fn error(code: ReasonCode) -> String {
    if code.is_error() {
        format!(" {}", reason(code))
    } else {
        String::new()
    }
}

/// Topics, filters and payloads longer than this are shown by their start and length.
const SHOWN_TEXT_MAX: usize = 100;

/// `text` as it is, or its first characters and its length when it is long.
pub fn short(text: &str) -> String {
    if text.len() <= SHOWN_TEXT_MAX {
        return text.to_string();
    }
    let start: String = text.chars().take(40).collect();
    format!("{start}...({} bytes)", text.len())
}

/// One line per packet, short enough to read in a failure report.
pub fn summarize(packet: &Packet) -> String {
    match packet {
        Packet::Connect(c) => format!(
            "CONNECT id={} clean={} keep_alive={}{}",
            c.client_id,
            c.clean_start,
            c.keep_alive,
            if c.will.is_some() { " will" } else { "" }
        ),
        Packet::ConnAck(c) => format!(
            "CONNACK {} session_present={}",
            reason(c.reason_code),
            c.session_present
        ),
        Packet::Publish(p) => format!(
            "PUBLISH {} {:?} qos={}{}{}{}{}",
            short(p.topic()),
            short(&String::from_utf8_lossy(p.payload())),
            p.qos,
            p.packet_id
                .map(|id| format!(" id={id}"))
                .unwrap_or_default(),
            if p.retain { " retain" } else { "" },
            if p.dup { " dup" } else { "" },
            p.properties
                .topic_alias()
                .map(|a| format!(" alias={a}"))
                .unwrap_or_default()
        ),
        Packet::PubAck(a) => format!("PUBACK id={}{}", a.packet_id, error(a.reason_code)),
        Packet::PubRec(a) => format!("PUBREC id={}{}", a.packet_id, error(a.reason_code)),
        Packet::PubRel(a) => format!("PUBREL id={}{}", a.packet_id, error(a.reason_code)),
        Packet::PubComp(a) => format!("PUBCOMP id={}{}", a.packet_id, error(a.reason_code)),
        Packet::Subscribe(s) => {
            let filters: Vec<String> = s
                .filters
                .iter()
                .map(|(f, o)| format!("{}@{}", short(f), o.qos))
                .collect();
            format!("SUBSCRIBE id={} {}", s.packet_id, filters.join(" "))
        }
        Packet::SubAck(s) => {
            let codes: Vec<String> = s
                .reason_codes
                .iter()
                .map(|c| format!("{:#04x}", *c as u8))
                .collect();
            format!("SUBACK id={} {}", s.packet_id, codes.join(" "))
        }
        Packet::Unsubscribe(u) => {
            let filters: Vec<String> = u.filters.iter().map(|f| short(f)).collect();
            format!("UNSUBSCRIBE id={} {}", u.packet_id, filters.join(" "))
        }
        Packet::UnsubAck(u) => format!("UNSUBACK id={}", u.packet_id),
        Packet::PingReq => "PINGREQ".into(),
        Packet::PingResp => "PINGRESP".into(),
        Packet::Disconnect(d) => format!("DISCONNECT {}", reason(d.reason_code)),
        Packet::Auth(a) => format!("AUTH {}", reason(a.reason_code)),
    }
}

impl Entry {
    pub fn line(&self) -> String {
        let what = match &self.event {
            Event::Step { index, text } => format!("--- step {index}: {text}"),
            Event::Sent(p) => format!("-> {}", summarize(p)),
            Event::Received(p) => format!("<- {}", summarize(p)),
            Event::Delivered {
                topic,
                payload,
                qos,
                retain,
            } => {
                format!(
                    "delivered {} {:?} qos={qos}{}",
                    short(topic),
                    short(payload),
                    if *retain { " retain" } else { "" }
                )
            }
            Event::ConnectFailed(why) => format!("connect failed: {why}"),
            Event::Closed { by_client, normal } => format!(
                "connection closed by {}{}",
                if *by_client {
                    "the client"
                } else {
                    "the broker or the network"
                },
                if *normal { " after DISCONNECT" } else { "" }
            ),
            Event::Fault(what) => format!("FAULT {what}"),
            Event::ClientError(what) => format!("client error: {what}"),
        };
        format!("{:>9.3}s {:<10} {what}", self.at.as_secs_f64(), self.host)
    }
}

/// Whether every entry is also written to stderr as it is recorded: how a worker process
/// leaves the trace so far behind when a case aborts it (`supervisor.rs`).
static ECHO: AtomicBool = AtomicBool::new(false);

pub fn echo_to_stderr(on: bool) {
    ECHO.store(on, Ordering::Relaxed);
}

impl Trace {
    pub fn push(&mut self, at: Duration, host: &str, event: Event) {
        let entry = Entry {
            at,
            host: host.to_string(),
            event,
        };
        if ECHO.load(Ordering::Relaxed) {
            eprintln!("{}", entry.line());
        }
        self.entries.push(entry);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            let _ = writeln!(out, "{}", entry.line());
        }
        out
    }

    /// What the clients observed, one line each: CONNACK, SUBACK and DISCONNECT codes,
    /// deliveries, connection ends and faults, with the step they belong to. This is the
    /// reviewable form kept as a snapshot per scenario; pings and acknowledgements are left out.
    pub fn behaviour(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            let what = match &entry.event {
                Event::Step { index, .. } => format!("step {index}"),
                Event::Received(Packet::ConnAck(c)) => {
                    format!(
                        "CONNACK {:#04x} session_present={}",
                        c.reason_code as u8, c.session_present
                    )
                }
                Event::Received(Packet::SubAck(s)) => {
                    let codes: Vec<String> = s
                        .reason_codes
                        .iter()
                        .map(|c| format!("{:#04x}", *c as u8))
                        .collect();
                    format!("SUBACK {}", codes.join(" "))
                }
                Event::Received(Packet::Disconnect(d)) => {
                    format!("DISCONNECT {}", reason(d.reason_code))
                }
                Event::Received(Packet::Auth(a)) => format!("AUTH {}", reason(a.reason_code)),
                Event::Received(Packet::Publish(p)) if p.dup => format!(
                    "resent {} {:?}",
                    short(p.topic()),
                    short(&String::from_utf8_lossy(p.payload()))
                ),
                Event::Delivered { .. }
                | Event::Closed { .. }
                | Event::ConnectFailed(_)
                | Event::ClientError(_)
                | Event::Fault(_) => {
                    entry.line()[entry.line().find(&entry.host).map_or(0, |i| i + 11)..].to_string()
                }
                _ => continue,
            };
            let _ = writeln!(
                out,
                "{:>8.3}s {:<10} {what}",
                entry.at.as_secs_f64(),
                entry.host
            );
        }
        out
    }

    /// The lines around entry `index`, for failure reports.
    pub fn around(&self, index: usize, context: usize) -> String {
        let start = index.saturating_sub(context);
        let end = (index + context + 1).min(self.entries.len());
        self.entries[start..end]
            .iter()
            .map(|e| e.line() + "\n")
            .collect()
    }

    /// FNV-1a over the rendered trace: equal digests, equal runs.
    pub fn digest(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.render().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
}
