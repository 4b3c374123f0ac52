//! What the core asks to be made durable, and what it is given back at a restart.
//!
//! The core never touches a disk (ARCHITECTURE.md). When persistence is on, every input that
//! changes state a restart must keep (a persistent session, its QoS 1/2 messages, the QoS 2
//! ids a client has not released, retained messages) records [`StoreOp`]s in the
//! [`Journal`]. At the end of the input they leave as one `Output::Persist` batch, and the
//! packets that input produced for the clients the batch concerns are held back (see
//! `outbox.rs`) until the driver reports it durable ([`Broker::durable`](super::Broker::durable)):
//! the connection whose packet it was (its PUBACK, PUBREC, SUBACK, CONNACK) and the stored
//! sessions' QoS 2 deliveries and PUBRELs, which must carry the packet ids and states the
//! store has. That is the write-ahead rule: no client is told anything a crash could make
//! untrue. QoS 1 deliveries and entry deletes do not wait (a crash can only make a QoS 1
//! duplicate), clients of clean sessions are not held (a crash ends their sessions anyway),
//! nor is anything after an input that changed nothing durable (QoS 0, PINGREQ), unless the
//! same connection already has held packets, which nothing may overtake. A retained QoS 0
//! message is stored lazily: it goes with the next batch and holds nothing.
//!
//! Deadlines are stored as wall-clock milliseconds ([`WallMs`]): the core's [`Instant`]
//! starts again at zero with each process. The driver says what wall-clock time `Instant`
//! zero is ([`Journal::new`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use std::collections::BTreeSet;

use super::access::Login;
use super::message::Message;
use super::time::Instant;
use super::ConnId;
use crate::codec::{ByteStr, Content, Properties, ProtocolVersion, SubscriptionOptions, Will};
use crate::types::{PacketId, QoS};

/// Milliseconds since the Unix epoch.
pub type WallMs = u64;

/// A message as stored: its expiry is a wall-clock deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
    pub publisher: ByteStr,
    pub expires_at: Option<WallMs>,
}

/// A persistent session's own state: everything but its messages and unreleased QoS 2 ids,
/// which have their own ops (they change at message rate; this changes at SUBSCRIBE rate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub client_id: ByteStr,
    pub version: ProtocolVersion,
    pub expiry_secs: u32,
    /// When the session ends if its client stays away; `None` while the client is connected
    /// (a restart then counts the expiry from the restart).
    pub expires_at: Option<WallMs>,
    /// Filter (with its `$share/...` prefix if shared), options, subscription identifier.
    pub subscriptions: Vec<(ByteStr, SubscriptionOptions, Option<u32>)>,
    /// A will waiting for its delay interval, with when it is due.
    pub pending_will: Option<(Will, WallMs)>,
    /// Whom its client last logged in as: its read rights while it is away.
    pub login: Login,
}

/// Where a stored outgoing message is in its flow to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Waiting for the client's window (or for the client).
    Queued,
    /// Sent with `packet_id`; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(PacketId),
    /// PUBREC received and PUBREL sent: only the id is held until PUBCOMP.
    Released(PacketId),
}

/// A QoS 1/2 message held for a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub message: StoredMessage,
    /// The QoS it is delivered at (the lower of the publish and the subscription).
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    pub state: EntryState,
}

/// One change to durable state. Entries are keyed by client id and a key that orders them
/// within the session (the order messages reached it in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    PutSession(SessionRecord),
    /// The session ended: its record, entries and QoS 2 ids all go.
    DeleteSession {
        client_id: ByteStr,
    },
    PutEntry {
        client_id: ByteStr,
        key: u64,
        entry: EntryRecord,
    },
    SetEntryState {
        client_id: ByteStr,
        key: u64,
        state: EntryState,
    },
    DeleteEntry {
        client_id: ByteStr,
        key: u64,
    },
    /// A QoS 2 message from the client was taken (PUBREC sent): a resend must not be routed
    /// again, until PUBREL.
    PutIncomingId {
        client_id: ByteStr,
        packet_id: PacketId,
    },
    DeleteIncomingId {
        client_id: ByteStr,
        packet_id: PacketId,
    },
    PutRetained(StoredMessage),
    DeleteRetained {
        topic: ByteStr,
    },
}

/// A stored session with its entries (in key order) and its unreleased QoS 2 ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub record: SessionRecord,
    pub entries: Vec<(u64, EntryRecord)>,
    pub incoming_ids: Vec<PacketId>,
}

/// Everything a store holds, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sessions: Vec<StoredSession>,
    pub retained: Vec<StoredMessage>,
}

/// One input's ops, and the connections whose packets wait for them.
#[derive(Debug, PartialEq)]
pub struct Batch {
    pub number: u64,
    pub ops: Vec<StoreOp>,
    pub hold: BTreeSet<ConnId>,
}

/// The ops of the input being handled, and the batch numbering.
#[derive(Debug)]
pub struct Journal {
    enabled: bool,
    /// Wall-clock time of `Instant::ZERO`.
    wall_at_zero: WallMs,
    ops: Vec<StoreOp>,
    /// Whether `ops` has something a reply or delivery must wait for.
    urgent: bool,
    /// The connections whose packets from this input wait for its batch.
    hold: BTreeSet<ConnId>,
    /// The last batch handed out, and the last one reported durable.
    last_batch: u64,
    durable: u64,
    /// The store's disk is full: new persistent work is refused until it has room.
    full: bool,
}

impl Journal {
    /// A journal that records nothing: the broker keeps everything in memory only.
    pub fn disabled() -> Journal {
        Journal {
            enabled: false,
            wall_at_zero: 0,
            ops: Vec::new(),
            urgent: false,
            hold: BTreeSet::new(),
            last_batch: 0,
            durable: 0,
            full: false,
        }
    }

    /// A journal that records; `Instant::ZERO` is `wall_at_zero` on the wall clock.
    pub fn new(wall_at_zero: WallMs) -> Journal {
        Journal {
            enabled: true,
            wall_at_zero,
            ..Journal::disabled()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the store's disk is full (never without a store).
    pub fn full(&self) -> bool {
        self.enabled && self.full
    }

    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    /// Records `op` (nothing when persistence is off); what `conn` is sent by this input waits
    /// for it.
    pub fn record(&mut self, op: StoreOp, conn: Option<ConnId>) {
        if self.enabled {
            self.ops.push(op);
            self.urgent = true;
            self.hold.extend(conn);
        }
    }

    /// Records `op` without holding anything back for it.
    pub fn record_lazily(&mut self, op: StoreOp) {
        if self.enabled {
            self.ops.push(op);
        }
    }

    /// What `conn` is sent by this input waits for its batch, if it has anything urgent (the
    /// connection whose packet the input is: its acknowledgements).
    pub fn hold(&mut self, conn: ConnId) {
        if self.enabled {
            self.hold.insert(conn);
        }
    }

    /// Forgets what was recorded (it is in the store already: the broker was restoring).
    pub fn discard(&mut self) {
        self.ops.clear();
        self.hold.clear();
        self.urgent = false;
    }

    /// Ends the current input: its ops as a numbered batch, if it had any.
    pub fn cut(&mut self) -> Option<Batch> {
        let hold = std::mem::take(&mut self.hold);
        let urgent = std::mem::take(&mut self.urgent);
        if self.ops.is_empty() {
            return None;
        }
        self.last_batch += 1;
        Some(Batch {
            number: self.last_batch,
            ops: std::mem::take(&mut self.ops),
            hold: if urgent { hold } else { BTreeSet::new() },
        })
    }

    /// The driver reports every batch up to `batch` durable. Returns whether that is news.
    pub fn mark_durable(&mut self, batch: u64) -> bool {
        assert!(
            batch <= self.last_batch,
            "batch {batch} reported durable, but only {} were handed out",
            self.last_batch
        );
        if batch <= self.durable {
            return false;
        }
        self.durable = batch;
        true
    }

    /// Batches handed out and not yet durable.
    pub fn pending_batches(&self) -> u64 {
        self.last_batch - self.durable
    }

    pub fn to_wall(&self, at: Instant) -> WallMs {
        let millis = u64::try_from(at.since_epoch().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_zero.saturating_add(millis)
    }

    /// The instant of a stored deadline; one already past is `now`.
    pub fn instant_of(&self, at: WallMs, now: Instant) -> Instant {
        let since_zero = Duration::from_millis(at.saturating_sub(self.wall_at_zero));
        let instant = Instant::ZERO + since_zero;
        if instant < now {
            now
        } else {
            instant
        }
    }

    pub fn stored_message(&self, message: &Message) -> StoredMessage {
        StoredMessage {
            topic: message.content.to_topic(),
            payload: message.content.to_payload(),
            qos: message.qos,
            retain: message.retain,
            properties: message.properties.clone(),
            publisher: message.publisher.clone(),
            expires_at: message.expires_at.map(|at| self.to_wall(at)),
        }
    }

    pub fn message(&self, stored: StoredMessage, now: Instant) -> Arc<Message> {
        Arc::new(Message {
            content: Content::new(stored.topic, stored.payload),
            qos: stored.qos,
            retain: stored.retain,
            properties: stored.properties,
            publisher: stored.publisher,
            expires_at: stored.expires_at.map(|at| self.instant_of(at, now)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_numbered_and_only_inputs_with_ops_make_one() {
        let mut journal = Journal::new(1_000);
        assert_eq!(journal.cut(), None);
        journal.hold(ConnId(7));
        let op = || StoreOp::DeleteRetained {
            topic: ByteStr::new("t").unwrap(),
        };
        journal.record(op(), Some(ConnId(3)));
        let batch = journal.cut().unwrap();
        assert_eq!((batch.number, batch.ops.len()), (1, 1));
        assert_eq!(batch.hold, [ConnId(3), ConnId(7)].into());
        assert_eq!(journal.cut(), None);
        // Lazy ops make a batch that holds nothing back.
        journal.hold(ConnId(7));
        journal.record_lazily(op());
        let batch = journal.cut().unwrap();
        assert_eq!((batch.number, batch.hold.len()), (2, 0));
        assert_eq!(journal.pending_batches(), 2);
        assert!(journal.mark_durable(1));
        assert_eq!(journal.pending_batches(), 1);
        assert!(journal.mark_durable(2));
        assert!(!journal.mark_durable(1));
        assert_eq!(journal.pending_batches(), 0);
    }

    #[test]
    fn a_disabled_journal_records_nothing() {
        let mut journal = Journal::disabled();
        journal.record(
            StoreOp::DeleteRetained {
                topic: ByteStr::new("t").unwrap(),
            },
            None,
        );
        assert_eq!(journal.cut(), None);
    }

    #[test]
    #[should_panic(expected = "reported durable")]
    fn a_batch_never_handed_out_cannot_be_durable() {
        Journal::new(0).mark_durable(1);
    }

    #[test]
    fn deadlines_go_to_the_wall_clock_and_back() {
        let journal = Journal::new(1_000_000);
        let at = Instant::ZERO + Duration::from_millis(2_500);
        assert_eq!(journal.to_wall(at), 1_002_500);
        // After a restart, a new journal with a later wall clock at zero.
        let later = Journal::new(1_002_000);
        assert_eq!(
            later.instant_of(1_002_500, Instant::ZERO),
            Instant::ZERO + Duration::from_millis(500)
        );
        // A deadline that passed while the broker was down is due at once.
        let now = Instant::ZERO + Duration::from_secs(1);
        assert_eq!(later.instant_of(1_000_000, now), now);
    }
}
