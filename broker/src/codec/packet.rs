//! The packet model: one set of types for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Fields that exist only in MQTT 5 (properties, most reason codes) are present on every packet;
//! for 3.x they hold their neutral value (no properties, `Success`) and the encoder leaves them
//! out. The decoder produces exactly these neutral values for 3.x, so one broker core serves
//! both versions without a parallel tree of types.

use bytes::Bytes;

use super::bytestr::ByteStr;
use super::content::Content;
use super::properties::Properties;
use super::reason::ReasonCode;
use crate::types::{PacketId, QoS};

/// The protocol level a client asked for in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3. Still sent by old devices.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "MQIsdp",
            _ => "MQTT",
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// The control packet types (fixed header bits 7-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    pub fn from_u8(value: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match value {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The fixed-header flags every packet but PUBLISH must carry (spec: [MQTT-2.2.2-1], v3.1.1;
    /// [MQTT-2.1.3-1], v5).
    pub fn required_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }

    pub fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }
}

impl std::fmt::Display for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: CONNECT is rare and by far the largest packet.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

impl Packet {
    /// The packet's properties, for the packets that have them.
    pub fn properties_mut(&mut self) -> Option<&mut Properties> {
        match self {
            Packet::Connect(c) => Some(&mut c.properties),
            Packet::ConnAck(c) => Some(&mut c.properties),
            Packet::Publish(p) => Some(&mut p.properties),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                Some(&mut a.properties)
            }
            Packet::Subscribe(s) => Some(&mut s.properties),
            Packet::SubAck(s) => Some(&mut s.properties),
            Packet::Unsubscribe(u) => Some(&mut u.properties),
            Packet::UnsubAck(u) => Some(&mut u.properties),
            Packet::Disconnect(d) => Some(&mut d.properties),
            Packet::Auth(a) => Some(&mut a.properties),
            Packet::PingReq | Packet::PingResp => None,
        }
    }

    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// "Clean Session" in 3.x, "Clean Start" in 5.
    pub clean_start: bool,
    /// Seconds; 0 turns keep alive off.
    pub keep_alive: u16,
    pub properties: Properties,
    /// May be empty: the broker decides whether to assign one (v5) or refuse (3.1.1 with a
    /// persistent session).
    pub client_id: ByteStr,
    pub will: Option<Will>,
    pub username: Option<ByteStr>,
    pub password: Option<Bytes>,
    /// The top bit of the 3.1 / 3.1.1 protocol level (0x83, 0x84): the client is another
    /// broker's bridge (Mosquitto's `try_private`, also EMQX's). Always false in MQTT 5, where
    /// bridges use No Local and Retain As Published instead.
    pub bridge: bool,
}

/// The message a broker publishes on behalf of a client whose connection ends abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 will properties (will delay, message expiry, content type, ...).
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// 3.1.1 return codes map to and from these (see [`ReasonCode::to_v3_connack`]).
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Set only on a re-delivery attempt; never on QoS 0.
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// The topic name (empty only in MQTT 5 when a topic alias stands in for it) and the
    /// payload; decoded, both are zero-copy slices of the buffer the packet was read from.
    pub content: Content,
    /// `Some` exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    pub properties: Properties,
}

impl Publish {
    pub fn topic(&self) -> &str {
        self.content.topic()
    }

    pub fn payload(&self) -> &[u8] {
        self.content.payload()
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: PacketId,
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement with no properties: all that 3.x can express.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::new(),
        }
    }
}

/// What to do with retained messages when a subscription is made (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist before.
    SendAtNewSubscribe = 1,
    DoNotSend = 2,
}

/// The options byte after each SUBSCRIBE filter. In 3.x only `qos` exists; the other fields
/// are false / `SendAtSubscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    pub fn new(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// Never empty. Filters are valid strings but not yet checked as topic filters: a bad filter
    /// earns a failure code in the SUBACK, not a closed connection.
    pub filters: Vec<(ByteStr, SubscriptionOptions)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// One per filter, in order. 3.1.1 return codes map to and from these.
    pub reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// Never empty.
    pub filters: Vec<ByteStr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub properties: Properties,
    /// One per filter in MQTT 5; always empty in 3.x, whose UNSUBACK has no payload.
    pub reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

impl Disconnect {
    pub fn normal() -> Disconnect {
        Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: Properties,
}
