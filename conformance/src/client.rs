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

/// One client library speaking one protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub library: Library,
    pub version: Version,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind {
            library: Library::Rumqttc,
            version: Version::V311,
        },
        Kind {
            library: Library::Rumqttc,
            version: Version::V5,
        },
        Kind {
            library: Library::Paho,
            version: Version::V311,
        },
        Kind {
            library: Library::Paho,
            version: Version::V5,
        },
        Kind {
            library: Library::Raw,
            version: Version::V311,
        },
        Kind {
            library: Library::Raw,
            version: Version::V5,
        },
    ];

    pub fn is_v5(self) -> bool {
        self.version == Version::V5
    }

    /// A short name usable in client ids and topics.
    pub fn slug(self) -> &'static str {
        match (self.library, self.version) {
            (Library::Rumqttc, Version::V311) => "rumqttc3",
            (Library::Rumqttc, Version::V5) => "rumqttc5",
            (Library::Paho, Version::V311) => "paho3",
            (Library::Paho, Version::V5) => "paho5",
            (Library::Raw, Version::V311) => "raw3",
            (Library::Raw, Version::V5) => "raw5",
        }
    }

    /// Connects a client of this kind.
    pub async fn connect(
        self,
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> anyhow::Result<Box<dyn Client>> {
        match self.library {
            Library::Rumqttc => crate::rumqttc_client::connect(self.version, addr, options).await,
            Library::Paho => crate::paho_client::connect(self.version, addr, options).await,
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
        write!(f, "{library} {version}")
    }
}

/// MQTT 5 message properties the cases check end to end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub user: Vec<(String, String)>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub content_type: Option<String>,
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
        }
    }

    /// A session that survives disconnection: clean session 0, and for v5 an expiry.
    pub fn persistent(mut self) -> ConnectOptions {
        self.clean = false;
        self.session_expiry = Some(300);
        self
    }
}

/// A connected client. Every call either completes its MQTT exchange or fails.
pub trait Client: Send {
    /// The CONNACK's session-present flag.
    fn session_present(&self) -> bool;
    /// Subscribes and waits for a successful SUBACK.
    fn subscribe<'a>(&'a mut self, filter: &'a str, qos: u8) -> BoxFuture<'a, anyhow::Result<()>>;
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
}
