//! MQTT 5 properties (spec section 2.2.2): the list, its wire form, and which property may
//! appear in which packet.
//!
//! Properties are kept as an ordered list rather than a struct with a field per property: most
//! packets carry none (an empty `Vec` costs nothing), the order of user properties must survive
//! forwarding ([MQTT-3.3.2-18]), and one type serves every packet. The decoder enforces the
//! per-packet table and the "at most once" rule, so code reading a decoded list may take the
//! first match.

use crate::limits::USER_PROPERTIES_PER_PACKET_MAX;
use bytes::{Bytes, BytesMut};

use super::bytestr::ByteStr;
use super::error::{DecodeError, EncodeError};
use super::packet::PacketType;
use super::wire::{varint_len, Reader, Sink, VARINT_MAX};
use crate::types::QoS;

/// One property with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    /// `true`: the payload is UTF-8.
    PayloadFormatIndicator(bool),
    MessageExpiryInterval(u32),
    ContentType(ByteStr),
    ResponseTopic(ByteStr),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(ByteStr),
    ServerKeepAlive(u16),
    AuthenticationMethod(ByteStr),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(ByteStr),
    ServerReference(ByteStr),
    ReasonString(ByteStr),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    /// Only 0 or 1 on the wire.
    MaximumQoS(QoS),
    RetainAvailable(bool),
    UserProperty(ByteStr, ByteStr),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

/// Where a property list sits; each allows its own set of properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    pub fn name(self) -> &'static str {
        match self {
            PropertyContext::Connect => "CONNECT",
            PropertyContext::Will => "will properties",
            PropertyContext::ConnAck => "CONNACK",
            PropertyContext::Publish => "PUBLISH",
            PropertyContext::Ack => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            PropertyContext::Subscribe => "SUBSCRIBE",
            PropertyContext::SubAck => "SUBACK",
            PropertyContext::Unsubscribe => "UNSUBSCRIBE",
            PropertyContext::UnsubAck => "UNSUBACK",
            PropertyContext::Disconnect => "DISCONNECT",
            PropertyContext::Auth => "AUTH",
        }
    }
}

/// Identifier, name and permitted contexts of each property (spec table 2-4).
fn property_info(id: u8) -> Option<(&'static str, &'static [PropertyContext])> {
    use PropertyContext::*;
    const MESSAGE: &[PropertyContext] = &[Publish, Will];
    const ACKS: &[PropertyContext] = &[ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth];
    const ALL: &[PropertyContext] = &[
        Connect,
        Will,
        ConnAck,
        Publish,
        Ack,
        Subscribe,
        SubAck,
        Unsubscribe,
        UnsubAck,
        Disconnect,
        Auth,
    ];
    Some(match id {
        0x01 => ("Payload Format Indicator", MESSAGE),
        0x02 => ("Message Expiry Interval", MESSAGE),
        0x03 => ("Content Type", MESSAGE),
        0x08 => ("Response Topic", MESSAGE),
        0x09 => ("Correlation Data", MESSAGE),
        0x0B => ("Subscription Identifier", &[Publish, Subscribe]),
        0x11 => ("Session Expiry Interval", &[Connect, ConnAck, Disconnect]),
        0x12 => ("Assigned Client Identifier", &[ConnAck]),
        0x13 => ("Server Keep Alive", &[ConnAck]),
        0x15 => ("Authentication Method", &[Connect, ConnAck, Auth]),
        0x16 => ("Authentication Data", &[Connect, ConnAck, Auth]),
        0x17 => ("Request Problem Information", &[Connect]),
        0x18 => ("Will Delay Interval", &[Will]),
        0x19 => ("Request Response Information", &[Connect]),
        0x1A => ("Response Information", &[ConnAck]),
        0x1C => ("Server Reference", &[ConnAck, Disconnect]),
        0x1F => ("Reason String", ACKS),
        0x21 => ("Receive Maximum", &[Connect, ConnAck]),
        0x22 => ("Topic Alias Maximum", &[Connect, ConnAck]),
        0x23 => ("Topic Alias", &[Publish]),
        0x24 => ("Maximum QoS", &[ConnAck]),
        0x25 => ("Retain Available", &[ConnAck]),
        0x26 => ("User Property", ALL),
        0x27 => ("Maximum Packet Size", &[Connect, ConnAck]),
        0x28 => ("Wildcard Subscription Available", &[ConnAck]),
        0x29 => ("Subscription Identifier Available", &[ConnAck]),
        0x2A => ("Shared Subscription Available", &[ConnAck]),
        _ => return None,
    })
}

impl Property {
    pub fn id(&self) -> u8 {
        use Property::*;
        match self {
            PayloadFormatIndicator(_) => 0x01,
            MessageExpiryInterval(_) => 0x02,
            ContentType(_) => 0x03,
            ResponseTopic(_) => 0x08,
            CorrelationData(_) => 0x09,
            SubscriptionIdentifier(_) => 0x0B,
            SessionExpiryInterval(_) => 0x11,
            AssignedClientIdentifier(_) => 0x12,
            ServerKeepAlive(_) => 0x13,
            AuthenticationMethod(_) => 0x15,
            AuthenticationData(_) => 0x16,
            RequestProblemInformation(_) => 0x17,
            WillDelayInterval(_) => 0x18,
            RequestResponseInformation(_) => 0x19,
            ResponseInformation(_) => 0x1A,
            ServerReference(_) => 0x1C,
            ReasonString(_) => 0x1F,
            ReceiveMaximum(_) => 0x21,
            TopicAliasMaximum(_) => 0x22,
            TopicAlias(_) => 0x23,
            MaximumQoS(_) => 0x24,
            RetainAvailable(_) => 0x25,
            UserProperty(..) => 0x26,
            MaximumPacketSize(_) => 0x27,
            WildcardSubscriptionAvailable(_) => 0x28,
            SubscriptionIdentifierAvailable(_) => 0x29,
            SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    pub fn name(&self) -> &'static str {
        property_info(self.id()).map_or("unknown", |(name, _)| name)
    }

    /// Whether this property may appear in `context`.
    pub fn allowed_in(&self, context: PropertyContext) -> bool {
        property_info(self.id()).is_some_and(|(_, contexts)| contexts.contains(&context))
    }

    fn read(reader: &mut Reader) -> Result<Property, DecodeError> {
        use Property::*;
        let id = reader.varint("property identifier", true)?;
        let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty { id: 0xFF })?;
        let (name, _) = property_info(id).ok_or(DecodeError::UnknownProperty { id })?;
        let flag = |reader: &mut Reader| -> Result<bool, DecodeError> {
            match reader.u8(name)? {
                0 => Ok(false),
                1 => Ok(true),
                value => Err(DecodeError::InvalidPropertyValue {
                    name,
                    value: value.into(),
                }),
            }
        };
        let nonzero = |value: u32| {
            if value == 0 {
                Err(DecodeError::InvalidPropertyValue { name, value })
            } else {
                Ok(value)
            }
        };
        Ok(match id {
            0x01 => PayloadFormatIndicator(flag(reader)?),
            0x02 => MessageExpiryInterval(reader.u32(name)?),
            0x03 => ContentType(reader.string(name)?),
            0x08 => {
                // A response topic is a topic name: no wildcards (spec: [MQTT-3.3.2-14], v5).
                let topic = reader.string(name)?;
                if topic.contains(['+', '#']) {
                    return Err(DecodeError::WildcardInTopicName { field: name });
                }
                ResponseTopic(topic)
            }
            0x09 => CorrelationData(reader.binary(name)?),
            0x0B => SubscriptionIdentifier(nonzero(reader.varint(name, true)?)?),
            0x11 => SessionExpiryInterval(reader.u32(name)?),
            0x12 => AssignedClientIdentifier(reader.string(name)?),
            0x13 => ServerKeepAlive(reader.u16(name)?),
            0x15 => AuthenticationMethod(reader.string(name)?),
            0x16 => AuthenticationData(reader.binary(name)?),
            0x17 => RequestProblemInformation(flag(reader)?),
            0x18 => WillDelayInterval(reader.u32(name)?),
            0x19 => RequestResponseInformation(flag(reader)?),
            0x1A => ResponseInformation(reader.string(name)?),
            0x1C => ServerReference(reader.string(name)?),
            0x1F => ReasonString(reader.string(name)?),
            0x21 => ReceiveMaximum(nonzero(reader.u16(name)?.into())? as u16),
            0x22 => TopicAliasMaximum(reader.u16(name)?),
            0x23 => TopicAlias(nonzero(reader.u16(name)?.into())? as u16),
            0x24 => MaximumQoS(if flag(reader)? {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            }),
            0x25 => RetainAvailable(flag(reader)?),
            0x26 => UserProperty(reader.string(name)?, reader.string(name)?),
            0x27 => MaximumPacketSize(nonzero(reader.u32(name)?)?),
            0x28 => WildcardSubscriptionAvailable(flag(reader)?),
            0x29 => SubscriptionIdentifierAvailable(flag(reader)?),
            0x2A => SharedSubscriptionAvailable(flag(reader)?),
            _ => unreachable!("property_info accepted id {id:#04x}"),
        })
    }

    fn write<S: Sink>(&self, out: &mut S) -> Result<(), EncodeError> {
        use Property::*;
        out.put_varint(self.id().into());
        let name = self.name();
        match self {
            PayloadFormatIndicator(v)
            | RequestProblemInformation(v)
            | RequestResponseInformation(v)
            | RetainAvailable(v)
            | WildcardSubscriptionAvailable(v)
            | SubscriptionIdentifierAvailable(v)
            | SharedSubscriptionAvailable(v) => out.put_u8(u8::from(*v)),
            MaximumQoS(qos) => out.put_u8(qos.bits()),
            MessageExpiryInterval(v)
            | SessionExpiryInterval(v)
            | WillDelayInterval(v)
            | MaximumPacketSize(v) => out.put_u32(*v),
            ServerKeepAlive(v) | ReceiveMaximum(v) | TopicAliasMaximum(v) | TopicAlias(v) => {
                out.put_u16(*v)
            }
            SubscriptionIdentifier(v) => {
                if *v > VARINT_MAX {
                    return Err(EncodeError::PacketTooLarge { len: *v as usize });
                }
                out.put_varint(*v)
            }
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => out.put_string(name, s)?,
            CorrelationData(b) | AuthenticationData(b) => out.put_binary(name, b)?,
            UserProperty(key, value) => {
                out.put_string(name, key)?;
                out.put_string(name, value)?;
            }
        }
        Ok(())
    }
}

/// An ordered list of properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<Property>);

macro_rules! copy_accessors {
    ($($getter:ident => $variant:ident : $ty:ty),* $(,)?) => {
        $(
            pub fn $getter(&self) -> Option<$ty> {
                self.0.iter().find_map(|p| match p {
                    Property::$variant(v) => Some(*v),
                    _ => None,
                })
            }
        )*
    };
}

macro_rules! ref_accessors {
    ($($getter:ident => $variant:ident : $ty:ty),* $(,)?) => {
        $(
            pub fn $getter(&self) -> Option<&$ty> {
                self.0.iter().find_map(|p| match p {
                    Property::$variant(v) => Some(v),
                    _ => None,
                })
            }
        )*
    };
}

impl Properties {
    pub fn new() -> Properties {
        Properties(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, property: Property) {
        self.0.push(property);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Property> {
        self.0.iter()
    }

    copy_accessors! {
        payload_format_indicator => PayloadFormatIndicator: bool,
        message_expiry_interval => MessageExpiryInterval: u32,
        session_expiry_interval => SessionExpiryInterval: u32,
        server_keep_alive => ServerKeepAlive: u16,
        request_problem_information => RequestProblemInformation: bool,
        will_delay_interval => WillDelayInterval: u32,
        request_response_information => RequestResponseInformation: bool,
        receive_maximum => ReceiveMaximum: u16,
        topic_alias_maximum => TopicAliasMaximum: u16,
        topic_alias => TopicAlias: u16,
        maximum_qos => MaximumQoS: QoS,
        retain_available => RetainAvailable: bool,
        maximum_packet_size => MaximumPacketSize: u32,
        wildcard_subscription_available => WildcardSubscriptionAvailable: bool,
        subscription_identifier_available => SubscriptionIdentifierAvailable: bool,
        shared_subscription_available => SharedSubscriptionAvailable: bool,
    }

    ref_accessors! {
        content_type => ContentType: ByteStr,
        response_topic => ResponseTopic: ByteStr,
        correlation_data => CorrelationData: Bytes,
        assigned_client_identifier => AssignedClientIdentifier: ByteStr,
        authentication_method => AuthenticationMethod: ByteStr,
        authentication_data => AuthenticationData: Bytes,
        response_information => ResponseInformation: ByteStr,
        server_reference => ServerReference: ByteStr,
        reason_string => ReasonString: ByteStr,
    }

    pub fn user_properties(&self) -> impl Iterator<Item = (&ByteStr, &ByteStr)> {
        self.0.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k, v)),
            _ => None,
        })
    }

    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(id) => Some(*id),
            _ => None,
        })
    }

    /// Reads a property block (length, then properties) and checks it against `context`.
    pub fn read(reader: &mut Reader, context: PropertyContext) -> Result<Properties, DecodeError> {
        let len = reader.varint("property length", true)? as usize;
        if len == 0 {
            return Ok(Properties::new());
        }
        let mut block = reader.sub_reader(len, "properties")?;
        let mut list = Vec::new();
        let mut seen: u64 = 0;
        let mut user_properties = 0usize;
        while block.remaining() > 0 {
            let property = Property::read(&mut block)?;
            if matches!(property, Property::UserProperty(..)) {
                // Each costs far more in memory than its 5 bytes on the wire: bounded as
                // they are read, so a packet of empty pairs cannot multiply into gigabytes.
                user_properties += 1;
                if user_properties > USER_PROPERTIES_PER_PACKET_MAX {
                    return Err(DecodeError::TooManyUserProperties {
                        max: USER_PROPERTIES_PER_PACKET_MAX,
                    });
                }
            }
            let name = property.name();
            if !property.allowed_in(context) {
                return Err(DecodeError::PropertyNotAllowed {
                    name,
                    context: context.name(),
                });
            }
            let repeatable = matches!(property, Property::UserProperty(..))
                || (context == PropertyContext::Publish
                    && matches!(property, Property::SubscriptionIdentifier(_)));
            let bit = 1u64 << property.id();
            if seen & bit != 0 && !repeatable {
                return Err(DecodeError::DuplicateProperty { name });
            }
            seen |= bit;
            list.push(property);
        }
        Ok(Properties(list))
    }

    /// The encoded size of the properties, without the length prefix.
    pub fn body_len(&self) -> Result<usize, EncodeError> {
        let mut counter = super::wire::Counter::default();
        for property in &self.0 {
            property.write(&mut counter)?;
        }
        Ok(counter.0)
    }

    /// The encoded size including the variable-byte length prefix.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        let body = self.body_len()?;
        Ok(varint_len(body as u32) + body)
    }

    /// Writes the length prefix and the properties. A packet without properties still gets a
    /// property length of 0 (spec: [MQTT-2.2.2-1], v5).
    pub fn write<S: Sink>(&self, out: &mut S) -> Result<(), EncodeError> {
        if self.0.is_empty() {
            out.put_u8(0);
            return Ok(());
        }
        let body = self.body_len()?;
        if body > VARINT_MAX as usize {
            return Err(EncodeError::PacketTooLarge { len: body });
        }
        out.put_varint(body as u32);
        for property in &self.0 {
            property.write(out)?;
        }
        Ok(())
    }
}

impl From<Vec<Property>> for Properties {
    fn from(list: Vec<Property>) -> Properties {
        Properties(list)
    }
}

/// Writes a property block (length, then properties) on its own, outside a packet: for the
/// store, which keeps messages and wills with their MQTT 5 properties in the wire form.
pub fn encode_properties(properties: &Properties, out: &mut BytesMut) -> Result<(), EncodeError> {
    properties.write(out)
}

/// Reads a property block written by [`encode_properties`] from the front of `buf`, checked
/// against `context` as in a packet; returns it and the bytes it took.
pub fn decode_properties(
    buf: Bytes,
    context: PropertyContext,
) -> Result<(Properties, usize), DecodeError> {
    let total = buf.len();
    let mut reader = Reader::new(buf, PacketType::Publish);
    let properties = Properties::read(&mut reader, context)?;
    Ok((properties, total - reader.remaining()))
}
