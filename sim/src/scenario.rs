//! The scenario language: a YAML file that scripts clients and faults (scenarios/README.md).
//!
//! Everything is checked while parsing: unknown keys, unknown clients, malformed durations and
//! hex, all with the file, line and field. A scenario that parses can run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    /// One sentence: what the scenario shows.
    pub goal: String,
    /// Spec statements the scenario checks.
    #[serde(default)]
    pub spec: Vec<String>,
    /// Seed of the simulation's randomness; runs with the same seed are identical.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Limits overriding the broker's defaults.
    #[serde(default)]
    pub broker: BrokerOverrides,
    pub clients: BTreeMap<String, ClientSpec>,
    pub steps: Vec<Step>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerOverrides {
    pub connect_timeout: Option<DurationSpec>,
    pub inflight_count_max: Option<u16>,
    pub receive_maximum_count: Option<u16>,
    pub queued_messages_max: Option<usize>,
    pub queue_qos0: Option<bool>,
    pub keep_alive_max_secs: Option<u16>,
    pub session_expiry_max_secs: Option<u32>,
    pub topic_alias_max: Option<u16>,
    pub topic_levels_max: Option<usize>,
    pub memory_bytes_max: Option<usize>,
    /// SCRAM-SHA-256 users (name to password) for MQTT 5 enhanced authentication.
    #[serde(default)]
    pub scram_users: BTreeMap<String, String>,
    /// Keep the broker's state in a store on its simulated disk: a crash loses only what was
    /// not synced, and a restart recovers the rest.
    #[serde(default)]
    pub persistence: bool,
    /// Serve MQTT over WebSocket (on /mqtt) instead of plain TCP: every client upgrades
    /// first, and the broker's framing runs over turmoil's streams.
    #[serde(default)]
    pub websocket: bool,
    /// Publish the `$SYS` tree this often (off unless set, so scenarios without it see no
    /// `$SYS` retained messages).
    pub sys_interval: Option<DurationSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V3_1,
    V3_1_1,
    V5,
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let text = match serde_yaml_ng::Value::deserialize(d)? {
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::String(s) => s,
            other => {
                return Err(de::Error::custom(format!(
                    "version must be 3.1, 3.1.1 or 5, not {other:?}"
                )))
            }
        };
        match text.as_str() {
            "3.1" => Ok(Version::V3_1),
            "3.1.1" => Ok(Version::V3_1_1),
            "5" | "5.0" => Ok(Version::V5),
            other => Err(de::Error::custom(format!(
                "version must be 3.1, 3.1.1 or 5, not {other:?}"
            ))),
        }
    }
}

/// A duration written as `500ms`, `2s` or `1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DurationSpec, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(DurationSpec)
            .map_err(de::Error::custom)
    }
}

/// Upper bound of link latency in runs with random latency (`tern-sim --random-latency`).
/// Here, not in `world.rs`, because the checkers judge message timing against it and read
/// only the trace and the scenario.
pub const RANDOM_LATENCY_MAX: Duration = Duration::from_millis(20);

/// The host that carries every client no fault names (a name no client may take). Turmoil
/// steps every host's runtime and every link on every tick (links grow with the square of the
/// hosts), so one host for all the clients that need no network of their own is what keeps
/// large scenarios fast; a client that a partition, hold, latency, loss or crash step names
/// gets a host of its own, since those act on hosts. The trace names clients, never hosts.
pub const SHARED_HOST: &str = "clients";

/// The longest text a `{ repeat, times }` may build: beyond any MQTT string or packet.
const REPEATED_TEXT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A text field: a plain string, or `{ repeat: "ab", times: 3 }` for "ababab", so a scenario
/// can say "a topic of 20,000 levels" in one line instead of carrying the 20,000 characters.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Plain(String),
        Repeated(Repeated),
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Repeated {
        repeat: String,
        times: usize,
    }
    match Text::deserialize(d)? {
        Text::Plain(text) => Ok(text),
        Text::Repeated(Repeated { repeat, times }) => {
            if repeat.len().saturating_mul(times) > REPEATED_TEXT_BYTES_MAX {
                return Err(de::Error::custom(format!(
                    "repeated text longer than {REPEATED_TEXT_BYTES_MAX} bytes"
                )));
            }
            Ok(repeat.repeat(times))
        }
    }
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text(d).map(Some)
}

/// `{n}` in `template` replaced by `n`: the number of a message in a `count` series.
pub fn numbered(template: &str, n: u32) -> String {
    template.replace("{n}", &n.to_string())
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = || format!("{text:?} is not a duration; write e.g. 500ms, 2s or 1m");
    let (number, unit) = text.trim().split_at(
        text.trim()
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(hint)?,
    );
    let value: u64 = number.parse().map_err(|_| hint())?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(hint()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub version: Version,
    /// Client identifier; defaults to the client's name in the file.
    pub id: Option<String>,
    /// Clean session (3.x) / clean start (5).
    #[serde(default = "yes")]
    pub clean: bool,
    /// MQTT 5 session expiry interval in seconds.
    pub session_expiry: Option<u32>,
    pub keep_alive: Option<DurationSpec>,
    pub will: Option<WillSpec>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT 5 Receive Maximum.
    pub receive_maximum: Option<u16>,
    /// MQTT 5 Topic Alias Maximum: how many topic aliases the broker may use towards it.
    pub topic_alias_max: Option<u16>,
    /// MQTT 5 enhanced authentication with SCRAM-SHA-256 at every CONNECT.
    pub scram: Option<ScramSpec>,
    /// Answer QoS 1/2 messages (PUBACK, PUBREC, PUBCOMP). Off: acknowledgements are withheld.
    #[serde(default = "yes")]
    pub auto_ack: bool,
    /// Connect as another broker's bridge: the top bit of the 3.x protocol level, as
    /// Mosquitto's bridges set it (3.1 and 3.1.1 only).
    #[serde(default)]
    pub bridge: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScramSpec {
    pub user: String,
    pub password: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WillSpec {
    pub topic: String,
    pub payload: String,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// MQTT 5 will delay interval.
    pub delay: Option<DurationSpec>,
    /// MQTT 5 will properties: user properties (in order) and message expiry in seconds.
    #[serde(default)]
    pub user_properties: Vec<(String, String)>,
    pub message_expiry: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    #[serde(deserialize_with = "text")]
    pub topic: String,
    #[serde(default, deserialize_with = "text")]
    pub payload: String,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// MQTT 5 user properties, in order.
    #[serde(default)]
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 message expiry interval in seconds.
    pub message_expiry: Option<u32>,
    /// MQTT 5 Topic Alias: with a topic, sets the alias; with an empty topic, uses it.
    pub topic_alias: Option<u16>,
    /// How long the step lets a QoS 1/2 flow run before the next step (default 1s; the step
    /// returns earlier when the flow completes).
    pub settle: Option<DurationSpec>,
    /// Publish this many messages back to back, without waiting for acknowledgements
    /// (`{n}` in the topic and payload is the message's number from 0); the step settles on
    /// the last one. 1 to 65535 (QoS 1/2 packet ids must not repeat while in flight).
    pub count: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeSpec {
    #[serde(deserialize_with = "text")]
    pub filter: String,
    #[serde(default)]
    pub qos: u8,
    /// Expected SUBACK code for the filter (default: the granted QoS).
    pub expect_code: Option<u8>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectSpec {
    pub client: String,
    /// Expected CONNACK reason code (3.1.1 return codes for 3.x clients); default 0.
    #[serde(default)]
    pub code: u8,
    pub session_present: Option<bool>,
}

/// What a received PUBLISH must look like; absent fields match anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishMatch {
    #[serde(default, deserialize_with = "opt_text")]
    pub topic: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub payload: Option<String>,
    pub qos: Option<u8>,
    pub retain: Option<bool>,
    pub dup: Option<bool>,
    pub user_properties: Option<Vec<(String, String)>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// A PUBLISH matching these fields arrives.
    pub publish: Option<PublishMatch>,
    /// No PUBLISH arrives (on this topic, if given) during `for`.
    pub nothing: Option<NothingMatch>,
    /// The broker closes the connection (v5: with this DISCONNECT reason code, if given).
    pub disconnected: Option<DisconnectedMatch>,
    /// How long to wait for `publish` or `disconnected`.
    pub within: Option<DurationSpec>,
    /// How long `nothing` must hold.
    #[serde(rename = "for")]
    pub during: Option<DurationSpec>,
    /// With `publish`: this many matching PUBLISHes (default 1).
    pub count: Option<u32>,
    /// With `publish`: match a PUBLISH that came before those earlier expectations of this
    /// client matched (for sets whose order is not promised). Default: after them.
    #[serde(default)]
    pub any_order: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NothingMatch {
    pub topic: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectedMatch {
    pub reason: Option<u8>,
}

#[derive(Debug, Clone)]
pub enum ClientAction {
    Subscribe(SubscribeSpec),
    Unsubscribe(String),
    Publish(PublishSpec),
    /// A normal DISCONNECT.
    Disconnect,
    /// An MQTT 5 DISCONNECT with this reason code (4: publish the will).
    DisconnectWithReason(u8),
    /// The client closes its socket without DISCONNECT.
    Close,
    /// Bytes written as they are, given in hex ("30 03 00 01 74").
    Raw(HexBytes),
    Expect(Expect),
    /// MQTT 5 re-authentication (SCRAM-SHA-256), with the client's password unless another is
    /// given; the step waits for the broker's AUTH 0x00 unless `expect_failure` is set.
    Reauthenticate(ReauthSpec),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthSpec {
    pub password: Option<String>,
    #[serde(default)]
    pub expect_failure: bool,
}

const ACTIONS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "publish",
    "disconnect",
    "disconnect_with_reason",
    "close",
    "raw",
    "expect",
    "reauthenticate",
];

/// A client action: `disconnect` or `close` alone, or a map with one action key.
impl<'de> Deserialize<'de> for ClientAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClientAction, D::Error> {
        struct ActionVisitor;
        impl<'de> Visitor<'de> for ActionVisitor {
            type Value = ClientAction;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a client action, one of {ACTIONS:?}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClientAction, E> {
                match v {
                    "disconnect" => Ok(ClientAction::Disconnect),
                    "close" => Ok(ClientAction::Close),
                    other => Err(E::custom(format!(
                        "unknown action {other:?}; actions: {ACTIONS:?}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientAction, A::Error> {
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom("empty action"))?;
                let action = match key.as_str() {
                    "subscribe" => ClientAction::Subscribe(map.next_value()?),
                    "unsubscribe" => ClientAction::Unsubscribe(map.next_value()?),
                    "publish" => ClientAction::Publish(map.next_value()?),
                    "disconnect_with_reason" => {
                        ClientAction::DisconnectWithReason(map.next_value()?)
                    }
                    "raw" => ClientAction::Raw(map.next_value()?),
                    "expect" => ClientAction::Expect(map.next_value()?),
                    "reauthenticate" => ClientAction::Reauthenticate(map.next_value()?),
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown action {other:?}; actions: {ACTIONS:?}"
                        )))
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "one action per step; found another: {extra:?}"
                    )));
                }
                Ok(action)
            }
        }
        d.deserialize_any(ActionVisitor)
    }
}

#[derive(Debug, Clone)]
pub struct HexBytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HexBytes, D::Error> {
        let text = String::deserialize(d)?;
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.len() % 2 != 0 {
            return Err(de::Error::custom(
                "raw bytes need an even number of hex digits",
            ));
        }
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map(HexBytes)
            .map_err(|_| de::Error::custom(format!("{text:?} is not hex")))
    }
}

/// Two hosts: a client name and "broker" (or two client names).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Link {
    Both([String; 2]),
    OneWay { from: String, to: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSetting<T> {
    pub between: [String; 2],
    #[serde(flatten)]
    pub value: T,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub latency: DurationSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loss {
    pub rate: f64,
}

#[derive(Debug, Clone)]
pub enum Step {
    /// Connect clients, expecting success (a list of names) or a given outcome.
    Connect(Vec<ConnectSpec>),
    Client {
        client: String,
        action: ClientAction,
    },
    Wait(Duration),
    Partition(Link),
    Repair(Link),
    /// Messages on the link are held (delayed), not lost, until `release`.
    Hold([String; 2]),
    Release([String; 2]),
    Latency {
        between: [String; 2],
        latency: Duration,
    },
    Loss {
        between: [String; 2],
        rate: f64,
    },
    /// Stops a host at once; its peers see the connections end. The broker's disk keeps
    /// what was synced (with `persistence`).
    Crash(String),
    /// Starts a crashed host again (a running one is crashed first). The broker recovers
    /// from its store (with `persistence`) or starts empty.
    Restart(String),
    /// A fault of the broker's disk (with `persistence`).
    Disk(DiskFault),
}

/// What can go wrong with the broker's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFault {
    /// The next fsync fails: the broker stops (a failed fsync is fatal) until `restart`.
    FailFsync,
    /// Every write fails: the broker refuses new persistent work until `has_room`.
    Full,
    /// The file can grow again.
    HasRoom,
    /// The power fails during the next fsync: its writes reach the disk only in part, and
    /// the broker is down until `restart`.
    TearWrite,
}

impl fmt::Display for DiskFault {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            DiskFault::FailFsync => "fail_fsync",
            DiskFault::Full => "full",
            DiskFault::HasRoom => "has_room",
            DiskFault::TearWrite => "tear_write",
        })
    }
}

/// The step keywords; any other key is a client name.
const KEYWORDS: &[&str] = &[
    "connect",
    "wait",
    "partition",
    "repair",
    "hold",
    "release",
    "latency",
    "loss",
    "crash",
    "restart",
    "disk",
];

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = Step;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a step: a map with one key, one of {KEYWORDS:?} or a client name"
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom("empty step"))?;
                let step = match key.as_str() {
                    "connect" => {
                        let value: ConnectList = map.next_value()?;
                        Step::Connect(value.0)
                    }
                    "wait" => Step::Wait(map.next_value::<DurationSpec>()?.0),
                    "partition" => Step::Partition(map.next_value()?),
                    "repair" => Step::Repair(map.next_value()?),
                    "hold" => Step::Hold(map.next_value()?),
                    "release" => Step::Release(map.next_value()?),
                    "latency" => {
                        let s: LinkSetting<Latency> = map.next_value()?;
                        Step::Latency {
                            between: s.between,
                            latency: s.value.latency.0,
                        }
                    }
                    "loss" => {
                        let s: LinkSetting<Loss> = map.next_value()?;
                        if !(0.0..=1.0).contains(&s.value.rate) {
                            return Err(de::Error::custom("loss rate must be between 0 and 1"));
                        }
                        Step::Loss {
                            between: s.between,
                            rate: s.value.rate,
                        }
                    }
                    "crash" => Step::Crash(map.next_value()?),
                    "restart" => Step::Restart(map.next_value()?),
                    "disk" => Step::Disk(map.next_value()?),
                    client => Step::Client {
                        client: client.to_string(),
                        action: map.next_value()?,
                    },
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a step has one key; found another: {extra:?}"
                    )));
                }
                Ok(step)
            }
        }
        d.deserialize_map(StepVisitor)
    }
}

/// `connect: [a, b]` or `connect: { client: a, code: 5 }` or a list of either.
struct ConnectList(Vec<ConnectSpec>);

impl<'de> Deserialize<'de> for ConnectList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ConnectList, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum One {
            Name(String),
            Spec(ConnectSpec),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Many {
            List(Vec<One>),
            One(One),
        }
        let to_spec = |one: One| match one {
            One::Name(client) => ConnectSpec {
                client,
                code: 0,
                session_present: None,
            },
            One::Spec(spec) => spec,
        };
        Ok(ConnectList(match Many::deserialize(d)? {
            Many::List(list) => list.into_iter().map(to_spec).collect(),
            Many::One(one) => vec![to_spec(one)],
        }))
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.into(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.into(),
            message,
        };
        let mut scenario: Scenario =
            serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if scenario.name.is_empty() {
            scenario.name = path.with_extension("").display().to_string();
        }
        scenario.check().map_err(|message| {
            invalid(format!(
                "{message} (hint: clients are declared under `clients:`)"
            ))
        })?;
        Ok(scenario)
    }

    /// Cross-references the YAML cannot express: every name used is declared.
    fn check(&self) -> Result<(), String> {
        let known = |name: &str| name == "broker" || self.clients.contains_key(name);
        let host = |name: &str| {
            if known(name) {
                Ok(())
            } else {
                Err(format!("unknown host {name:?}"))
            }
        };
        for (i, step) in self.steps.iter().enumerate() {
            let at = |e: String| format!("step {}: {e}", i + 1);
            match step {
                Step::Connect(list) => {
                    for c in list {
                        if !self.clients.contains_key(&c.client) {
                            return Err(at(format!("unknown client {:?}", c.client)));
                        }
                    }
                }
                Step::Client { client, action } => {
                    if !self.clients.contains_key(client) {
                        return Err(at(format!(
                            "unknown client or step keyword {client:?}; keywords: {KEYWORDS:?}"
                        )));
                    }
                    let count = match action {
                        ClientAction::Publish(p) => p.count,
                        ClientAction::Expect(e) => e.count,
                        _ => None,
                    };
                    if count.is_some_and(|n| !(1..=65_535).contains(&n)) {
                        return Err(at("`count` must be 1 to 65535".into()));
                    }
                }
                Step::Partition(link) | Step::Repair(link) => match link {
                    Link::Both([a, b]) | Link::OneWay { from: a, to: b } => {
                        host(a).and(host(b)).map_err(at)?;
                    }
                },
                Step::Hold([a, b]) | Step::Release([a, b]) => host(a).and(host(b)).map_err(at)?,
                Step::Latency {
                    between: [a, b], ..
                }
                | Step::Loss {
                    between: [a, b], ..
                } => host(a).and(host(b)).map_err(at)?,
                Step::Crash(h) => host(h).map_err(at)?,
                Step::Restart(h) => {
                    if h != "broker" {
                        return Err(at(format!("only the broker can be restarted, not {h:?}")));
                    }
                }
                Step::Wait(_) => {}
                Step::Disk(_) if !self.broker.persistence => {
                    return Err(at(
                        "a disk fault needs `broker: { persistence: true }`".into()
                    ));
                }
                Step::Disk(_) => {}
            }
        }
        for (name, client) in &self.clients {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!(
                    "client name {name:?} must be a word without spaces"
                ));
            }
            if name == "broker" || name == SHARED_HOST {
                return Err(format!(
                    "{name:?} is the name of a simulated host; give the client another name"
                ));
            }
            if let Some(will) = &client.will {
                if will.qos > 2 {
                    return Err(format!("client {name}: will qos must be 0, 1 or 2"));
                }
            }
            if client.bridge && client.version == Version::V5 {
                return Err(format!(
                    "client {name}: the bridge bit is MQTT 3.1 / 3.1.1's (MQTT 5 bridges use No Local)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("scenarios/x.yaml"))
    }

    const MINIMAL: &str = "goal: g\nclients:\n  a: { version: 5 }\nsteps:\n  - connect: [a]\n";

    #[test]
    fn a_minimal_scenario_parses() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.name, "scenarios/x");
        assert!(matches!(&s.steps[0], Step::Connect(list) if list[0].client == "a"));
    }

    #[test]
    fn every_step_kind_parses() {
        let text = r#"
goal: all steps
clients:
  a: { version: 3.1.1, keep_alive: 5s, will: { topic: w, payload: x, qos: 1, retain: true } }
  b: { version: "5", clean: false, session_expiry: 60 }
steps:
  - connect: [a, { client: b, code: 0, session_present: false }]
  - a: { subscribe: { filter: "t/#", qos: 1 } }
  - a: { unsubscribe: t }
  - b: { publish: { topic: t, payload: hi, qos: 2, retain: true, user_properties: [[k, v]] } }
  - b: disconnect
  - b: { disconnect_with_reason: 4 }
  - a: close
  - a: { raw: "c0 00" }
  - a: { expect: { publish: { topic: t, payload: hi }, within: 1s } }
  - a: { expect: { nothing: { topic: t }, for: 500ms } }
  - a: { expect: { disconnected: { reason: 142 }, within: 2s } }
  - wait: 1m
  - partition: [a, broker]
  - partition: { from: a, to: broker }
  - repair: [a, broker]
  - hold: [a, broker]
  - release: [a, broker]
  - latency: { between: [a, broker], latency: 50ms }
  - loss: { between: [a, broker], rate: 0.1 }
  - crash: broker
  - restart: broker
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.steps.len(), 21);
    }

    #[test]
    fn repeated_text_and_counted_steps_parse() {
        let scenario = parse(
            r#"
goal: repeat and count
clients:
  a: { version: 5 }
steps:
  - connect: [a]
  - a: { subscribe: { filter: { repeat: "+/", times: 3 } } }
  - a: { publish: { topic: "t/{n}", payload: { repeat: "x", times: 4 }, count: 5 } }
  - a: { expect: { publish: { payload: xxxx }, count: 5 } }
"#,
        )
        .unwrap();
        let Step::Client {
            action: ClientAction::Subscribe(sub),
            ..
        } = &scenario.steps[1]
        else {
            panic!("{:?}", scenario.steps[1]);
        };
        assert_eq!(sub.filter, "+/+/+/");
        let Step::Client {
            action: ClientAction::Publish(p),
            ..
        } = &scenario.steps[2]
        else {
            panic!("{:?}", scenario.steps[2]);
        };
        assert_eq!((p.payload.as_str(), p.count), ("xxxx", Some(5)));
        assert_eq!(numbered(&p.topic, 3), "t/3");
        let too_long = r#"
goal: too long
clients:
  a: { version: 5 }
steps:
  - a: { publish: { topic: { repeat: "xxxxxxxx", times: 100000000 } } }
"#;
        assert!(parse(too_long).is_err());
        let zero = r#"
goal: zero
clients:
  a: { version: 5 }
steps:
  - a: { expect: { publish: {}, count: 0 } }
"#;
        assert!(parse(zero).is_err(), "count 0 would check nothing");
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let err = parse("goal: g\nclients:\n  a: { version: 5, colour: red }\nsteps: []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scenarios/x.yaml") && err.contains("line 3") && err.contains("colour"),
            "{err}"
        );
        let err = parse("goal: g\nclients:\n  a: { version: 4 }\nsteps: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("version must be"), "{err}");
        let err = parse("goal: g\nclients:\n  a: { version: 5 }\nsteps:\n  - wait: soon\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 5") && err.contains("not a duration"),
            "{err}"
        );
        let err = parse("goal: g\nclients:\n  a: { version: 5 }\nsteps:\n  - b: close\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown client") && err.contains("\"b\""),
            "{err}"
        );
        let err = parse("goal: g\nclients:\n  a: { version: 5 }\nsteps:\n  - a: { raw: \"zz\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not hex"), "{err}");
        let err = parse("clients: {}\nsteps: []\n").unwrap_err().to_string();
        assert!(err.contains("goal"), "{err}");
    }
}
