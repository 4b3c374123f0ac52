//! Retained messages: the last retained message per topic, sent to new subscribers.
//!
//! A new subscription does not get its retained messages all at once: a `#` subscriber of a
//! million topics would stall every other client while they were copied, and its outbound
//! queue could not hold them. It gets a [`RetainedCursor`] instead, which the core advances in
//! slices as the subscriber's window and socket take them (`Broker::feed_retained`). Each
//! stored message carries the store's sequence number at the time it was stored; a cursor only
//! yields messages stored before its subscription began, because anything stored after it was
//! routed to the subscriber live. So a subscriber gets every retained message exactly once and
//! never an older value after a newer one.

use crate::planted::{self, PlantedBug};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use super::message::{owned, Message};
use super::time::Instant;
use crate::codec::ByteStr;
use crate::topic::{filter_matches, literal_prefix};

#[derive(Debug)]
struct Stored {
    /// When it was stored, in store sequence numbers.
    sequence: u64,
    message: Arc<Message>,
}

#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: BTreeMap<ByteStr, Stored>,
    /// Bytes of all stored messages, as [`Message::charged_bytes`] counts them.
    bytes: usize,
    /// The sequence number of the last store.
    sequence: u64,
    /// Messages with an expiry, by deadline: expired ones are purged before any limit is
    /// checked, so messages nobody will receive never hold the store's room.
    expiring: BTreeSet<(Instant, ByteStr)>,
    /// Topics whose message expired and was removed since the last [`RetainedStore::take_expired`]
    /// (the broker takes them out of its durable store too).
    expired: Vec<ByteStr>,
}

/// What storing a retained message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainOutcome {
    Stored,
    Deleted,
    /// The store is full and the topic is new: not retained.
    Refused,
}

/// Where a new subscription's walk through the retained messages stands.
#[derive(Debug, Clone)]
pub struct RetainedCursor {
    filter: ByteStr,
    /// The last topic looked at; the walk goes on after it.
    after: Option<ByteStr>,
    /// Messages stored after this sequence number reached the subscriber live.
    sequence_max: u64,
}

impl RetainedCursor {
    pub fn filter(&self) -> &ByteStr {
        &self.filter
    }
}

/// What a step of a cursor found.
#[derive(Debug)]
pub enum Next {
    Message(Arc<Message>),
    /// No more matching messages: the cursor is done.
    Exhausted,
    /// The scan budget ran out before a match: call again later.
    Paused,
}

/// The prefix every topic `filter` matches starts with: its literal part, less a final '/'
/// before a closing '#' ("a/b/#" matches "a/b" itself, spec: [MQTT-4.7.1-2]).
fn scan_prefix(filter: &str) -> &str {
    let prefix = literal_prefix(filter);
    match filter.strip_suffix('#') {
        Some(head) if head == prefix => prefix.strip_suffix('/').unwrap_or(prefix),
        _ => prefix,
    }
}

impl RetainedStore {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Bytes held, as charged against the retained and memory limits.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores `message` as the topic's retained message, or deletes the topic's retained
    /// message if the payload is empty (spec: [MQTT-3.3.1-10] [MQTT-3.3.1-11] in 3.1.1,
    /// [MQTT-3.3.1-6] [MQTT-3.3.1-7] in 5.0). A message that would take the store past
    /// `count_max` topics or `bytes_max` bytes, or that `admit` refuses (given the bytes it
    /// adds), is refused; the old one stays. Returns the outcome and the change in bytes held.
    pub fn retain(
        &mut self,
        message: Arc<Message>,
        count_max: usize,
        bytes_max: usize,
        admit: impl FnOnce(usize) -> bool,
    ) -> (RetainOutcome, isize) {
        let old_bytes = self
            .messages
            .get(message.topic())
            .map_or(0, |stored| stored.message.charged_bytes());
        if message.payload().is_empty() {
            if let Some(old) = self.messages.remove(message.topic()) {
                self.forget_expiry(&old.message);
                self.bytes -= old_bytes;
                return (RetainOutcome::Deleted, -(old_bytes as isize));
            }
            return (RetainOutcome::Deleted, 0);
        }
        let new_bytes = message.charged_bytes();
        let new_topic = !self.messages.contains_key(message.topic());
        if !new_topic && planted::active(PlantedBug::RetainedFirstWins) {
            return (RetainOutcome::Stored, 0);
        }
        let bytes_after = self.bytes - old_bytes + new_bytes;
        let growth = new_bytes.saturating_sub(old_bytes);
        if (new_topic && self.messages.len() >= count_max)
            || bytes_after > bytes_max
            || (growth > 0 && !admit(growth))
        {
            return (RetainOutcome::Refused, 0);
        }
        self.bytes = bytes_after;
        self.sequence += 1;
        let stored = Stored {
            sequence: self.sequence,
            message: message.clone(),
        };
        // The old message's deadline goes first: the new one may have the same.
        if let Some(old) = self.messages.remove(message.topic()) {
            self.forget_expiry(&old.message);
        }
        if let Some(at) = message.expires_at {
            self.expiring.insert((at, message.content.to_topic()));
        }
        self.messages.insert(message.content.to_topic(), stored);
        debug_assert!(self.expiring.len() <= self.messages.len());
        (
            RetainOutcome::Stored,
            new_bytes as isize - old_bytes as isize,
        )
    }

    fn forget_expiry(&mut self, message: &Message) {
        if let Some(at) = message.expires_at {
            self.expiring.remove(&(at, message.content.to_topic()));
        }
    }

    /// Removes every message whose expiry has passed; returns the bytes freed. Cheap when
    /// nothing has expired (one look at the earliest deadline).
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let mut freed = 0;
        while let Some((at, _)) = self.expiring.first() {
            if *at > now {
                break;
            }
            let (at, topic) = self.expiring.pop_first().expect("checked above");
            // Only the message this deadline belongs to (a newer one keeps its own).
            if self.messages.get(&topic).and_then(|s| s.message.expires_at) == Some(at) {
                let stored = self.messages.remove(&topic).expect("just looked up");
                freed += stored.message.charged_bytes();
                self.expired.push(topic);
            }
        }
        self.bytes -= freed;
        freed
    }

    /// A cursor over the messages matching `filter` that are stored now.
    pub fn cursor(&self, filter: ByteStr) -> RetainedCursor {
        RetainedCursor {
            filter,
            after: None,
            sequence_max: self.sequence,
        }
    }

    /// The cursor's next unexpired message, in topic order, looking at no more topics than
    /// `budget` says (each one looked at is taken off it). Only the range of topics starting with the filter's literal prefix is walked.
    /// Expired messages met on the way are removed; the bytes freed are returned with the step.
    pub fn next(
        &mut self,
        cursor: &mut RetainedCursor,
        now: Instant,
        budget: &mut usize,
    ) -> (Next, usize) {
        let prefix = scan_prefix(&cursor.filter);
        let start = match &cursor.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Included(prefix),
        };
        let mut expired: Vec<ByteStr> = Vec::new();
        let mut found = None;
        let mut last: Option<&ByteStr> = None;
        let allowed = *budget;
        let mut looked = 0;
        for (topic, stored) in self
            .messages
            .range::<str, _>((start, Bound::Unbounded))
            .take(allowed)
        {
            looked += 1;
            if !topic.starts_with(prefix) {
                found = Some(Next::Exhausted);
                break;
            }
            last = Some(topic);
            if stored.sequence > cursor.sequence_max || !filter_matches(&cursor.filter, topic) {
                continue;
            }
            if stored.message.is_expired(now) {
                expired.push(topic.clone());
                continue;
            }
            found = Some(Next::Message(stored.message.clone()));
            break;
        }
        *budget -= looked;
        if let Some(topic) = last {
            // A copy: the stored topic shares an allocation with its message's payload, which
            // a paused cursor must not keep alive once the message is replaced.
            cursor.after = Some(owned(topic));
        }
        let next = match found {
            Some(next) => next,
            // The range ended before the budget did, or nothing is left after the cursor.
            None if looked < allowed || self.walked_to_the_end(cursor) => Next::Exhausted,
            None => Next::Paused,
        };
        let mut freed = 0;
        for topic in expired {
            if let Some(stored) = self.messages.remove(&topic) {
                self.forget_expiry(&stored.message);
                freed += stored.message.charged_bytes();
                self.expired.push(topic);
            }
        }
        self.bytes -= freed;
        (next, freed)
    }

    /// The topics whose message expired since the last call (each is also gone from here).
    pub fn take_expired(&mut self) -> Vec<ByteStr> {
        std::mem::take(&mut self.expired)
    }

    /// Whether nothing is stored after the cursor's position.
    fn walked_to_the_end(&self, cursor: &RetainedCursor) -> bool {
        match &cursor.after {
            Some(after) => self
                .messages
                .range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded))
                .next()
                .is_none(),
            None => self.messages.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Content, Properties};
    use crate::types::QoS;
    use bytes::Bytes;

    fn message(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message::new(
            Content::new(
                ByteStr::new(topic).unwrap(),
                Bytes::from(payload.to_owned()),
            ),
            QoS::AtMostOnce,
            true,
            &Properties::new(),
            ByteStr::default(),
            Instant::ZERO,
        ))
    }

    fn store(s: &mut RetainedStore, topic: &str, payload: &str) {
        s.retain(message(topic, payload), usize::MAX, usize::MAX, |_| true);
    }

    fn walk(s: &mut RetainedStore, cursor: &mut RetainedCursor, budget: usize) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            match s.next(cursor, Instant::ZERO, &mut budget.clone()).0 {
                Next::Message(m) => got.push(String::from_utf8(m.payload().to_vec()).unwrap()),
                Next::Exhausted => return got,
                Next::Paused => got.push("(paused)".into()),
            }
        }
    }

    #[test]
    fn a_cursor_yields_what_was_stored_before_it_once_in_topic_order() {
        let mut s = RetainedStore::default();
        store(&mut s, "a/2", "a2");
        store(&mut s, "a/1", "a1");
        store(&mut s, "b/1", "b1");
        store(&mut s, "a/3", "a3");
        let mut cursor = s.cursor(ByteStr::new("a/+").unwrap());
        // Stored after the cursor began: the subscriber got these live.
        store(&mut s, "a/0", "new");
        store(&mut s, "a/3", "a3 again");
        assert_eq!(walk(&mut s, &mut cursor, 100), vec!["a1", "a2"]);
    }

    #[test]
    fn a_small_budget_pauses_without_losing_the_place() {
        let mut s = RetainedStore::default();
        for i in 0..10 {
            store(&mut s, &format!("x/{i}"), "skip");
        }
        store(&mut s, "y/1", "y1");
        store(&mut s, "y/2", "y2");
        let mut cursor = s.cursor(ByteStr::new("#").unwrap());
        let got = walk(&mut s, &mut cursor, 1);
        assert_eq!(got.iter().filter(|p| *p != "(paused)").count(), 12);
        let mut cursor = s.cursor(ByteStr::new("+/2").unwrap());
        let got = walk(&mut s, &mut cursor, 3);
        assert_eq!(
            got.into_iter()
                .filter(|p| p != "(paused)")
                .collect::<Vec<_>>(),
            vec!["skip", "y2"]
        );
    }

    #[test]
    fn a_closing_multi_level_wildcard_matches_the_parent_topic() {
        let mut s = RetainedStore::default();
        store(&mut s, "a/b", "parent");
        store(&mut s, "a/bc", "not a child");
        store(&mut s, "a/b/c", "child");
        store(&mut s, "a", "grandparent");
        let mut cursor = s.cursor(ByteStr::new("a/b/#").unwrap());
        assert_eq!(walk(&mut s, &mut cursor, 100), vec!["parent", "child"]);
        assert_eq!(scan_prefix("#"), "");
        assert_eq!(scan_prefix("a/+/#"), "a/");
        assert_eq!(scan_prefix("a/b"), "a/b");
    }

    #[test]
    fn expired_messages_are_purged_and_free_their_room() {
        let mut s = RetainedStore::default();
        let expiring: Properties = vec![crate::codec::Property::MessageExpiryInterval(5)].into();
        let message = |topic: &str| {
            Arc::new(Message::new(
                Content::new(ByteStr::new(topic).unwrap(), Bytes::from_static(b"x")),
                QoS::AtMostOnce,
                true,
                &expiring,
                ByteStr::default(),
                Instant::ZERO,
            ))
        };
        s.retain(message("e1"), usize::MAX, usize::MAX, |_| true);
        s.retain(message("e2"), usize::MAX, usize::MAX, |_| true);
        // Replaced at the same instant by one with the same deadline: still purged once.
        s.retain(message("e1"), usize::MAX, usize::MAX, |_| true);
        assert_eq!(s.expiring.len(), 2);
        // Replaced by a message without expiry: no longer purged, and its deadline is gone.
        store(&mut s, "e2", "kept");
        assert_eq!(s.expiring.len(), 1);
        let later = Instant::ZERO + std::time::Duration::from_secs(5);
        assert_eq!(s.purge_expired(Instant::ZERO), 0);
        let freed = s.purge_expired(later);
        assert!(freed > 0);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), s.messages["e2"].message.charged_bytes());
        assert!(s.expiring.is_empty());
    }

    /// Each topic looked at is taken off the budget, and a walk ends in the round where its
    /// range runs out (it does not pause for one more empty round).
    #[test]
    fn a_step_spends_what_it_looked_at_and_ends_with_its_range() {
        let mut s = RetainedStore::default();
        store(&mut s, "a/1", "a1");
        store(&mut s, "a/2", "a2");
        let step = |s: &mut RetainedStore, cursor: &mut RetainedCursor, budget: &mut usize| match s
            .next(cursor, Instant::ZERO, budget)
            .0
        {
            Next::Message(m) => String::from_utf8(m.payload().to_vec()).unwrap(),
            Next::Exhausted => "(end)".into(),
            Next::Paused => "(paused)".into(),
        };
        let mut cursor = s.cursor(ByteStr::new("a/+").unwrap());
        let mut budget = 10;
        assert_eq!(step(&mut s, &mut cursor, &mut budget), "a1");
        assert_eq!(budget, 9);
        assert_eq!(step(&mut s, &mut cursor, &mut budget), "a2");
        assert_eq!(step(&mut s, &mut cursor, &mut budget), "(end)");
        assert_eq!(budget, 8);
        // The budget runs out on the last topic there is: the walk ends, it does not pause.
        let mut cursor = s.cursor(ByteStr::new("a/+/x").unwrap());
        let mut budget = 2;
        assert_eq!(step(&mut s, &mut cursor, &mut budget), "(end)");
        assert_eq!(budget, 0);
        // Nothing at or after the filter's prefix at all.
        let mut cursor = s.cursor(ByteStr::new("b/+").unwrap());
        let mut budget = 10;
        assert_eq!(step(&mut s, &mut cursor, &mut budget), "(end)");
    }

    #[test]
    fn a_store_filled_to_the_byte_accepts_the_last_message_that_fits() {
        let mut s = RetainedStore::default();
        let one = message("t", "x").charged_bytes();
        let fits = s.retain(message("t", "x"), usize::MAX, one, |_| true);
        assert_eq!(fits.0, RetainOutcome::Stored);
        let over = s.retain(message("u", "x"), usize::MAX, 2 * one - 1, |_| true);
        assert_eq!(over, (RetainOutcome::Refused, 0));
        // A replacement that does not grow the store needs no more room.
        let same = s.retain(message("t", "y"), usize::MAX, one, |_| false);
        assert_eq!(same, (RetainOutcome::Stored, 0));
    }

    #[test]
    fn a_walk_that_meets_expired_messages_frees_their_bytes() {
        let mut s = RetainedStore::default();
        let expiring: Properties = vec![crate::codec::Property::MessageExpiryInterval(1)].into();
        let message = Arc::new(Message::new(
            Content::new(ByteStr::new("e").unwrap(), Bytes::from_static(b"x")),
            QoS::AtMostOnce,
            true,
            &expiring,
            ByteStr::default(),
            Instant::ZERO,
        ));
        let bytes = message.charged_bytes();
        s.retain(message, usize::MAX, usize::MAX, |_| true);
        let mut cursor = s.cursor(ByteStr::new("#").unwrap());
        let later = Instant::ZERO + std::time::Duration::from_secs(2);
        let (next, freed) = s.next(&mut cursor, later, &mut 10);
        assert!(matches!(next, Next::Exhausted));
        assert_eq!((freed, s.bytes(), s.len()), (bytes, 0, 0));
    }

    #[test]
    fn bytes_follow_stores_replacements_and_deletes() {
        let mut s = RetainedStore::default();
        store(&mut s, "t", "12345");
        let one = s.bytes();
        assert!(one > 6);
        store(&mut s, "t", "1");
        assert!(s.bytes() < one);
        store(&mut s, "t", "");
        assert_eq!((s.len(), s.bytes()), (0, 0));
        let refused = s.retain(message("u", "x"), usize::MAX, usize::MAX, |_| false);
        assert_eq!(refused, (RetainOutcome::Refused, 0));
    }
}
