//! Typed codec errors: one variant per rule, each naming the rule it enforces.
//!
//! The broker needs three things from a decode error: a message for the log, the MQTT 5 reason
//! code to send before closing (3.x connections are simply closed), and the spec statement that
//! was broken, so that logs, tests and the malformed-input table all speak the same language.

use thiserror::Error;

use super::packet::{PacketType, ProtocolVersion};
use super::reason::ReasonCode;

/// Why a byte stream is not a valid MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("more than {max} user properties in one packet")]
    TooManyUserProperties { max: usize },
    #[error("variable byte integer uses more than 4 bytes")]
    VarIntTooLong,
    #[error("variable byte integer is not encoded in the fewest bytes")]
    VarIntNotMinimal,
    #[error("packet type 0 is reserved")]
    ReservedPacketType,
    #[error("AUTH (packet type 15) does not exist before MQTT 5")]
    AuthBeforeV5,
    #[error("{packet} fixed header flags are {flags:#06b}, the spec requires {required:#06b}")]
    InvalidFixedHeaderFlags {
        packet: PacketType,
        flags: u8,
        required: u8,
    },
    #[error("PUBLISH with QoS 3")]
    PublishQoS3,
    #[error("QoS 0 PUBLISH with the DUP flag set")]
    DupOnQoS0,
    #[error("{packet} ends before its {field}")]
    Truncated {
        packet: PacketType,
        field: &'static str,
    },
    #[error("{packet} has {count} bytes after its last field")]
    TrailingBytes { packet: PacketType, count: usize },
    #[error("{field} is not well-formed UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("{field} contains the null character U+0000")]
    NullCharacter { field: &'static str },
    #[error("{field} contains a wildcard character ('+' or '#')")]
    WildcardInTopicName { field: &'static str },
    #[error("PUBLISH topic name is empty")]
    EmptyTopicName,
    #[error("PUBLISH has an empty topic name and no topic alias")]
    EmptyTopicWithoutAlias,
    #[error("{packet} has packet identifier 0")]
    ZeroPacketId { packet: PacketType },
    #[error("unknown protocol name {name:?}")]
    UnknownProtocolName { name: String },
    #[error("unsupported protocol level {level} for protocol name {name:?}")]
    UnsupportedProtocolLevel { name: String, level: u8 },
    #[error("CONNECT reserved flag (bit 0) is set")]
    ConnectReservedFlag,
    #[error("CONNECT sets a will QoS without the will flag")]
    WillQoSWithoutWill,
    #[error("CONNECT sets will retain without the will flag")]
    WillRetainWithoutWill,
    #[error("CONNECT will QoS is 3")]
    WillQoS3,
    #[error("CONNECT has the password flag without the user name flag")]
    PasswordWithoutUsername,
    #[error("CONNACK reserved acknowledge flags are set ({flags:#010b})")]
    ConnAckReservedFlags { flags: u8 },
    #[error("CONNACK refuses the connection but sets session present")]
    SessionPresentOnRefusal,
    #[error("{packet} carries reason code {code:#04x}, which is not allowed there")]
    InvalidReasonCode { packet: PacketType, code: u8 },
    #[error("unknown property identifier {id:#04x}")]
    UnknownProperty { id: u8 },
    #[error("property {name} is not allowed in {context}")]
    PropertyNotAllowed {
        name: &'static str,
        context: &'static str,
    },
    #[error("property {name} appears more than once")]
    DuplicateProperty { name: &'static str },
    #[error("property {name} has the invalid value {value}")]
    InvalidPropertyValue { name: &'static str, value: u32 },
    #[error("{packet} has no topic filter")]
    NoTopicFilters { packet: PacketType },
    #[error("SUBSCRIBE options byte {options:#010b} sets reserved bits")]
    SubscriptionOptionsReserved { options: u8 },
    #[error("SUBSCRIBE requests QoS 3")]
    SubscribeQoS3,
    #[error("SUBSCRIBE requests retain handling 3")]
    RetainHandling3,
}

impl DecodeError {
    /// The MQTT 5 reason code that the receiver sends (in CONNACK before the connection is
    /// accepted, in DISCONNECT after) before closing the connection.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            TooManyUserProperties { .. } => ReasonCode::ImplementationSpecificError,
            UnknownProtocolName { .. } | UnsupportedProtocolLevel { .. } => {
                ReasonCode::UnsupportedProtocolVersion
            }
            DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | EmptyTopicWithoutAlias
            | RetainHandling3
            | SubscribeQoS3
            | NoTopicFilters { .. }
            | ZeroPacketId { .. } => ReasonCode::ProtocolError,
            WildcardInTopicName {
                field: "PUBLISH topic name",
            } => ReasonCode::TopicNameInvalid,
            _ => ReasonCode::MalformedPacket,
        }
    }

    /// The normative statement this error enforces, in the numbering of `version`'s spec.
    /// `None` where the rule is in the spec's text but carries no statement id. One arm per
    /// error: as long as the list of errors.
    pub fn spec_id(&self, version: ProtocolVersion) -> Option<&'static str> {
        use DecodeError::*;
        let v5 = version.is_v5();
        let pick = |v3: &'static str, v5_id: &'static str| Some(if v5 { v5_id } else { v3 });
        match self {
            VarIntNotMinimal => Some("MQTT-1.5.5-1"),
            InvalidFixedHeaderFlags { packet, .. } => match packet {
                PacketType::PubRel => Some("MQTT-3.6.1-1"),
                PacketType::Subscribe => Some("MQTT-3.8.1-1"),
                PacketType::Unsubscribe => Some("MQTT-3.10.1-1"),
                PacketType::Disconnect if v5 => Some("MQTT-3.14.1-1"),
                PacketType::Auth => Some("MQTT-3.15.1-1"),
                _ => pick("MQTT-2.2.2-2", "MQTT-2.1.3-1"),
            },
            PublishQoS3 => Some("MQTT-3.3.1-4"),
            DupOnQoS0 => Some("MQTT-3.3.1-2"),
            InvalidUtf8 {
                field: "Response Topic",
            } => Some("MQTT-3.3.2-13"),
            InvalidUtf8 {
                field: "Content Type",
            } => Some("MQTT-3.3.2-19"),
            InvalidUtf8 {
                field: "User Property",
            } => Some("MQTT-1.5.7-1"),
            InvalidUtf8 { .. } => pick("MQTT-1.5.3-1", "MQTT-1.5.4-1"),
            NullCharacter { .. } => pick("MQTT-1.5.3-2", "MQTT-1.5.4-2"),
            WildcardInTopicName {
                field: "PUBLISH topic name",
            } => Some("MQTT-3.3.2-2"),
            WildcardInTopicName {
                field: "Response Topic",
            } => Some("MQTT-3.3.2-14"),
            WildcardInTopicName { .. } => pick("MQTT-4.7.1-1", "MQTT-4.7.0-1"),
            EmptyTopicName => Some("MQTT-4.7.3-1"),
            ZeroPacketId { .. } => pick("MQTT-2.3.1-1", "MQTT-2.2.1-3"),
            UnknownProtocolName { .. } => Some("MQTT-3.1.2-1"),
            UnsupportedProtocolLevel { .. } => Some("MQTT-3.1.2-2"),
            ConnectReservedFlag => Some("MQTT-3.1.2-3"),
            WillQoSWithoutWill => pick("MQTT-3.1.2-13", "MQTT-3.1.2-11"),
            WillRetainWithoutWill => pick("MQTT-3.1.2-15", "MQTT-3.1.2-13"),
            WillQoS3 => pick("MQTT-3.1.2-14", "MQTT-3.1.2-12"),
            PasswordWithoutUsername => Some("MQTT-3.1.2-22"),
            ConnAckReservedFlags { .. } if v5 => Some("MQTT-3.2.2-1"),
            SessionPresentOnRefusal => pick("MQTT-3.2.2-4", "MQTT-3.2.2-6"),
            InvalidReasonCode { packet, .. } => match (packet, v5) {
                (PacketType::SubAck, false) => Some("MQTT-3.9.3-2"),
                (_, false) => None,
                (PacketType::ConnAck, true) => Some("MQTT-3.2.2-8"),
                (PacketType::PubAck, true) => Some("MQTT-3.4.2-1"),
                (PacketType::PubRec, true) => Some("MQTT-3.5.2-1"),
                (PacketType::PubRel, true) => Some("MQTT-3.6.2-1"),
                (PacketType::PubComp, true) => Some("MQTT-3.7.2-1"),
                (PacketType::SubAck, true) => Some("MQTT-3.9.3-2"),
                (PacketType::UnsubAck, true) => Some("MQTT-3.11.3-2"),
                (PacketType::Disconnect, true) => Some("MQTT-3.14.2-1"),
                (PacketType::Auth, true) => Some("MQTT-3.15.2-1"),
                _ => None,
            },
            InvalidPropertyValue {
                name: "Topic Alias",
                ..
            } => Some("MQTT-3.3.2-8"),
            NoTopicFilters {
                packet: PacketType::Subscribe,
            } => pick("MQTT-3.8.3-3", "MQTT-3.8.3-2"),
            NoTopicFilters { .. } => Some("MQTT-3.10.3-2"),
            SubscriptionOptionsReserved { .. } => pick("MQTT-3.8.3-4", "MQTT-3.8.3-5"),
            SubscribeQoS3 if !v5 => Some("MQTT-3.8.3-4"),
            _ => None,
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("{field} is {len} bytes, more than the 65535 a length prefix allows")]
    FieldTooLong { field: &'static str, len: usize },
    #[error("remaining length {len} exceeds the 268435455 bytes MQTT can express")]
    PacketTooLarge { len: usize },
    #[error("{packet} does not exist in {version:?}")]
    NotInVersion {
        packet: PacketType,
        version: ProtocolVersion,
    },
    #[error("{packet} with QoS {qos} must have a packet identifier exactly when QoS > 0")]
    PacketIdMismatch { packet: PacketType, qos: u8 },
    #[error("{packet} must carry at least one entry")]
    Empty { packet: PacketType },
}
