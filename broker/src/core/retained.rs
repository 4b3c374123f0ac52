//! Retained messages: the last retained message per topic, sent to new subscribers.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::message::Message;
use super::time::Instant;
use crate::codec::ByteStr;
use crate::topic::{filter_matches, literal_prefix};

#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: BTreeMap<ByteStr, Arc<Message>>,
    /// Payload bytes of all stored messages.
    payload_bytes: usize,
}

/// What storing a retained message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainOutcome {
    Stored,
    Deleted,
    /// The store is full and the topic is new: not retained.
    Refused,
}

impl RetainedStore {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Stores `message` as the topic's retained message, or deletes the topic's retained
    /// message if the payload is empty (spec: [MQTT-3.3.1-10] [MQTT-3.3.1-11] in 3.1.1,
    /// [MQTT-3.3.1-6] [MQTT-3.3.1-7] in 5.0). A message that would take the store past
    /// `count_max` topics or `bytes_max` payload bytes is refused; the old one stays.
    pub fn retain(
        &mut self,
        message: Arc<Message>,
        count_max: usize,
        bytes_max: usize,
    ) -> RetainOutcome {
        let old_bytes = self
            .messages
            .get(&message.topic)
            .map_or(0, |m| m.payload.len());
        if message.payload.is_empty() {
            if self.messages.remove(&message.topic).is_some() {
                self.payload_bytes -= old_bytes;
            }
            return RetainOutcome::Deleted;
        }
        let new_topic = !self.messages.contains_key(&message.topic);
        let bytes_after = self.payload_bytes - old_bytes + message.payload.len();
        if (new_topic && self.messages.len() >= count_max) || bytes_after > bytes_max {
            return RetainOutcome::Refused;
        }
        self.payload_bytes = bytes_after;
        self.messages.insert(message.topic.clone(), message);
        RetainOutcome::Stored
    }

    /// The unexpired retained messages matching `filter`, in topic order. Only the range of
    /// topics starting with the filter's literal prefix is scanned; expired ones are removed.
    pub fn matching(&mut self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let prefix = literal_prefix(filter);
        let mut found = Vec::new();
        let mut expired = Vec::new();
        let range = self
            .messages
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
        for (topic, message) in range {
            if !topic.starts_with(prefix) {
                break;
            }
            if !filter_matches(filter, topic) {
                continue;
            }
            if message.is_expired(now) {
                expired.push(topic.clone());
            } else {
                found.push(message.clone());
            }
        }
        for topic in expired {
            if let Some(message) = self.messages.remove(&topic) {
                self.payload_bytes -= message.payload.len();
            }
        }
        found
    }
}
