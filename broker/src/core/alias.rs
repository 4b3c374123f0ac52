//! Broker-to-client topic aliases for one MQTT 5 connection.
//!
//! When a client announces a Topic Alias Maximum, the broker may replace a topic it sends
//! often by a two-byte alias: the first PUBLISH on a topic carries the topic and a new alias,
//! later ones an empty topic and the alias. The table is bounded by the smaller of the
//! client's maximum and the broker's limit, and when it is full the least recently used alias
//! is reused, so the choice is deterministic. Aliases live as long as the connection
//! (spec: [MQTT-3.3.2-7]).

use crate::codec::ByteStr;

#[derive(Debug, Clone)]
struct Entry {
    topic: ByteStr,
    alias: u16,
    last_use: u64,
}

/// Boxed, and absent when aliases are off: every session holds one, most never use it.
#[derive(Debug, Clone, Default)]
pub struct OutboundAliases(Option<Box<Table>>);

#[derive(Debug, Clone)]
struct Table {
    capacity: u16,
    entries: Vec<Entry>,
    clock: u64,
}

/// How to send one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasUse {
    /// The client knows the alias: send an empty topic and the alias.
    Known(u16),
    /// A new mapping: send the topic and the alias.
    New(u16),
}

impl OutboundAliases {
    /// A table of `capacity` aliases; 0 turns aliases off (spec: [MQTT-3.1.2-27]).
    pub fn new(capacity: u16) -> OutboundAliases {
        OutboundAliases((capacity > 0).then(|| {
            Box::new(Table {
                capacity,
                entries: Vec::new(),
                clock: 0,
            })
        }))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The alias for `topic`, making one (or reusing the least recently used) if needed.
    /// Never above the capacity (spec: [MQTT-3.1.2-26] [MQTT-3.3.2-11]).
    pub fn assign(&mut self, topic: &str) -> Option<AliasUse> {
        match &mut self.0 {
            Some(table) if !topic.is_empty() => Some(table.assign(topic)),
            _ => None,
        }
    }
}

impl Table {
    fn assign(&mut self, topic: &str) -> AliasUse {
        debug_assert!(self.capacity > 0, "a table exists only with aliases on");
        self.clock += 1;
        if let Some(entry) = self.entries.iter_mut().find(|e| e.topic == *topic) {
            entry.last_use = self.clock;
            return AliasUse::Known(entry.alias);
        }
        if self.entries.len() < usize::from(self.capacity) {
            let alias = self.entries.len() as u16 + 1;
            self.entries.push(Entry {
                // A copy: the message's topic may be a slice of a large read buffer, and an
                // alias lives as long as the connection.
                topic: super::message::owned(topic),
                alias,
                last_use: self.clock,
            });
            return AliasUse::New(alias);
        }
        let oldest = self
            .entries
            .iter_mut()
            .min_by_key(|e| e.last_use)
            .expect("capacity > 0");
        oldest.topic = super::message::owned(topic);
        oldest.last_use = self.clock;
        assert!(
            oldest.alias >= 1 && oldest.alias <= self.capacity,
            "alias out of range"
        );
        AliasUse::New(oldest.alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // spec: [MQTT-3.1.2-26] [MQTT-3.1.2-27] [MQTT-3.3.2-11] (v5)
    #[test]
    fn bounded_lru_table() {
        let t = |s: &str| ByteStr::new(s).unwrap();
        let mut off = OutboundAliases::new(0);
        assert_eq!(off.assign(&t("a")), None);
        assert!(!off.enabled() && !OutboundAliases::default().enabled());
        let mut table = OutboundAliases::new(2);
        assert_eq!(table.assign(&t("a")), Some(AliasUse::New(1)));
        assert_eq!(table.assign(&t("b")), Some(AliasUse::New(2)));
        assert_eq!(table.assign(&t("a")), Some(AliasUse::Known(1)));
        // Full: "b" is the least recently used, so "c" takes alias 2.
        assert_eq!(table.assign(&t("c")), Some(AliasUse::New(2)));
        assert_eq!(table.assign(&t("b")), Some(AliasUse::New(1)));
        assert_eq!(table.assign(&t("c")), Some(AliasUse::Known(2)));
    }
}
