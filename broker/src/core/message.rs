//! An application message as the broker holds it between receipt and delivery.
//!
//! One `Arc<Message>` is shared by every session that gets a copy; payload and topic are
//! `Bytes`-backed, so fan-out copies nothing.

use std::time::Duration;

use bytes::Bytes;

use super::time::Instant;
use crate::codec::{ByteStr, Properties, Property};
use crate::types::QoS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
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
        topic: ByteStr,
        payload: Bytes,
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
            topic,
            payload,
            qos,
            retain,
            properties,
            publisher,
            expires_at,
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
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
