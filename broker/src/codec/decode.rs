//! Incremental, strict decoding of one packet from the front of a read buffer.
//!
//! The driver appends bytes from the socket to a `BytesMut` and calls [`decode`] until it
//! returns `Ok(None)`. The fixed header is checked against the maximum packet size before the
//! body is even waited for, so a header that claims 256 MB costs nothing. A complete packet is
//! split off the buffer; strings and the payload are slices of it (zero-copy), and a PUBLISH's
//! topic and payload one slice ([`Content`]).

use bytes::BytesMut;

use super::bytestr::ByteStr;
use super::content::Content;
use super::error::DecodeError;
use super::packet::*;
use super::properties::{Properties, PropertyContext};
use super::reason::ReasonCode;
use super::wire::{read_varint, string_error, Reader};
use crate::types::{PacketId, QoS};

/// Decodes the packet at the front of `buf`, if it is complete.
///
/// - `Ok(None)`: more bytes are needed; nothing was consumed.
/// - `Ok(Some(packet))`: the packet's bytes were removed from `buf`.
/// - `Err(_)`: the stream is not valid MQTT; the connection must be closed. What `buf` holds
///   afterwards is unspecified.
///
/// `version` is the connection's protocol version (CONNECT reads its own from the packet, so
/// before CONNECT any value will do). `max_packet_bytes` bounds the whole packet, fixed header
/// included, as MQTT 5's Maximum Packet Size does.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_bytes: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = match PacketType::from_u8(first >> 4) {
        None => return Err(DecodeError::ReservedPacketType),
        Some(PacketType::Auth) if !version.is_v5() => return Err(DecodeError::AuthBeforeV5),
        Some(packet_type) => packet_type,
    };
    let Some((remaining, varint_bytes)) = read_varint(&buf[1..], version.is_v5())? else {
        return Ok(None);
    };
    let header_len = 1 + varint_bytes;
    let total = header_len + remaining as usize;
    if total > max_packet_bytes {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_bytes,
        });
    }
    if buf.len() < total {
        // The size is bounded by `max_packet_bytes`: reserving now saves the driver repeated
        // small reallocations while a large packet trickles in.
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let flags = first & 0x0F;
    // The reader starts after the fixed header: no extra reference count traffic, and no
    // `advance` for it (a PUBLISH advances once, to its topic, in `Reader::rest_from`).
    let body = Reader::of_packet(buf.split_to(total), header_len, packet_type);
    decode_body(packet_type, flags, body, version).map(Some)
}

/// Decodes a packet body whose fixed header has been read. Inlined into [`decode`], so
/// that the packet is built where the caller wants it rather than copied there.
#[inline(always)]
fn decode_body(
    packet_type: PacketType,
    flags: u8,
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    if packet_type != PacketType::Publish && flags != packet_type.required_flags() {
        return Err(DecodeError::InvalidFixedHeaderFlags {
            packet: packet_type,
            flags,
            required: packet_type.required_flags(),
        });
    }
    let v5 = version.is_v5();
    let packet = match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(connack(&mut r, v5)?),
        PacketType::Publish => Packet::Publish(publish(flags, &mut r, v5)?),
        PacketType::PubAck => Packet::PubAck(ack(&mut r, v5)?),
        PacketType::PubRec => Packet::PubRec(ack(&mut r, v5)?),
        PacketType::PubRel => Packet::PubRel(ack(&mut r, v5)?),
        PacketType::PubComp => Packet::PubComp(ack(&mut r, v5)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe(&mut r, v5)?),
        PacketType::SubAck => Packet::SubAck(suback(&mut r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(&mut r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason_code, properties) =
                reason_and_properties(&mut r, v5, PropertyContext::Disconnect)?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        PacketType::Auth => {
            let (reason_code, properties) =
                reason_and_properties(&mut r, v5, PropertyContext::Auth)?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
    };
    r.finish()?;
    Ok(packet)
}

fn read_properties(
    r: &mut Reader,
    v5: bool,
    context: PropertyContext,
) -> Result<Properties, DecodeError> {
    if v5 {
        Properties::read(r, context)
    } else {
        Ok(Properties::new())
    }
}

fn packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    let raw = r.u16("packet identifier")?;
    PacketId::new(raw).ok_or(DecodeError::ZeroPacketId { packet: r.packet() })
}

fn reason_code(r: &mut Reader, v5: bool) -> Result<ReasonCode, DecodeError> {
    debug_assert!(v5, "3.x packets carry no reason code byte");
    let code = r.u8("reason code")?;
    ReasonCode::from_u8(code)
        .filter(|reason| reason.allowed_in(r.packet()))
        .ok_or(DecodeError::InvalidReasonCode {
            packet: r.packet(),
            code,
        })
}

/// A will's topic name: no wildcards (spec: [MQTT-4.7.1-1]).
fn topic_name(r: &mut Reader, field: &'static str) -> Result<ByteStr, DecodeError> {
    let len = usize::from(r.u16(field)?);
    check_topic_name(r.peek(len, field)?, field)?;
    let bytes = r.take(len, field)?;
    // SAFETY: checked two lines above.
    Ok(unsafe { ByteStr::from_checked(bytes) })
}

/// The rules of a topic name, as PUBLISH and the will carry it: an MQTT string without
/// wildcards (spec: [MQTT-3.3.2-2], [MQTT-4.7.1-1]).
#[inline]
fn check_topic_name(bytes: &[u8], field: &'static str) -> Result<(), DecodeError> {
    // The string check and the wildcard search in one pass: topics are scanned on every
    // PUBLISH. The string rules come first: an invalid string is reported as such.
    let wildcards = ByteStr::check_noting(bytes, |b| b == b'+' || b == b'#')
        .map_err(|e| string_error(e, field))?;
    if wildcards {
        return Err(DecodeError::WildcardInTopicName { field });
    }
    Ok(())
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let (protocol, bridge) = protocol_version(r)?;
    let v5 = protocol.is_v5();
    let flags = ConnectFlags::read(r, v5)?;
    let keep_alive = r.u16("keep alive")?;
    let properties = read_properties(r, v5, PropertyContext::Connect)?;
    let client_id = r.string("client identifier")?;
    let will = match flags.will {
        Some((qos, retain)) => Some(will(r, v5, qos, retain)?),
        None => None,
    };
    let username = if flags.username {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if flags.password {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags.clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
        bridge,
    })
}

/// The protocol name and level: the version, and whether the client is a bridge.
fn protocol_version(r: &mut Reader) -> Result<(ProtocolVersion, bool), DecodeError> {
    let name = r.string("protocol name")?;
    let level = r.u8("protocol level")?;
    // A bridge sets the top bit of a 3.x level (Mosquitto's `try_private`): 0x83, 0x84.
    let bridge = matches!((name.as_str(), level), ("MQTT", 0x84) | ("MQIsdp", 0x83));
    let protocol = match (name.as_str(), level & !(u8::from(bridge) << 7)) {
        ("MQTT", 4) => ProtocolVersion::V3_1_1,
        ("MQTT", 5) => ProtocolVersion::V5,
        ("MQIsdp", 3) => ProtocolVersion::V3_1,
        ("MQTT" | "MQIsdp", _) => {
            return Err(DecodeError::UnsupportedProtocolLevel {
                name: name.to_string(),
                level,
            })
        }
        _ => {
            return Err(DecodeError::UnknownProtocolName {
                name: name.to_string(),
            })
        }
    };
    Ok((protocol, bridge))
}

/// The CONNECT flags byte, checked against the rules that tie its bits together.
struct ConnectFlags {
    clean_start: bool,
    /// The will's QoS and retain flag, when there is a will.
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
}

impl ConnectFlags {
    fn read(r: &mut Reader, v5: bool) -> Result<ConnectFlags, DecodeError> {
        let flags = r.u8("connect flags")?;
        if flags & 0b0000_0001 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let clean_start = flags & 0b0000_0010 != 0;
        let will_flag = flags & 0b0000_0100 != 0;
        let will_qos_bits = (flags >> 3) & 0b11;
        let will_retain = flags & 0b0010_0000 != 0;
        let has_password = flags & 0b0100_0000 != 0;
        let has_username = flags & 0b1000_0000 != 0;
        if !will_flag && will_qos_bits != 0 {
            return Err(DecodeError::WillQoSWithoutWill);
        }
        if !will_flag && will_retain {
            return Err(DecodeError::WillRetainWithoutWill);
        }
        let will_qos = QoS::from_bits(will_qos_bits).ok_or(DecodeError::WillQoS3)?;
        if has_password && !has_username && !v5 {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        Ok(ConnectFlags {
            clean_start,
            will: will_flag.then_some((will_qos, will_retain)),
            username: has_username,
            password: has_password,
        })
    }
}

/// The will's properties (v5), topic and payload.
fn will(r: &mut Reader, v5: bool, qos: QoS, retain: bool) -> Result<Will, DecodeError> {
    let properties = read_properties(r, v5, PropertyContext::Will)?;
    let topic = topic_name(r, "will topic")?;
    if topic.is_empty() {
        return Err(DecodeError::EmptyTopicName);
    }
    let payload = r.binary("will payload")?;
    Ok(Will {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("acknowledge flags")?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags { flags });
    }
    let session_present = flags & 1 != 0;
    let reason_code = if v5 {
        reason_code(r, v5)?
    } else {
        let code = r.u8("return code")?;
        ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?
    };
    if session_present && reason_code.is_error() {
        return Err(DecodeError::SessionPresentOnRefusal);
    }
    let properties = read_properties(r, v5, PropertyContext::ConnAck)?;
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

fn publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(DecodeError::PublishQoS3)?;
    let retain = flags & 0b0001 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQoS0);
    }
    let field = "PUBLISH topic name";
    let topic_len = usize::from(r.u16(field)?);
    check_topic_name(r.peek(topic_len, field)?, field)?;
    let topic_start = r.position();
    r.skip(topic_len, field)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = read_properties(r, v5, PropertyContext::Publish)?;
    if topic_len == 0 {
        if !v5 {
            return Err(DecodeError::EmptyTopicName);
        }
        if properties.topic_alias().is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
    }
    // One handle on the body for topic and payload (see `Content`).
    let payload_start = r.position() - topic_start;
    let body = r.rest_from(topic_start);
    // SAFETY: `check_topic_name` checked `body[..topic_len]` (the bytes peeked at
    // `topic_start`).
    let content = unsafe { Content::joined(body, topic_len, payload_start) };
    Ok(Publish {
        dup,
        qos,
        retain,
        content,
        packet_id,
        properties,
    })
}

fn ack(r: &mut Reader, v5: bool) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(r)?;
    let (reason_code, properties) = reason_and_properties(r, v5, PropertyContext::Ack)?;
    Ok(Ack {
        packet_id,
        reason_code,
        properties,
    })
}

/// The optional tail of acknowledgements, DISCONNECT and AUTH in MQTT 5: absent means
/// `Success` without properties, a lone reason code means no properties.
fn reason_and_properties(
    r: &mut Reader,
    v5: bool,
    context: PropertyContext,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.remaining() == 0 {
        return Ok((ReasonCode::Success, Properties::new()));
    }
    let code = reason_code(r, v5)?;
    let properties = if r.remaining() == 0 {
        Properties::new()
    } else {
        Properties::read(r, context)?
    };
    Ok((code, properties))
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = read_properties(r, v5, PropertyContext::Subscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        let options = r.u8("subscription options")?;
        let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
        if options & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved { options });
        }
        let qos = QoS::from_bits(options & 0b11).ok_or(DecodeError::SubscribeQoS3)?;
        let retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtNewSubscribe,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::RetainHandling3),
        };
        filters.push((
            filter,
            SubscriptionOptions {
                qos,
                no_local: options & 0b0100 != 0,
                retain_as_published: options & 0b1000 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters {
            packet: PacketType::Subscribe,
        });
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = read_properties(r, v5, PropertyContext::SubAck)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        reason_codes.push(if v5 {
            reason_code(r, v5)?
        } else {
            let code = r.u8("return code")?;
            ReasonCode::from_v3_suback(code).ok_or(DecodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            })?
        });
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = read_properties(r, v5, PropertyContext::Unsubscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters {
            packet: PacketType::Unsubscribe,
        });
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = read_properties(r, v5, PropertyContext::UnsubAck)?;
    let mut reason_codes = Vec::new();
    while v5 && r.remaining() > 0 {
        reason_codes.push(reason_code(r, v5)?);
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}
