//! Property tests of the codec: encode-then-decode is the identity for every packet of every
//! version, and the way a byte stream is split into reads never changes what is decoded.

mod support;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use support::packets::{self, VERSIONS};
use tern::codec::*;

const MAX: usize = PACKET_BYTES_MAX;

fn encode_to_vec(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("generated packets are encodable");
    assert_eq!(buf.len(), encoded_len(packet, version).unwrap());
    buf
}

fn round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut buf = encode_to_vec(packet, version);
    let decoded = decode(&mut buf, version, MAX);
    prop_assert_eq!(decoded, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    // spec: [MQTT-2.2.2-1] (v5: empty property lists are still encoded with a length)
    #[test]
    fn every_v5_packet_round_trips(packet in packets::packet(ProtocolVersion::V5)) {
        round_trip(&packet, ProtocolVersion::V5)?;
    }

    #[test]
    fn every_v311_packet_round_trips(packet in packets::packet(ProtocolVersion::V3_1_1)) {
        round_trip(&packet, ProtocolVersion::V3_1_1)?;
    }

    #[test]
    fn every_v31_packet_round_trips(packet in packets::packet(ProtocolVersion::V3_1)) {
        round_trip(&packet, ProtocolVersion::V3_1)?;
    }

    /// Whatever sizes the reads come in, the same packets come out, and a partial packet
    /// consumes nothing.
    #[test]
    fn any_split_decodes_the_same_sequence(
        (version, packets) in packets::version().prop_flat_map(|v| (Just(v), vec(packets::packet(v), 1..6))),
        cuts in vec(1usize..40, 0..50),
    ) {
        let mut stream = BytesMut::new();
        for packet in &packets {
            stream.extend_from_slice(&encode_to_vec(packet, version));
        }
        let stream = stream.freeze();
        let mut read_buffer = BytesMut::new();
        let mut decoded = Vec::new();
        let mut offset = 0;
        let mut cuts = cuts.into_iter();
        while offset < stream.len() {
            let step = cuts.next().unwrap_or(stream.len()).min(stream.len() - offset);
            read_buffer.extend_from_slice(&stream[offset..offset + step]);
            offset += step;
            loop {
                let before = read_buffer.len();
                match decode(&mut read_buffer, version, MAX) {
                    Ok(Some(packet)) => decoded.push(packet),
                    Ok(None) => {
                        prop_assert_eq!(read_buffer.len(), before, "Ok(None) must consume nothing");
                        break;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("valid stream rejected: {e}"))),
                }
            }
        }
        prop_assert!(read_buffer.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    /// Arbitrary bytes never panic the decoder, and an error or `None` is all it returns.
    #[test]
    fn random_bytes_never_panic(version in packets::version(), data in vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = decode(&mut buf, version, 1024) {}
    }
}

#[test]
fn v5_empty_topic_with_alias_round_trips() {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: tern::types::QoS::AtMostOnce,
        retain: false,
        content: Content::new(ByteStr::default(), bytes::Bytes::from_static(b"x")),
        packet_id: None,
        properties: vec![Property::TopicAlias(3)].into(),
    });
    let mut buf = encode_to_vec(&packet, ProtocolVersion::V5);
    assert_eq!(decode(&mut buf, ProtocolVersion::V5, MAX), Ok(Some(packet)));
}

#[test]
fn publish_payload_is_a_slice_of_the_read_buffer() {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: tern::types::QoS::AtMostOnce,
        retain: false,
        content: Content::new(
            ByteStr::from_static("t"),
            bytes::Bytes::from(vec![7u8; 1000]),
        ),
        packet_id: None,
        properties: Properties::new(),
    });
    let mut buf = encode_to_vec(&packet, ProtocolVersion::V3_1_1);
    let region = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, ProtocolVersion::V3_1_1, MAX) else {
        panic!("publish expected");
    };
    assert!(
        region.contains(&(p.payload().as_ptr() as usize)),
        "payload was copied"
    );
}

#[test]
fn mqtt_3_1_connack_never_sets_the_reserved_session_byte() {
    let ack = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: Properties::new(),
    });
    assert_eq!(
        &encode_to_vec(&ack, ProtocolVersion::V3_1)[..],
        &[0x20, 0x02, 0x00, 0x00]
    );
    assert_eq!(
        &encode_to_vec(&ack, ProtocolVersion::V3_1_1)[..],
        &[0x20, 0x02, 0x01, 0x00]
    );
}

#[test]
fn versions_differ_only_where_the_spec_says() {
    // The v3 encoder drops v5-only fields: a v5 PUBACK with a reason code is a plain 3.1.1 PUBACK.
    let ack = Packet::PubAck(Ack {
        packet_id: tern::types::PacketId::new(9).unwrap(),
        reason_code: ReasonCode::NoMatchingSubscribers,
        properties: vec![Property::ReasonString(ByteStr::from_static("none"))].into(),
    });
    let v3 = encode_to_vec(&ack, ProtocolVersion::V3_1_1);
    assert_eq!(&v3[..], &[0x40, 0x02, 0x00, 0x09]);
    assert!(encode_to_vec(&ack, ProtocolVersion::V5).len() > v3.len());
    for version in VERSIONS {
        let mut auth = BytesMut::new();
        let result = encode(
            &Packet::Auth(Auth {
                reason_code: ReasonCode::Success,
                properties: Properties::new(),
            }),
            version,
            &mut auth,
        );
        assert_eq!(result.is_ok(), version.is_v5());
    }
}
