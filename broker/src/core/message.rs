//! An application message as the broker holds it between receipt and delivery.
//!
//! One `Arc<Message>` is shared by every session that gets a copy; topic and payload are one
//! `Bytes`-backed [`Content`], so fan-out copies nothing. A message the broker will hold for a
//! while (retained, queued, in flight) is first [`Message::compacted`]: its bytes are slices of
//! the read buffer they arrived in, and a 1-byte message must not keep a 64 KiB buffer alive.

use crate::planted::{self, PlantedBug};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::time::Instant;
use crate::codec::{ByteStr, Content, Properties, Property};

/// What holding a message costs beyond its bytes: the `Message` and `Arc`, a queue entry or
/// tree node pointing at it, allocator overhead. Charged against the memory limits with the
/// bytes themselves, so a flood of tiny messages is counted at what it really takes.
pub const MESSAGE_OVERHEAD_BYTES: usize = 160;
use crate::types::QoS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name and payload.
    pub content: Content,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers: never a topic alias or subscription
    /// identifier, and the message expiry interval is recomputed at delivery from `expires_at`.
    pub properties: Properties,
    /// The client that published it (for No Local), or the client whose will it is.
    pub publisher: ByteStr,
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Builds a message from what a client sent: keeps the forwardable properties and turns
    /// the expiry interval into an absolute deadline.
    pub fn new(
        content: Content,
        qos: QoS,
        retain: bool,
        received: &Properties,
        publisher: ByteStr,
        now: Instant,
    ) -> Message {
        let mut properties = Properties::new();
        let mut expires_at = None;
        for property in received.iter() {
            match property {
                Property::MessageExpiryInterval(secs) => {
                    expires_at = Some(now + Duration::from_secs(u64::from(*secs)));
                }
                Property::PayloadFormatIndicator(_)
                | Property::ContentType(_)
                | Property::ResponseTopic(_)
                | Property::CorrelationData(_)
                | Property::UserProperty(..) => properties.push(property.clone()),
                // Topic alias, subscription identifiers, will delay: per hop, not forwarded.
                _ => {}
            }
        }
        Message {
            content,
            qos,
            retain,
            properties,
            publisher,
            expires_at,
        }
    }

    pub fn topic(&self) -> &str {
        self.content.topic()
    }

    pub fn payload(&self) -> &[u8] {
        self.content.payload()
    }

    /// What holding this message costs, as the queue, retained and memory limits count it:
    /// topic, payload, the properties (their in-memory size, not the wire's) and overhead.
    pub fn charged_bytes(&self) -> usize {
        let property_bytes: usize = self
            .properties
            .iter()
            .map(|p| {
                std::mem::size_of::<Property>()
                    + property_data(p).iter().map(|d| d.len()).sum::<usize>()
            })
            .sum();
        MESSAGE_OVERHEAD_BYTES + self.topic().len() + self.payload().len() + property_bytes
    }

    /// The same message in one allocation of its own: topic, payload and property data copied
    /// out of whatever buffer they share (typically the connection's read buffer).
    pub fn compacted(&self) -> Message {
        let data_len: usize = self
            .properties
            .iter()
            .flat_map(property_data)
            .map(|d| d.len())
            .sum();
        let (topic, payload) = (self.topic().as_bytes(), self.payload());
        let mut arena = BytesMut::with_capacity(topic.len() + payload.len() + data_len);
        arena.extend_from_slice(topic);
        arena.extend_from_slice(payload);
        for property in self.properties.iter() {
            for data in property_data(property) {
                arena.extend_from_slice(data);
            }
        }
        let mut arena = arena.freeze();
        let mut take = |len: usize| arena.split_to(len);
        let string = |bytes: Bytes| ByteStr::from_bytes(bytes).expect("copied from a valid string");
        let content = Content::packed(take(topic.len() + payload.len()), topic.len())
            .expect("copied from a valid topic");
        let properties = self
            .properties
            .iter()
            .map(|property| match property {
                Property::ContentType(s) => Property::ContentType(string(take(s.len()))),
                Property::ResponseTopic(s) => Property::ResponseTopic(string(take(s.len()))),
                Property::CorrelationData(b) => Property::CorrelationData(take(b.len())),
                Property::UserProperty(k, v) => {
                    let key = string(take(k.len()));
                    Property::UserProperty(key, string(take(v.len())))
                }
                other => other.clone(),
            })
            .collect::<Vec<_>>();
        Message {
            content,
            properties: properties.into(),
            publisher: self.publisher.clone(),
            ..*self
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        if planted::active(PlantedBug::ExpiryFrozenWhileQueued) {
            return false;
        }
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The properties to send at `now`: the forwarded ones, the remaining expiry interval
    /// (spec: [MQTT-3.3.2-6]), then the subscription identifiers, last because rumqttc 0.25
    /// stops reading properties after one.
    pub fn outgoing_properties(&self, now: Instant, subscription_ids: &[u32]) -> Properties {
        let mut properties = self.properties.clone();
        if let Some(at) = self.expires_at {
            let left = at.saturating_since(now);
            // Round up: a message with 0.4 s left must not be announced as already expired.
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            properties.push(Property::MessageExpiryInterval(
                secs.min(u64::from(u32::MAX)) as u32,
            ));
        }
        for id in subscription_ids {
            properties.push(Property::SubscriptionIdentifier(*id));
        }
        properties
    }
}

/// `text` in an allocation of its own (not a slice of a larger buffer it may keep alive).
pub fn owned(text: &str) -> ByteStr {
    ByteStr::new(text).expect("copied from a valid string")
}

/// `properties` with every string and binary value in an allocation of its own.
pub fn owned_properties(properties: &Properties) -> Properties {
    let owned_property = |property: &Property| match property {
        Property::ContentType(s) => Property::ContentType(owned(s)),
        Property::ResponseTopic(s) => Property::ResponseTopic(owned(s)),
        Property::CorrelationData(b) => Property::CorrelationData(Bytes::copy_from_slice(b)),
        Property::UserProperty(k, v) => Property::UserProperty(owned(k), owned(v)),
        other => other.clone(),
    };
    properties
        .iter()
        .map(owned_property)
        .collect::<Vec<_>>()
        .into()
}

/// The byte data a forwarded property holds (what [`Message::compacted`] copies).
fn property_data(property: &Property) -> Vec<&[u8]> {
    match property {
        Property::ContentType(s) | Property::ResponseTopic(s) => vec![s.as_bytes()],
        Property::CorrelationData(b) => vec![b],
        Property::UserProperty(k, v) => vec![k.as_bytes(), v.as_bytes()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `part` lies inside `buffer` (a view into it rather than a copy).
    fn inside(part: &[u8], buffer: &std::ops::Range<*const u8>) -> bool {
        buffer.contains(&part.as_ptr())
    }

    #[test]
    fn compacted_keeps_everything_and_owns_its_bytes() {
        let big = Bytes::from(vec![b'x'; 64 * 1024]);
        let received: Properties = vec![
            Property::UserProperty(ByteStr::new("k").unwrap(), ByteStr::new("v").unwrap()),
            Property::CorrelationData(big.slice(10..12)),
            Property::ContentType(ByteStr::new("text").unwrap()),
            Property::MessageExpiryInterval(9),
        ]
        .into();
        let big_range = big.as_ptr_range();
        let message = Message::new(
            Content::new(
                ByteStr::from_bytes(big.slice(0..3)).unwrap(),
                big.slice(3..4),
            ),
            QoS::AtLeastOnce,
            true,
            &received,
            ByteStr::new("pub").unwrap(),
            Instant::ZERO,
        );
        assert!(inside(message.payload(), &big_range));
        let compact = message.compacted();
        assert_eq!(compact, message);
        // Nothing of the copy is a view into the 64 KiB buffer.
        assert!(!inside(compact.topic().as_bytes(), &big_range));
        assert!(!inside(compact.payload(), &big_range));
        let Property::CorrelationData(data) = &compact.properties.0[1] else {
            panic!("properties out of order: {:?}", compact.properties);
        };
        assert!(!inside(data, &big_range));
        assert!(compact.charged_bytes() > MESSAGE_OVERHEAD_BYTES + 4);
    }

    /// A message made of a decoded PUBLISH (its topic and payload in the read buffer, with a
    /// packet id and properties between them) compacts into a buffer of its own, and a topic
    /// alias can take its topic away and give it back.
    #[test]
    fn a_decoded_message_compacts_out_of_the_read_buffer() {
        use crate::codec::{decode, encode, Packet, ProtocolVersion, Publish, PACKET_BYTES_MAX};
        use crate::types::PacketId;
        let sent = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            content: Content::new(ByteStr::from_static("a/b"), Bytes::from_static(b"payload")),
            packet_id: PacketId::new(7),
            properties: vec![Property::ContentType(ByteStr::from_static("text/plain"))].into(),
        };
        let mut read = bytes::BytesMut::new();
        encode(
            &Packet::Publish(sent.clone()),
            ProtocolVersion::V5,
            &mut read,
        )
        .unwrap();
        let read_range = read.as_ptr_range();
        let Some(Packet::Publish(got)) =
            decode(&mut read, ProtocolVersion::V5, PACKET_BYTES_MAX).unwrap()
        else {
            panic!("not a PUBLISH");
        };
        assert_eq!(got, sent);
        let message = Message::new(
            got.content,
            got.qos,
            got.retain,
            &got.properties,
            ByteStr::from_static("c"),
            Instant::ZERO,
        );
        assert_eq!(
            (message.topic(), message.payload()),
            ("a/b", &b"payload"[..])
        );
        assert!(inside(message.topic().as_bytes(), &read_range));
        assert!(inside(message.payload(), &read_range));
        let compact = message.compacted();
        assert_eq!(compact, message);
        assert!(!inside(compact.topic().as_bytes(), &read_range));
        assert!(!inside(compact.payload(), &read_range));
        for content in [&message.content, &compact.content] {
            let bare = content.without_topic();
            assert_eq!((bare.topic(), bare.payload()), ("", &b"payload"[..]));
            let named = bare.with_topic(ByteStr::from_static("a/b"));
            assert_eq!(&named, content);
        }
    }
}
