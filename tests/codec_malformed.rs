//! The malformed-input table: bytes, the exact error the decoder must return, and the spec
//! statement that error enforces. Every row is one rule; crash inputs found by the fuzzer are
//! added here as regression rows.

use bytes::BytesMut;
use tern::codec::{decode, DecodeError as E, PacketType as T, ProtocolVersion, ReasonCode};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A packet: the first byte, a remaining length computed from the body, then the body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len & 0x7F) as u8;
        len >>= 7;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn s(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A CONNECT body with the given protocol name, level and flags, then keep alive 60 and
/// `rest` (properties for v5, then the payload).
fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    frame(0x10, &cat(&[&s(name), &[level, flags, 0, 60], rest]))
}

/// A v3.1.1 CONNECT with client id "c" and `extra` payload fields.
fn connect3(flags: u8, extra: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 4, flags, &cat(&[&s(b"c"), extra]))
}

/// A v5 CONNECT with the given property block (without its length) and client id "c".
fn connect5(flags: u8, props: &[u8], extra: &[u8]) -> Vec<u8> {
    connect(
        b"MQTT",
        5,
        flags,
        &cat(&[&[props.len() as u8], props, &s(b"c"), extra]),
    )
}

/// A v5 QoS 0 PUBLISH to topic "t" with the given property block (without its length).
fn publish5(props: &[u8]) -> Vec<u8> {
    frame(
        0x30,
        &cat(&[&s(b"t"), &[props.len() as u8], props, b"payload"]),
    )
}

struct Case {
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    error: E,
    /// The statement the error enforces; `None` where the rule has no statement id.
    spec: Option<&'static str>,
}

fn case(
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    error: E,
    spec: Option<&'static str>,
) -> Case {
    Case {
        name,
        version,
        bytes,
        error,
        spec,
    }
}

fn prop_value(name: &'static str, value: u32) -> E {
    E::InvalidPropertyValue { name, value }
}

fn not_allowed(name: &'static str, context: &'static str) -> E {
    E::PropertyNotAllowed { name, context }
}

fn table() -> Vec<Case> {
    let utf8 = |field| E::InvalidUtf8 { field };
    let null = |field| E::NullCharacter { field };
    let flags = |packet, flags, required| E::InvalidFixedHeaderFlags {
        packet,
        flags,
        required,
    };
    let bad_code = |packet, code| E::InvalidReasonCode { packet, code };
    let truncated = |packet, field| E::Truncated { packet, field };
    let topic = "PUBLISH topic name";
    vec![
        // --- fixed header -------------------------------------------------------------------
        case(
            "reserved packet type 0",
            V3,
            vec![0x00, 0x00],
            E::ReservedPacketType,
            None,
        ),
        case(
            "AUTH before MQTT 5",
            V3,
            vec![0xF0, 0x00],
            E::AuthBeforeV5,
            None,
        ),
        case(
            "remaining length of 5 bytes",
            V3,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            E::VarIntTooLong,
            None,
        ),
        case(
            "v5 non-minimal remaining length",
            V5,
            vec![0xC0, 0x80, 0x00],
            E::VarIntNotMinimal,
            Some("MQTT-1.5.5-1"),
        ),
        case(
            "PINGREQ flags 0001 (v3)",
            V3,
            vec![0xC1, 0x00],
            flags(T::PingReq, 1, 0),
            Some("MQTT-2.2.2-2"),
        ),
        case(
            "PINGREQ flags 0001 (v5)",
            V5,
            vec![0xC1, 0x00],
            flags(T::PingReq, 1, 0),
            Some("MQTT-2.1.3-1"),
        ),
        case(
            "CONNACK flags 1000",
            V3,
            vec![0x28, 0x02, 0, 0],
            flags(T::ConnAck, 8, 0),
            Some("MQTT-2.2.2-2"),
        ),
        case(
            "PUBACK flags 0010 (v5)",
            V5,
            vec![0x42, 0x02, 0, 1],
            flags(T::PubAck, 2, 0),
            Some("MQTT-2.1.3-1"),
        ),
        case(
            "PUBREL flags 0000 (v3)",
            V3,
            vec![0x60, 0x02, 0, 1],
            flags(T::PubRel, 0, 2),
            Some("MQTT-3.6.1-1"),
        ),
        case(
            "PUBREL flags 0000 (v5)",
            V5,
            vec![0x60, 0x02, 0, 1],
            flags(T::PubRel, 0, 2),
            Some("MQTT-3.6.1-1"),
        ),
        case(
            "SUBSCRIBE flags 0000 (v3)",
            V3,
            frame(0x80, &cat(&[&[0, 1], &s(b"a"), &[0]])),
            flags(T::Subscribe, 0, 2),
            Some("MQTT-3.8.1-1"),
        ),
        case(
            "SUBSCRIBE flags 0011 (v5)",
            V5,
            frame(0x83, &cat(&[&[0, 1, 0], &s(b"a"), &[0]])),
            flags(T::Subscribe, 3, 2),
            Some("MQTT-3.8.1-1"),
        ),
        case(
            "UNSUBSCRIBE flags 0000 (v3)",
            V3,
            frame(0xA0, &cat(&[&[0, 1], &s(b"a")])),
            flags(T::Unsubscribe, 0, 2),
            Some("MQTT-3.10.1-1"),
        ),
        case(
            "UNSUBSCRIBE flags 1010 (v5)",
            V5,
            frame(0xAA, &cat(&[&[0, 1, 0], &s(b"a")])),
            flags(T::Unsubscribe, 10, 2),
            Some("MQTT-3.10.1-1"),
        ),
        case(
            "DISCONNECT flags 0001 (v3)",
            V3,
            vec![0xE1, 0x00],
            flags(T::Disconnect, 1, 0),
            Some("MQTT-2.2.2-2"),
        ),
        case(
            "DISCONNECT flags 0100 (v5)",
            V5,
            vec![0xE4, 0x00],
            flags(T::Disconnect, 4, 0),
            Some("MQTT-3.14.1-1"),
        ),
        case(
            "AUTH flags 0001",
            V5,
            vec![0xF1, 0x00],
            flags(T::Auth, 1, 0),
            Some("MQTT-3.15.1-1"),
        ),
        case(
            "PINGREQ with a body",
            V3,
            vec![0xC0, 0x01, 0x00],
            E::TrailingBytes {
                packet: T::PingReq,
                count: 1,
            },
            None,
        ),
        case(
            "v3 DISCONNECT with a body",
            V3,
            vec![0xE0, 0x01, 0x00],
            E::TrailingBytes {
                packet: T::Disconnect,
                count: 1,
            },
            None,
        ),
        // --- PUBLISH -------------------------------------------------------------------------
        case(
            "PUBLISH QoS 3 (v3)",
            V3,
            frame(0x36, &cat(&[&s(b"t"), &[0, 1]])),
            E::PublishQoS3,
            Some("MQTT-3.3.1-4"),
        ),
        case(
            "PUBLISH QoS 3 (v5)",
            V5,
            frame(0x37, &cat(&[&s(b"t"), &[0, 1, 0]])),
            E::PublishQoS3,
            Some("MQTT-3.3.1-4"),
        ),
        case(
            "DUP on QoS 0 (v3)",
            V3,
            frame(0x38, &s(b"t")),
            E::DupOnQoS0,
            Some("MQTT-3.3.1-2"),
        ),
        case(
            "DUP on QoS 0 (v5)",
            V5,
            frame(0x39, &cat(&[&s(b"t"), &[0]])),
            E::DupOnQoS0,
            Some("MQTT-3.3.1-2"),
        ),
        case(
            "'+' in topic name (v3)",
            V3,
            frame(0x30, &s(b"a/+/b")),
            E::WildcardInTopicName { field: topic },
            Some("MQTT-3.3.2-2"),
        ),
        case(
            "'#' in topic name (v5)",
            V5,
            publish5_topic(b"a/#"),
            E::WildcardInTopicName { field: topic },
            Some("MQTT-3.3.2-2"),
        ),
        // The topic's string check and wildcard scan are one pass: each path and their
        // precedence (a broken string is reported as such, wildcard or not).
        case(
            "'+' in a non-ASCII topic name (v3)",
            V3,
            frame(0x30, &s("caf\u{e9}/+".as_bytes())),
            E::WildcardInTopicName { field: topic },
            Some("MQTT-3.3.2-2"),
        ),
        case(
            "invalid UTF-8 and a wildcard in a topic name (v3)",
            V3,
            frame(0x30, &s(b"\xff/#")),
            E::InvalidUtf8 { field: topic },
            Some("MQTT-1.5.3-1"),
        ),
        case(
            "U+0000 and a wildcard in a topic name (v3)",
            V3,
            frame(0x30, &s(b"a\0/#")),
            E::NullCharacter { field: topic },
            Some("MQTT-1.5.3-2"),
        ),
        case(
            "empty topic name (v3)",
            V3,
            frame(0x30, &s(b"")),
            E::EmptyTopicName,
            Some("MQTT-4.7.3-1"),
        ),
        case(
            "empty topic without alias (v5)",
            V5,
            publish5_topic(b""),
            E::EmptyTopicWithoutAlias,
            None,
        ),
        case(
            "ill-formed UTF-8 topic (v3)",
            V3,
            frame(0x30, &s(b"\xC3\x28")),
            utf8(topic),
            Some("MQTT-1.5.3-1"),
        ),
        case(
            "ill-formed UTF-8 topic (v5)",
            V5,
            publish5_topic(b"\xFF"),
            utf8(topic),
            Some("MQTT-1.5.4-1"),
        ),
        case(
            "encoded surrogate in topic (v3)",
            V3,
            frame(0x30, &s(b"\xED\xA0\x80")),
            utf8(topic),
            Some("MQTT-1.5.3-1"),
        ),
        case(
            "encoded surrogate in topic (v5)",
            V5,
            publish5_topic(b"a\xED\xBF\xBF"),
            utf8(topic),
            Some("MQTT-1.5.4-1"),
        ),
        // spec: [MQTT-4.7.3-2] (both versions): no U+0000 in a topic name.
        case(
            "U+0000 in topic (v3)",
            V3,
            frame(0x30, &s(b"a\0b")),
            null(topic),
            Some("MQTT-1.5.3-2"),
        ),
        case(
            "U+0000 in topic (v5)",
            V5,
            publish5_topic(b"\0"),
            null(topic),
            Some("MQTT-1.5.4-2"),
        ),
        case(
            "QoS 1 packet id 0 (v3)",
            V3,
            frame(0x32, &cat(&[&s(b"t"), &[0, 0]])),
            E::ZeroPacketId { packet: T::Publish },
            Some("MQTT-2.3.1-1"),
        ),
        case(
            "QoS 2 packet id 0 (v5)",
            V5,
            frame(0x34, &cat(&[&s(b"t"), &[0, 0, 0]])),
            E::ZeroPacketId { packet: T::Publish },
            Some("MQTT-2.2.1-3"),
        ),
        case(
            "topic longer than the packet",
            V3,
            frame(0x30, &[0, 10, b'a', b'b']),
            truncated(T::Publish, topic),
            None,
        ),
        case(
            "QoS 1 without packet id",
            V3,
            frame(0x32, &s(b"t")),
            truncated(T::Publish, "packet identifier"),
            None,
        ),
        case(
            "ill-formed UTF-8 response topic",
            V5,
            publish5(&[0x08, 0, 1, 0xFF]),
            utf8("Response Topic"),
            Some("MQTT-3.3.2-13"),
        ),
        case(
            "wildcard in response topic",
            V5,
            publish5(&[0x08, 0, 3, b'a', b'/', b'#']),
            E::WildcardInTopicName {
                field: "Response Topic",
            },
            Some("MQTT-3.3.2-14"),
        ),
        case(
            "ill-formed UTF-8 content type",
            V5,
            publish5(&[0x03, 0, 2, 0xC3, 0x28]),
            utf8("Content Type"),
            Some("MQTT-3.3.2-19"),
        ),
        case(
            "ill-formed UTF-8 user property value",
            V5,
            publish5(&[0x26, 0, 1, b'k', 0, 1, 0xFF]),
            utf8("User Property"),
            Some("MQTT-1.5.7-1"),
        ),
        case(
            "topic alias 0",
            V5,
            publish5(&[0x23, 0, 0]),
            prop_value("Topic Alias", 0),
            Some("MQTT-3.3.2-8"),
        ),
        case(
            "message expiry twice",
            V5,
            publish5(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
            E::DuplicateProperty {
                name: "Message Expiry Interval",
            },
            None,
        ),
        case(
            "session expiry in PUBLISH",
            V5,
            publish5(&[0x11, 0, 0, 0, 1]),
            not_allowed("Session Expiry Interval", "PUBLISH"),
            None,
        ),
        case(
            "unknown property 0x7F",
            V5,
            publish5(&[0x7F, 0]),
            E::UnknownProperty { id: 0x7F },
            None,
        ),
        case(
            "payload format indicator 2",
            V5,
            publish5(&[0x01, 2]),
            prop_value("Payload Format Indicator", 2),
            None,
        ),
        case(
            "subscription identifier 0",
            V5,
            publish5(&[0x0B, 0]),
            prop_value("Subscription Identifier", 0),
            None,
        ),
        case(
            "property length past the packet",
            V5,
            frame(0x30, &cat(&[&s(b"t"), &[9, 0x01]])),
            truncated(T::Publish, "properties"),
            None,
        ),
        case(
            "user property key ill-formed",
            V5,
            publish5(&cat(&[&[0x26], &s(b"\xC0"), &s(b"v")])),
            utf8("User Property"),
            Some("MQTT-1.5.7-1"),
        ),
        case(
            "response topic with U+0000",
            V5,
            publish5(&cat(&[&[0x08], &s(b"r\0")])),
            null("Response Topic"),
            Some("MQTT-1.5.4-2"),
        ),
        case(
            "property value cut short",
            V5,
            publish5(&[0x02, 0, 0]),
            truncated(T::Publish, "Message Expiry Interval"),
            None,
        ),
        // --- CONNECT -------------------------------------------------------------------------
        case(
            "unknown protocol name",
            V3,
            connect(b"MQTX", 4, 2, &s(b"c")),
            E::UnknownProtocolName {
                name: "MQTX".into(),
            },
            Some("MQTT-3.1.2-1"),
        ),
        case(
            "protocol level 6",
            V3,
            connect(b"MQTT", 6, 2, &s(b"c")),
            E::UnsupportedProtocolLevel {
                name: "MQTT".into(),
                level: 6,
            },
            Some("MQTT-3.1.2-2"),
        ),
        case(
            "MQIsdp with level 4",
            V3,
            connect(b"MQIsdp", 4, 2, &s(b"c")),
            E::UnsupportedProtocolLevel {
                name: "MQIsdp".into(),
                level: 4,
            },
            Some("MQTT-3.1.2-2"),
        ),
        case(
            "MQTT with level 3",
            V5,
            connect(b"MQTT", 3, 2, &s(b"c")),
            E::UnsupportedProtocolLevel {
                name: "MQTT".into(),
                level: 3,
            },
            Some("MQTT-3.1.2-2"),
        ),
        case(
            "reserved connect flag (v3)",
            V3,
            connect3(0x03, &[]),
            E::ConnectReservedFlag,
            Some("MQTT-3.1.2-3"),
        ),
        case(
            "reserved connect flag (v5)",
            V5,
            connect5(0x01, &[], &[]),
            E::ConnectReservedFlag,
            Some("MQTT-3.1.2-3"),
        ),
        case(
            "will QoS without will flag (v3)",
            V3,
            connect3(0x0A, &[]),
            E::WillQoSWithoutWill,
            Some("MQTT-3.1.2-13"),
        ),
        case(
            "will retain without will flag (v3)",
            V3,
            connect3(0x22, &[]),
            E::WillRetainWithoutWill,
            Some("MQTT-3.1.2-15"),
        ),
        case(
            "will QoS without will flag (v5)",
            V5,
            connect5(0x10, &[], &[]),
            E::WillQoSWithoutWill,
            Some("MQTT-3.1.2-11"),
        ),
        case(
            "will retain without will flag (v5)",
            V5,
            connect5(0x20, &[], &[]),
            E::WillRetainWithoutWill,
            Some("MQTT-3.1.2-13"),
        ),
        case(
            "will QoS 3 (v3)",
            V3,
            connect3(0x1E, &cat(&[&s(b"w"), &s(b"x")])),
            E::WillQoS3,
            Some("MQTT-3.1.2-14"),
        ),
        case(
            "will QoS 3 (v5)",
            V5,
            connect5(0x1C, &[], &cat(&[&[0], &s(b"w"), &s(b"x")])),
            E::WillQoS3,
            Some("MQTT-3.1.2-12"),
        ),
        case(
            "password without user name (v3)",
            V3,
            connect3(0x42, &s(b"pw")),
            E::PasswordWithoutUsername,
            Some("MQTT-3.1.2-22"),
        ),
        case(
            "wildcard in will topic (v3)",
            V3,
            connect3(0x06, &cat(&[&s(b"w/#"), &s(b"x")])),
            E::WildcardInTopicName {
                field: "will topic",
            },
            Some("MQTT-4.7.1-1"),
        ),
        case(
            "wildcard in will topic (v5)",
            V5,
            connect5(0x06, &[], &cat(&[&[0], &s(b"+"), &s(b"x")])),
            E::WildcardInTopicName {
                field: "will topic",
            },
            Some("MQTT-4.7.0-1"),
        ),
        // spec: [MQTT-3.1.3-4] (v3.1.1): the client id is a UTF-8 string.
        case(
            "ill-formed UTF-8 client id",
            V3,
            connect(b"MQTT", 4, 2, &s(b"\xF8")),
            utf8("client identifier"),
            Some("MQTT-1.5.3-1"),
        ),
        // spec: [MQTT-3.1.3-11] (v3.1.1): the user name is a UTF-8 string.
        case(
            "user name with U+0000",
            V3,
            connect3(0x82, &s(b"u\0")),
            null("user name"),
            Some("MQTT-1.5.3-2"),
        ),
        case(
            "CONNECT cut before keep alive",
            V3,
            frame(0x10, &cat(&[&s(b"MQTT"), &[4, 2, 0]])),
            truncated(T::Connect, "keep alive"),
            None,
        ),
        case(
            "CONNECT with trailing bytes",
            V3,
            connect3(0x02, &[0xAA]),
            E::TrailingBytes {
                packet: T::Connect,
                count: 1,
            },
            None,
        ),
        // spec: [MQTT-3.1.2-19] (v3.1.1): User Name Flag 1, so a user name must follow.
        case(
            "user name flag without user name",
            V3,
            connect3(0x82, &[]),
            truncated(T::Connect, "user name"),
            None,
        ),
        // spec: [MQTT-3.1.2-18] (v3.1.1): User Name Flag 0, so no user name may follow (a
        // decoder reading one anyway would accept this).
        case(
            "user name without its flag",
            V3,
            connect3(0x02, &s(b"user")),
            E::TrailingBytes {
                packet: T::Connect,
                count: 6,
            },
            None,
        ),
        // spec: [MQTT-3.1.2-20] (v3.1.1): Password Flag 0, so no password may follow.
        case(
            "password without its flag",
            V3,
            connect3(0x82, &cat(&[&s(b"u"), &s(b"pw")])),
            E::TrailingBytes {
                packet: T::Connect,
                count: 4,
            },
            None,
        ),
        // spec: [MQTT-3.1.2-21] (v3.1.1): Password Flag 1, so a password must follow.
        case(
            "password flag without password",
            V3,
            connect3(0xC2, &s(b"u")),
            truncated(T::Connect, "password"),
            None,
        ),
        // spec: [MQTT-3.1.2-9] (v3.1.1): Will Flag 1, so a will topic and a will message must
        // follow (these two rows: neither, and the topic alone).
        case(
            "will flag without will topic",
            V3,
            connect3(0x06, &[]),
            truncated(T::Connect, "will topic"),
            None,
        ),
        case(
            "will flag without will message",
            V3,
            connect3(0x06, &s(b"w")),
            truncated(T::Connect, "will payload"),
            None,
        ),
        // spec: [MQTT-3.1.3-3] (v3.1.1): the client identifier is always present.
        case(
            "CONNECT without a client id",
            V3,
            frame(0x10, &cat(&[&s(b"MQTT"), &[4, 2, 0, 60]])),
            truncated(T::Connect, "client identifier"),
            None,
        ),
        // spec: [MQTT-3.1.3-12] (v5): the user name is a UTF-8 string.
        case(
            "ill-formed UTF-8 user name (v5)",
            V5,
            connect5(0x82, &[], &s(b"\xC3\x28")),
            utf8("user name"),
            Some("MQTT-1.5.4-1"),
        ),
        case(
            "receive maximum 0",
            V5,
            connect5(0x02, &[0x21, 0, 0], &[]),
            prop_value("Receive Maximum", 0),
            None,
        ),
        case(
            "maximum packet size 0",
            V5,
            connect5(0x02, &[0x27, 0, 0, 0, 0], &[]),
            prop_value("Maximum Packet Size", 0),
            None,
        ),
        case(
            "will delay in CONNECT properties",
            V5,
            connect5(0x02, &[0x18, 0, 0, 0, 5], &[]),
            not_allowed("Will Delay Interval", "CONNECT"),
            None,
        ),
        case(
            "topic alias in will properties",
            V5,
            connect5(0x06, &[], &cat(&[&[3, 0x23, 0, 1], &s(b"w"), &s(b"x")])),
            not_allowed("Topic Alias", "will properties"),
            None,
        ),
        case(
            "request problem information 2",
            V5,
            connect5(0x02, &[0x17, 2], &[]),
            prop_value("Request Problem Information", 2),
            None,
        ),
        case(
            "session expiry twice",
            V5,
            connect5(0x02, &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1], &[]),
            E::DuplicateProperty {
                name: "Session Expiry Interval",
            },
            None,
        ),
        // --- CONNACK -------------------------------------------------------------------------
        case(
            "CONNACK reserved flags (v3)",
            V3,
            vec![0x20, 0x02, 0x02, 0x00],
            E::ConnAckReservedFlags { flags: 2 },
            None,
        ),
        case(
            "CONNACK reserved flags (v5)",
            V5,
            vec![0x20, 0x03, 0x80, 0x00, 0x00],
            E::ConnAckReservedFlags { flags: 0x80 },
            Some("MQTT-3.2.2-1"),
        ),
        case(
            "CONNACK return code 6 (v3)",
            V3,
            vec![0x20, 0x02, 0x00, 0x06],
            bad_code(T::ConnAck, 6),
            None,
        ),
        case(
            "CONNACK reason 0x04 (v5)",
            V5,
            vec![0x20, 0x03, 0x00, 0x04, 0x00],
            bad_code(T::ConnAck, 4),
            Some("MQTT-3.2.2-8"),
        ),
        case(
            "session present on refusal (v3)",
            V3,
            vec![0x20, 0x02, 0x01, 0x02],
            E::SessionPresentOnRefusal,
            Some("MQTT-3.2.2-4"),
        ),
        case(
            "session present on refusal (v5)",
            V5,
            vec![0x20, 0x03, 0x01, 0x85, 0x00],
            E::SessionPresentOnRefusal,
            Some("MQTT-3.2.2-6"),
        ),
        // --- SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK --------------------------------------
        case(
            "SUBSCRIBE without filters (v3)",
            V3,
            frame(0x82, &[0, 1]),
            E::NoTopicFilters {
                packet: T::Subscribe,
            },
            Some("MQTT-3.8.3-3"),
        ),
        case(
            "SUBSCRIBE without filters (v5)",
            V5,
            frame(0x82, &[0, 1, 0]),
            E::NoTopicFilters {
                packet: T::Subscribe,
            },
            Some("MQTT-3.8.3-2"),
        ),
        case(
            "SUBSCRIBE reserved option bits (v3)",
            V3,
            frame(0x82, &cat(&[&[0, 1], &s(b"a"), &[0x04]])),
            E::SubscriptionOptionsReserved { options: 4 },
            Some("MQTT-3.8.3-4"),
        ),
        case(
            "SUBSCRIBE reserved option bits (v5)",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[0x40]])),
            E::SubscriptionOptionsReserved { options: 0x40 },
            Some("MQTT-3.8.3-5"),
        ),
        case(
            "SUBSCRIBE QoS 3 (v3)",
            V3,
            frame(0x82, &cat(&[&[0, 1], &s(b"a"), &[3]])),
            E::SubscribeQoS3,
            Some("MQTT-3.8.3-4"),
        ),
        case(
            "SUBSCRIBE QoS 3 (v5)",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[3]])),
            E::SubscribeQoS3,
            None,
        ),
        case(
            "SUBSCRIBE retain handling 3",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"a"), &[0x30]])),
            E::RetainHandling3,
            None,
        ),
        case(
            "SUBSCRIBE two subscription ids",
            V5,
            frame(0x82, &cat(&[&[0, 1, 4, 0x0B, 1, 0x0B, 2], &s(b"a"), &[0]])),
            E::DuplicateProperty {
                name: "Subscription Identifier",
            },
            None,
        ),
        case(
            "SUBSCRIBE packet id 0",
            V3,
            frame(0x82, &cat(&[&[0, 0], &s(b"a"), &[0]])),
            E::ZeroPacketId {
                packet: T::Subscribe,
            },
            Some("MQTT-2.3.1-1"),
        ),
        // spec: [MQTT-3.8.3-1] (both versions): SUBSCRIBE's filters are UTF-8 strings (v5 has
        // a property block before them).
        case(
            "SUBSCRIBE filter ill-formed",
            V3,
            frame(0x82, &cat(&[&[0, 1], &s(b"\xE2\x82"), &[0]])),
            utf8("topic filter"),
            Some("MQTT-1.5.3-1"),
        ),
        case(
            "SUBSCRIBE filter ill-formed (v5)",
            V5,
            frame(0x82, &cat(&[&[0, 1, 0], &s(b"\xE2\x82"), &[0]])),
            utf8("topic filter"),
            Some("MQTT-1.5.4-1"),
        ),
        case(
            "SUBSCRIBE filter without options",
            V3,
            frame(0x82, &cat(&[&[0, 1], &s(b"a")])),
            truncated(T::Subscribe, "subscription options"),
            None,
        ),
        case(
            "SUBACK return code 3 (v3)",
            V3,
            vec![0x90, 0x03, 0, 1, 3],
            bad_code(T::SubAck, 3),
            Some("MQTT-3.9.3-2"),
        ),
        case(
            "SUBACK reason 0x04 (v5)",
            V5,
            vec![0x90, 0x04, 0, 1, 0, 4],
            bad_code(T::SubAck, 4),
            Some("MQTT-3.9.3-2"),
        ),
        case(
            "UNSUBSCRIBE without filters (v3)",
            V3,
            frame(0xA2, &[0, 1]),
            E::NoTopicFilters {
                packet: T::Unsubscribe,
            },
            Some("MQTT-3.10.3-2"),
        ),
        case(
            "UNSUBSCRIBE without filters (v5)",
            V5,
            frame(0xA2, &[0, 1, 0]),
            E::NoTopicFilters {
                packet: T::Unsubscribe,
            },
            Some("MQTT-3.10.3-2"),
        ),
        case(
            "UNSUBSCRIBE packet id 0 (v5)",
            V5,
            frame(0xA2, &cat(&[&[0, 0, 0], &s(b"a")])),
            E::ZeroPacketId {
                packet: T::Unsubscribe,
            },
            Some("MQTT-2.2.1-3"),
        ),
        // spec: [MQTT-3.10.3-1] (both versions): UNSUBSCRIBE's filters are UTF-8 strings.
        case(
            "UNSUBSCRIBE filter with U+0000",
            V3,
            frame(0xA2, &cat(&[&[0, 1], &s(b"\0")])),
            null("topic filter"),
            Some("MQTT-1.5.3-2"),
        ),
        case(
            "UNSUBSCRIBE filter ill-formed (v5)",
            V5,
            frame(0xA2, &cat(&[&[0, 1, 0], &s(b"a\xFF")])),
            utf8("topic filter"),
            Some("MQTT-1.5.4-1"),
        ),
        case(
            "UNSUBACK reason 0x10",
            V5,
            vec![0xB0, 0x04, 0, 1, 0, 0x10],
            bad_code(T::UnsubAck, 0x10),
            Some("MQTT-3.11.3-2"),
        ),
        case(
            "UNSUBSCRIBE properties with subscription id",
            V5,
            frame(0xA2, &cat(&[&[0, 1, 2, 0x0B, 1], &s(b"a")])),
            not_allowed("Subscription Identifier", "UNSUBSCRIBE"),
            None,
        ),
        // --- acknowledgements, DISCONNECT, AUTH ------------------------------------------------
        case(
            "PUBACK reason 0x92",
            V5,
            vec![0x40, 0x03, 0, 1, 0x92],
            bad_code(T::PubAck, 0x92),
            Some("MQTT-3.4.2-1"),
        ),
        case(
            "PUBREC reason 0x04",
            V5,
            vec![0x50, 0x03, 0, 1, 0x04],
            bad_code(T::PubRec, 0x04),
            Some("MQTT-3.5.2-1"),
        ),
        case(
            "PUBREL reason 0x10",
            V5,
            vec![0x62, 0x03, 0, 1, 0x10],
            bad_code(T::PubRel, 0x10),
            Some("MQTT-3.6.2-1"),
        ),
        case(
            "PUBCOMP reason 0x80",
            V5,
            vec![0x70, 0x03, 0, 1, 0x80],
            bad_code(T::PubComp, 0x80),
            Some("MQTT-3.7.2-1"),
        ),
        case(
            "DISCONNECT reason 0x01",
            V5,
            vec![0xE0, 0x01, 0x01],
            bad_code(T::Disconnect, 0x01),
            Some("MQTT-3.14.2-1"),
        ),
        case(
            "AUTH reason 0x80",
            V5,
            vec![0xF0, 0x01, 0x80],
            bad_code(T::Auth, 0x80),
            Some("MQTT-3.15.2-1"),
        ),
        case(
            "PUBACK packet id cut short",
            V3,
            vec![0x40, 0x01, 0],
            truncated(T::PubAck, "packet identifier"),
            None,
        ),
        case(
            "v3 PUBACK with a reason code",
            V3,
            vec![0x40, 0x03, 0, 1, 0x10],
            E::TrailingBytes {
                packet: T::PubAck,
                count: 1,
            },
            None,
        ),
        case(
            "PUBACK reason string twice",
            V5,
            frame(
                0x40,
                &cat(&[&[0, 1, 0, 8], &[0x1F], &s(b"a"), &[0x1F], &s(b"b")]),
            ),
            E::DuplicateProperty {
                name: "Reason String",
            },
            None,
        ),
        case(
            "DISCONNECT with topic alias",
            V5,
            vec![0xE0, 0x05, 0x00, 0x03, 0x23, 0, 1],
            not_allowed("Topic Alias", "DISCONNECT"),
            None,
        ),
        case(
            "AUTH with will delay",
            V5,
            vec![0xF0, 0x07, 0x18, 0x05, 0x18, 0, 0, 0, 1],
            not_allowed("Will Delay Interval", "AUTH"),
            None,
        ),
    ]
}

fn publish5_topic(topic: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&s(topic), &[0], b"payload"]))
}

#[test]
fn every_malformed_input_gets_its_specific_error() {
    let cases = table();
    assert!(
        cases.len() >= 60,
        "the table must keep at least 60 rules, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let mut buf = BytesMut::from(&case.bytes[..]);
        let got = decode(&mut buf, case.version, 1 << 20);
        match got {
            Err(ref e) if *e == case.error => {
                if e.spec_id(case.version) != case.spec {
                    failures.push(format!(
                        "{}: spec id {:?}, table says {:?}",
                        case.name,
                        e.spec_id(case.version),
                        case.spec
                    ));
                }
            }
            other => failures.push(format!(
                "{}: expected Err({:?}), got {:?}",
                case.name, case.error, other
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A prefix of any malformed input is either incomplete or already an error: the decoder never
/// mistakes part of a packet for a whole one.
#[test]
fn prefixes_of_malformed_inputs_are_incomplete_or_errors() {
    for case in table() {
        for cut in 0..case.bytes.len() {
            let mut buf = BytesMut::from(&case.bytes[..cut]);
            let got = decode(&mut buf, case.version, 1 << 20);
            assert!(
                matches!(got, Ok(None) | Err(_)),
                "{} cut at {cut}: {got:?}",
                case.name
            );
        }
    }
}

#[test]
fn oversized_header_is_refused_before_the_body_arrives() {
    // The header claims 268 MB; only 5 bytes exist. Nothing is allocated for the claim.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let capacity_before = buf.capacity();
    let got = decode(&mut buf, V5, 1024);
    assert_eq!(
        got,
        Err(E::PacketTooLarge {
            size: 268_435_460,
            max: 1024
        })
    );
    assert_eq!(got.unwrap_err().reason_code(), ReasonCode::PacketTooLarge);
    assert_eq!(buf.capacity(), capacity_before);
}

#[test]
fn errors_map_to_the_reason_codes_the_broker_sends() {
    assert_eq!(E::PublishQoS3.reason_code(), ReasonCode::MalformedPacket);
    assert_eq!(
        E::DuplicateProperty { name: "x" }.reason_code(),
        ReasonCode::ProtocolError
    );
    assert_eq!(
        E::UnsupportedProtocolLevel {
            name: "MQTT".into(),
            level: 9
        }
        .reason_code(),
        ReasonCode::UnsupportedProtocolVersion
    );
    assert_eq!(
        E::WildcardInTopicName {
            field: "PUBLISH topic name"
        }
        .reason_code(),
        ReasonCode::TopicNameInvalid
    );
}
