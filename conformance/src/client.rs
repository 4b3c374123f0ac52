//! The client abstraction every case is written against, and the list of client kinds.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    Rumqttc,
    Paho,
    /// Tern's own codec: sends exactly what it is told.
    Raw,
}

/// How a client reaches the broker: each conformance broker listens in all four ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Tcp,
    Tls,
    /// WebSocket on /mqtt.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Net {
    pub fn is_tls(self) -> bool {
        matches!(self, Net::Tls | Net::Wss)
    }
}

/// One client library speaking one protocol version over one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub library: Library,
    pub version: Version,
    pub net: Net,
}

const fn kind(library: Library, version: Version, net: Net) -> Kind {
    Kind {
        library,
        version,
        net,
    }
}

impl Kind {
    /// Every library over TCP, and the two that have TLS and WebSocket over those too (the
    /// raw client is Tern's own codec: TCP only).
    pub const ALL: [Kind; 18] = [
        kind(Library::Rumqttc, Version::V311, Net::Tcp),
        kind(Library::Rumqttc, Version::V5, Net::Tcp),
        kind(Library::Paho, Version::V311, Net::Tcp),
        kind(Library::Paho, Version::V5, Net::Tcp),
        kind(Library::Raw, Version::V311, Net::Tcp),
        kind(Library::Raw, Version::V5, Net::Tcp),
        kind(Library::Rumqttc, Version::V311, Net::Tls),
        kind(Library::Rumqttc, Version::V5, Net::Tls),
        kind(Library::Paho, Version::V311, Net::Tls),
        kind(Library::Paho, Version::V5, Net::Tls),
        kind(Library::Rumqttc, Version::V311, Net::Ws),
        kind(Library::Rumqttc, Version::V5, Net::Ws),
        kind(Library::Paho, Version::V311, Net::Ws),
        kind(Library::Paho, Version::V5, Net::Ws),
        kind(Library::Rumqttc, Version::V311, Net::Wss),
        kind(Library::Rumqttc, Version::V5, Net::Wss),
        kind(Library::Paho, Version::V311, Net::Wss),
        kind(Library::Paho, Version::V5, Net::Wss),
    ];

    pub fn is_v5(self) -> bool {
        self.version == Version::V5
    }

    /// A short name usable in client ids and topics.
    pub fn slug(self) -> String {
        let library = match (self.library, self.version) {
            (Library::Rumqttc, Version::V311) => "rumqttc3",
            (Library::Rumqttc, Version::V5) => "rumqttc5",
            (Library::Paho, Version::V311) => "paho3",
            (Library::Paho, Version::V5) => "paho5",
            (Library::Raw, Version::V311) => "raw3",
            (Library::Raw, Version::V5) => "raw5",
        };
        match self.net {
            Net::Tcp => library.to_owned(),
            Net::Tls => format!("{library}-tls"),
            Net::Ws => format!("{library}-ws"),
            Net::Wss => format!("{library}-wss"),
        }
    }

    /// Connects a client of this kind to the broker whose TCP listener is `addr` (through
    /// the listener of this kind's transport), or to `addr` itself if it is no broker's (a
    /// fault-injecting proxy in front of the right listener).
    pub async fn connect(
        self,
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> anyhow::Result<Box<dyn Client>> {
        let addr = crate::broker::listener_for(addr, self.net);
        match self.library {
            Library::Rumqttc => {
                crate::rumqttc_client::connect(self.version, self.net, addr, options).await
            }
            Library::Paho => {
                crate::paho_client::connect(self.version, self.net, addr, options).await
            }
            Library::Raw => crate::raw_client::connect(self.version, addr, options).await,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let library = match self.library {
            Library::Rumqttc => "rumqttc",
            Library::Paho => "paho-mqtt",
            Library::Raw => "raw codec",
        };
        let version = match self.version {
            Version::V311 => "3.1.1",
            Version::V5 => "5.0",
        };
        let net = match self.net {
            Net::Tcp => "",
            Net::Tls => " TLS",
            Net::Ws => " WS",
            Net::Wss => " WSS",
        };
        write!(f, "{library} {version}{net}")
    }
}

/// MQTT 5 message properties the cases check end to end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub user: Vec<(String, String)>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub content_type: Option<String>,
    pub message_expiry: Option<u32>,
    /// On publish: use this topic alias (with an empty topic to use an alias already set).
    /// On receipt: the alias the broker used, the topic already resolved.
    pub topic_alias: Option<u16>,
    /// Received only.
    pub subscription_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Props,
}

impl Message {
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>, qos: u8) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            props: Props::default(),
        }
    }

    pub fn retained(mut self) -> Message {
        self.retain = true;
        self
    }
}

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: Duration,
    /// MQTT 5 session expiry interval; 3.1.1 clients keep a non-clean session forever.
    pub session_expiry: Option<u32>,
    pub will: Option<Message>,
    pub credentials: Option<(String, String)>,
    /// MQTT 5 CONNECT properties (ignored by 3.1.1 clients).
    pub receive_maximum: Option<u16>,
    pub packet_bytes_max: Option<u32>,
    pub topic_alias_max: Option<u16>,
    pub request_response_information: bool,
    /// MQTT 5 Request Problem Information (default true, as in the spec).
    pub request_problem_information: bool,
    /// MQTT 5 Will Delay Interval, seconds.
    pub will_delay: Option<u32>,
    /// Over TLS: present the test PKI's client certificate.
    pub client_certificate: bool,
}

impl ConnectOptions {
    pub fn new(client_id: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            client_id: client_id.into(),
            clean: true,
            keep_alive: Duration::from_secs(30),
            session_expiry: None,
            will: None,
            credentials: None,
            receive_maximum: None,
            packet_bytes_max: None,
            topic_alias_max: None,
            request_response_information: false,
            request_problem_information: true,
            will_delay: None,
            client_certificate: false,
        }
    }

    /// A session that survives disconnection: clean session 0, and for v5 an expiry.
    pub fn persistent(mut self) -> ConnectOptions {
        self.clean = false;
        self.session_expiry = Some(300);
        self
    }
}

/// The topic aliases a broker set on one connection, as a receiving client keeps them.
///
/// Neither Paho C nor rumqttc 0.25 (which reports a PUBLISH before its own state resolves the
/// alias) give the application the topic of a PUBLISH that uses an alias; an application must
/// keep the map itself, and the adapters do it with this.
#[derive(Debug, Default)]
pub struct TopicAliases(std::collections::BTreeMap<u16, String>);

impl TopicAliases {
    /// The topic of a received PUBLISH: its own, which also sets `alias`, or the one `alias`
    /// stands for when the topic is empty.
    pub fn resolve(&mut self, topic: &str, alias: Option<u16>) -> anyhow::Result<String> {
        match (topic.is_empty(), alias) {
            (false, Some(alias)) => {
                self.0.insert(alias, topic.to_string());
                Ok(topic.to_string())
            }
            (true, Some(alias)) => self.0.get(&alias).cloned().ok_or_else(|| {
                anyhow::anyhow!("broker used topic alias {alias} before setting it")
            }),
            _ => Ok(topic.to_string()),
        }
    }
}

/// What the CONNACK said, as far as the client library lets the application see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckInfo {
    pub session_present: bool,
    pub assigned_client_id: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<String>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub wildcard_available: Option<bool>,
    pub subscription_ids_available: Option<bool>,
    pub shared_available: Option<bool>,
}

/// What a SUBACK said about one filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubAckInfo {
    pub granted: bool,
    /// MQTT 5 Reason String.
    pub reason_string: Option<String>,
}

/// What a SUBSCRIBE asks for beyond the filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOptions {
    pub qos: u8,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Subscription Identifier.
    pub id: Option<u32>,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling: 0 send retained at subscribe, 1 only for a new subscription,
    /// 2 never.
    pub retain_handling: u8,
}

impl SubOptions {
    pub fn qos(qos: u8) -> SubOptions {
        SubOptions {
            qos,
            ..SubOptions::default()
        }
    }
}

/// A connected client. Every call either completes its MQTT exchange or fails.
pub trait Client: Send {
    /// What the CONNACK said.
    fn connack(&self) -> &ConnAckInfo;
    /// The CONNACK's session-present flag.
    fn session_present(&self) -> bool {
        self.connack().session_present
    }
    /// Subscribes and waits for a successful SUBACK.
    fn subscribe<'a>(&'a mut self, filter: &'a str, qos: u8) -> BoxFuture<'a, anyhow::Result<()>> {
        self.subscribe_with(filter, SubOptions::qos(qos))
    }
    /// Subscribes with options and waits for a successful SUBACK.
    fn subscribe_with<'a>(
        &'a mut self,
        filter: &'a str,
        options: SubOptions,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let ack = self.try_subscribe(filter, options).await?;
            anyhow::ensure!(ack.granted, "subscription to {filter} refused: {ack:?}");
            Ok(())
        })
    }
    /// Subscribes and returns what the SUBACK said, granted or not.
    fn try_subscribe<'a>(
        &'a mut self,
        filter: &'a str,
        options: SubOptions,
    ) -> BoxFuture<'a, anyhow::Result<SubAckInfo>>;
    /// Unsubscribes and waits for the UNSUBACK.
    fn unsubscribe<'a>(&'a mut self, filter: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Publishes and, for QoS 1 and 2, waits for the flow to complete.
    fn publish(&mut self, message: Message) -> BoxFuture<'_, anyhow::Result<()>>;
    /// The next message, or `None` if none arrives within `within` (or the connection ended).
    fn recv(&mut self, within: Duration) -> BoxFuture<'_, Option<Message>>;
    /// Whether the broker closes this connection within `within`.
    fn closed_by_broker(&mut self, within: Duration) -> BoxFuture<'_, bool>;
    /// A normal DISCONNECT.
    fn disconnect(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>>;
    /// A normal DISCONNECT that sets the MQTT 5 Session Expiry Interval; an error where the
    /// library has no way to send it.
    fn disconnect_with_session_expiry(
        self: Box<Self>,
        secs: u32,
    ) -> BoxFuture<'static, anyhow::Result<()>>;
}
