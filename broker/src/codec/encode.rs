//! Encoding packets for a connection of a given protocol version.
//!
//! Each packet body is written twice through the same code: once into a [`Counter`] to learn
//! the remaining length, once into the output buffer. MQTT 5-only fields (properties, reason
//! codes) are left out for 3.x connections, which is what forwarding a v5 message to a 3.1.1
//! subscriber requires.

use bytes::BytesMut;

use super::error::EncodeError;
use super::packet::*;
use super::properties::Properties;
use super::reason::ReasonCode;
use super::wire::{varint_len, Counter, Sink, VARINT_MAX};
use crate::types::QoS;

/// Appends `packet`, encoded for `version`, to `out`. CONNECT is encoded for the version it
/// names itself. On error nothing is written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let remaining = remaining_len(packet, version)?;
    out.reserve(1 + varint_len(remaining as u32) + remaining);
    out.put_u8(first_byte(packet));
    out.put_varint(remaining as u32);
    let body_start = out.len();
    write_body(packet, version, out)?;
    assert_eq!(
        out.len() - body_start,
        remaining,
        "measured and written lengths differ"
    );
    Ok(())
}

/// The number of bytes [`encode`] would write: what MQTT 5's Maximum Packet Size limits.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let remaining = remaining_len(packet, version)?;
    Ok(1 + varint_len(remaining as u32) + remaining)
}

fn remaining_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    write_body(packet, version, &mut counter)?;
    if counter.0 > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge { len: counter.0 });
    }
    Ok(counter.0)
}

fn first_byte(packet: &Packet) -> u8 {
    let packet_type = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | (p.qos.bits() << 1) | u8::from(p.retain),
        _ => packet_type.required_flags(),
    };
    ((packet_type as u8) << 4) | flags
}

/// One arm per packet type: as long as the packet model (each arm is a few lines).
fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut S,
) -> Result<(), EncodeError> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(c, out)?,
        Packet::ConnAck(c) => {
            // MQTT 3.1 has no session-present flag: that byte is reserved and must be 0.
            out.put_u8(u8::from(
                c.session_present && version != ProtocolVersion::V3_1,
            ));
            out.put_u8(if v5 {
                c.reason_code as u8
            } else {
                c.reason_code.to_v3_connack()
            });
            properties(&c.properties, v5, out)?;
        }
        Packet::Publish(p) => publish(p, v5, out)?,
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            out.put_u16(a.packet_id.get());
            reason_and_properties(a.reason_code, &a.properties, v5, out)?;
        }
        Packet::Subscribe(s) => {
            if s.filters.is_empty() {
                return Err(EncodeError::Empty {
                    packet: PacketType::Subscribe,
                });
            }
            out.put_u16(s.packet_id.get());
            properties(&s.properties, v5, out)?;
            for (filter, options) in &s.filters {
                out.put_string("topic filter", filter)?;
                out.put_u8(subscription_options(options, v5));
            }
        }
        Packet::SubAck(s) => {
            out.put_u16(s.packet_id.get());
            properties(&s.properties, v5, out)?;
            for code in &s.reason_codes {
                out.put_u8(if v5 { *code as u8 } else { code.to_v3_suback() });
            }
        }
        Packet::Unsubscribe(u) => {
            if u.filters.is_empty() {
                return Err(EncodeError::Empty {
                    packet: PacketType::Unsubscribe,
                });
            }
            out.put_u16(u.packet_id.get());
            properties(&u.properties, v5, out)?;
            for filter in &u.filters {
                out.put_string("topic filter", filter)?;
            }
        }
        Packet::UnsubAck(u) => {
            out.put_u16(u.packet_id.get());
            if v5 {
                properties(&u.properties, v5, out)?;
                for code in &u.reason_codes {
                    out.put_u8(*code as u8);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => reason_and_properties(d.reason_code, &d.properties, v5, out)?,
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInVersion {
                    packet: PacketType::Auth,
                    version,
                });
            }
            reason_and_properties(a.reason_code, &a.properties, v5, out)?;
        }
    }
    Ok(())
}

fn properties<S: Sink>(properties: &Properties, v5: bool, out: &mut S) -> Result<(), EncodeError> {
    if v5 {
        properties.write(out)?;
    }
    Ok(())
}

/// The optional tail of MQTT 5 acknowledgements, DISCONNECT and AUTH. A `Success` without
/// properties is left out entirely (the short form every peer must accept). Otherwise the
/// property length is always written, even when 0: the spec lets it be omitted, but some
/// clients (rumqttc 0.25) fail to read a DISCONNECT that ends after its reason code.
fn reason_and_properties<S: Sink>(
    code: ReasonCode,
    props: &Properties,
    v5: bool,
    out: &mut S,
) -> Result<(), EncodeError> {
    if !v5 || (code == ReasonCode::Success && props.is_empty()) {
        return Ok(());
    }
    out.put_u8(code as u8);
    props.write(out)
}

fn connect<S: Sink>(c: &Connect, out: &mut S) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    out.put_string("protocol name", c.protocol.protocol_name())?;
    debug_assert!(!(c.bridge && c.protocol.is_v5()), "no bridge bit in MQTT 5");
    out.put_u8(c.protocol.level() | u8::from(c.bridge) << 7);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0b100 | (will.qos.bits() << 3) | (u8::from(will.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0b0100_0000;
    }
    if c.username.is_some() {
        flags |= 0b1000_0000;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    properties(&c.properties, v5, out)?;
    out.put_string("client identifier", &c.client_id)?;
    if let Some(will) = &c.will {
        properties(&will.properties, v5, out)?;
        out.put_string("will topic", &will.topic)?;
        out.put_binary("will payload", &will.payload)?;
    }
    if let Some(username) = &c.username {
        out.put_string("user name", username)?;
    }
    if let Some(password) = &c.password {
        out.put_binary("password", password)?;
    }
    Ok(())
}

fn publish<S: Sink>(p: &Publish, v5: bool, out: &mut S) -> Result<(), EncodeError> {
    out.put_string("PUBLISH topic name", p.topic())?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => out.put_u16(id.get()),
        (qos, _) => {
            return Err(EncodeError::PacketIdMismatch {
                packet: PacketType::Publish,
                qos: qos.bits(),
            })
        }
    }
    properties(&p.properties, v5, out)?;
    out.put_slice(p.payload());
    Ok(())
}

fn subscription_options(options: &SubscriptionOptions, v5: bool) -> u8 {
    let mut byte = options.qos.bits();
    if v5 {
        byte |= u8::from(options.no_local) << 2
            | u8::from(options.retain_as_published) << 3
            | (options.retain_handling as u8) << 4;
    }
    byte
}
