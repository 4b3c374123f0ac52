//! Proptest strategies for arbitrary valid packets of each protocol version.
//!
//! "Valid" means representable in that version: a 3.x packet has no properties and only the
//! reason codes 3.x can carry, so encode-then-decode must be the identity for every value
//! these strategies produce.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tern::codec::*;
use tern::types::{PacketId, QoS};

pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(VERSIONS.to_vec())
}

/// Any MQTT string: unicode (including the BOM and multi-byte characters) without U+0000.
pub fn string() -> impl Strategy<Value = ByteStr> {
    prop_oneof![
        "[a-z0-9/ ]{0,12}",
        "[^\u{0}]{0,6}",
        Just("\u{FEFF}bom".to_string()),
    ]
    .prop_map(|s| ByteStr::new(&s).unwrap())
}

/// A topic name: non-empty, no wildcards.
pub fn topic() -> impl Strategy<Value = ByteStr> {
    "[a-zA-Z0-9/$é ]{1,16}".prop_map(|s| ByteStr::new(&s).unwrap())
}

pub fn filter() -> impl Strategy<Value = ByteStr> {
    prop_oneof![
        "[a-z/]{1,10}",
        Just("#".to_string()),
        Just("a/+/c".to_string()),
        Just("$share/g/x".to_string())
    ]
    .prop_map(|s| ByteStr::new(&s).unwrap())
}

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

pub fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| PacketId::new(id).unwrap())
}

/// Every property identifier with a strategy for its value.
fn property(id: u8) -> BoxedStrategy<Property> {
    use Property::*;
    match id {
        0x01 => any::<bool>().prop_map(PayloadFormatIndicator).boxed(),
        0x02 => any::<u32>().prop_map(MessageExpiryInterval).boxed(),
        0x03 => string().prop_map(ContentType).boxed(),
        0x08 => topic().prop_map(ResponseTopic).boxed(),
        0x09 => bytes(16).prop_map(CorrelationData).boxed(),
        0x0B => (1..=VARINT_MAX).prop_map(SubscriptionIdentifier).boxed(),
        0x11 => any::<u32>().prop_map(SessionExpiryInterval).boxed(),
        0x12 => string().prop_map(AssignedClientIdentifier).boxed(),
        0x13 => any::<u16>().prop_map(ServerKeepAlive).boxed(),
        0x15 => string().prop_map(AuthenticationMethod).boxed(),
        0x16 => bytes(16).prop_map(AuthenticationData).boxed(),
        0x17 => any::<bool>().prop_map(RequestProblemInformation).boxed(),
        0x18 => any::<u32>().prop_map(WillDelayInterval).boxed(),
        0x19 => any::<bool>().prop_map(RequestResponseInformation).boxed(),
        0x1A => string().prop_map(ResponseInformation).boxed(),
        0x1C => string().prop_map(ServerReference).boxed(),
        0x1F => string().prop_map(ReasonString).boxed(),
        0x21 => (1..=u16::MAX).prop_map(ReceiveMaximum).boxed(),
        0x22 => any::<u16>().prop_map(TopicAliasMaximum).boxed(),
        0x23 => (1..=u16::MAX).prop_map(TopicAlias).boxed(),
        0x24 => prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])
            .prop_map(MaximumQoS)
            .boxed(),
        0x25 => any::<bool>().prop_map(RetainAvailable).boxed(),
        0x26 => (string(), string())
            .prop_map(|(k, v)| UserProperty(k, v))
            .boxed(),
        0x27 => (1..=u32::MAX).prop_map(MaximumPacketSize).boxed(),
        0x28 => any::<bool>()
            .prop_map(WildcardSubscriptionAvailable)
            .boxed(),
        0x29 => any::<bool>()
            .prop_map(SubscriptionIdentifierAvailable)
            .boxed(),
        0x2A => any::<bool>().prop_map(SharedSubscriptionAvailable).boxed(),
        _ => unreachable!("no property {id:#04x}"),
    }
}

pub const PROPERTY_IDS: [u8; 27] = [
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
];

/// A sample value of each property, to ask the codec where it is allowed.
pub fn sample_property(id: u8) -> Property {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    property(id)
        .new_tree(&mut TestRunner::deterministic())
        .unwrap()
        .current()
}

/// Any property list allowed in `context`: each single-use property at most once, user
/// properties (and subscription identifiers in PUBLISH) repeated, in any order.
pub fn properties(context: PropertyContext) -> BoxedStrategy<Properties> {
    let mut parts: Vec<BoxedStrategy<Vec<Property>>> = Vec::new();
    for id in PROPERTY_IDS {
        if !sample_property(id).allowed_in(context) {
            continue;
        }
        let repeatable = id == 0x26 || (id == 0x0B && context == PropertyContext::Publish);
        let count = if repeatable { 0..=3 } else { 0..=1 };
        parts.push(vec(property(id), count).boxed());
    }
    parts
        .prop_map(|lists| lists.into_iter().flatten().collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(Properties::from)
        .boxed()
}

fn props_for(version: ProtocolVersion, context: PropertyContext) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        properties(context)
    } else {
        Just(Properties::new()).boxed()
    }
}

fn reason_code_for(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = (0..=255u8)
        .filter_map(ReasonCode::from_u8)
        .filter(|c| c.allowed_in(packet))
        .collect();
    prop::sample::select(codes)
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic(),
        bytes(32),
        qos(),
        any::<bool>(),
        props_for(version, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        props_for(version, PropertyContext::Connect),
        string(),
        option::of(will),
        option::of(string()),
        option::of(bytes(16)),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                // 3.x has no password without a user name.
                let password = if version.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                    // Both values in 3.x (from another random field), never in 5.
                    bridge: !version.is_v5() && keep_alive % 2 == 1,
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if version.is_v5() {
        reason_code_for(PacketType::ConnAck).boxed()
    } else {
        (0..=5u8)
            .prop_map(|c| ReasonCode::from_v3_connack(c).unwrap())
            .boxed()
    };
    (
        any::<bool>(),
        code,
        props_for(version, PropertyContext::ConnAck),
    )
        .prop_map(move |(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                // 3.1 has no session-present flag.
                session_present: session_present
                    && !reason_code.is_error()
                    && version != ProtocolVersion::V3_1,
                reason_code,
                properties,
            })
        })
        .boxed()
}

pub fn publish(version: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        packet_id(),
        props_for(version, PropertyContext::Publish),
        bytes(64),
    )
        .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
            let at_most_once = qos == QoS::AtMostOnce;
            Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                content: Content::new(topic, payload),
                packet_id: if at_most_once { None } else { Some(id) },
                properties,
            }
        })
}

fn ack(version: ProtocolVersion, packet: PacketType) -> BoxedStrategy<Ack> {
    let code = if version.is_v5() {
        reason_code_for(packet).boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (packet_id(), code, props_for(version, PropertyContext::Ack))
        .prop_map(|(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code,
            properties,
        })
        .boxed()
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0..=2u8).prop_map(move |(qos, nl, rap, rh)| {
            let mut o = SubscriptionOptions::new(qos);
            if v5 {
                o.no_local = nl;
                o.retain_as_published = rap;
                o.retain_handling = [
                    RetainHandling::SendAtSubscribe,
                    RetainHandling::SendAtNewSubscribe,
                    RetainHandling::DoNotSend,
                ][rh as usize];
            }
            o
        });
    (
        packet_id(),
        props_for(version, PropertyContext::Subscribe),
        vec((filter(), options), 1..=4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        reason_code_for(PacketType::SubAck).boxed()
    } else {
        prop::sample::select(vec![0u8, 1, 2, 0x80])
            .prop_map(|c| ReasonCode::from_v3_suback(c).unwrap())
            .boxed()
    };
    (
        packet_id(),
        props_for(version, PropertyContext::SubAck),
        vec(code, 1..=4),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        props_for(version, PropertyContext::Unsubscribe),
        vec(filter(), 1..=4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        vec(reason_code_for(PacketType::UnsubAck), 1..=4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        packet_id(),
        props_for(version, PropertyContext::UnsubAck),
        codes,
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return Just(Packet::Disconnect(Disconnect::normal())).boxed();
    }
    (
        reason_code_for(PacketType::Disconnect),
        properties(PropertyContext::Disconnect),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason_code_for(PacketType::Auth),
        properties(PropertyContext::Auth),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
}

/// Any packet that `version` can carry.
pub fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version).prop_map(Packet::Publish),
        ack(version, PacketType::PubAck).prop_map(Packet::PubAck),
        ack(version, PacketType::PubRec).prop_map(Packet::PubRec),
        ack(version, PacketType::PubRel).prop_map(Packet::PubRel),
        ack(version, PacketType::PubComp).prop_map(Packet::PubComp),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}
