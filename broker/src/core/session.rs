//! A session: what the broker keeps for one client id across connections.
//!
//! Subscriptions, the in-flight window of unacknowledged QoS 1/2 messages to the client, the
//! queue of messages waiting for that window (or for the client to come back), and the QoS 2
//! packet ids the client has published but not yet released. Every queue here is bounded by
//! `Limits`; what overflows is dropped and counted, never buffered without bound.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::access::Login;
use super::alias::{AliasUse, OutboundAliases};
use super::compact_map::CompactMap;
use super::durable::{EntryRecord, EntryState, Journal, SessionRecord, StoreOp};
use super::message::Message;
use super::outbox::Outbox;
use super::retained::RetainedCursor;
use super::shared::GroupId;
use super::stats::Stats;
use super::subscription_tree::Subscription;
use super::time::Instant;
use super::ConnId;
use crate::codec::{
    encoded_len, Ack, ByteStr, Packet, Properties, Property, ProtocolVersion, Publish, ReasonCode,
    SubscriptionOptions, Will,
};
use crate::limits::{Limits, QueueOverflow};
use crate::types::{PacketId, QoS};

/// The most a Topic Alias property adds to a PUBLISH: identifier and value (3 bytes) plus one
/// more byte each for a longer property length and a longer remaining length.
const ALIAS_PROPERTY_BYTES_MAX: usize = 5;

/// What an outgoing QoS 1/2 message waits for.
// The variants are the packet names; the shared prefix is the spec's, not redundancy.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    PubAck,
    PubRec,
    /// PUBREL sent; the message is delivered, only the id is still held.
    PubComp,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    /// Orders the session's messages in the store (see `durable.rs`).
    key: u64,
    pub packet_id: PacketId,
    pub state: Awaiting,
    /// The PUBLISH as first sent, resent with DUP set when the session resumes.
    pub publish: Publish,
    /// The message and how it was sent, for the store and for a hand-back.
    item: Queued,
    /// Not sent on the current connection yet: a resumed session resends no more than the new
    /// connection's window allows, the rest as acknowledgements free it.
    unsent: bool,
    /// What holding it costs (`Message::charged_bytes`), counted in `Stats::inflight_bytes`.
    charged: usize,
}

/// A message waiting to be sent to this session.
#[derive(Debug, Clone)]
pub struct Queued {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    pub enqueued_at: Instant,
    /// The shared-subscription group the message was given to this session by, if any: it
    /// can be handed to another member if this client goes away before acknowledging it.
    pub group: Option<GroupId>,
}

/// A shared-subscription message a leaving member hands back to its group.
#[derive(Debug)]
pub struct SharedHandBack {
    pub group: GroupId,
    pub message: Arc<Message>,
    pub enqueued_at: Instant,
    /// It was still queued (not sent): in the delivery account it is moved, or dropped.
    pub queued: bool,
}

/// What the current connection told us about how to send to it.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryParams {
    pub version: ProtocolVersion,
    /// In-flight window: our limit, lowered by the client's v5 Receive Maximum.
    pub inflight_max: u16,
    /// The client's v5 Maximum Packet Size.
    pub packet_bytes_max: Option<u32>,
    /// The client is another broker's bridge (the 3.x bridge bit): as Mosquitto and EMQX do,
    /// its subscriptions are made No Local and Retain As Published (see `handle_subscribe`).
    pub bridge: bool,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteStr,
    /// Whom its client last logged in as: its read rights (the ACL) are judged by this, also
    /// while it is away.
    pub login: Login,
    pub conn: Option<ConnId>,
    pub params: DeliveryParams,
    /// Seconds the session outlives its connection: 0 ends it with the connection,
    /// `u32::MAX` never expires.
    expiry_secs: u32,
    /// When the disconnected session ends, if it does (never while connected).
    expires_at: Option<Instant>,
    /// Its subscriptions by filter (at most `subscriptions_per_session_max`: `subscribe.rs`
    /// refuses more); the subscription tree and shared groups mirror them.
    subscriptions: CompactMap<ByteStr, Subscription>,
    /// Its messages on their way and its QoS 2 ids: absent while all of that is empty.
    flow: Option<Box<Flow>>,
    /// The next store key (keys grow with each message the session takes).
    next_key: u64,
    /// The session is in the store: every change to it and to its QoS 1/2 messages is
    /// journalled (see [`Session::save`]).
    stored: bool,
    /// Planted bug `TakeoverDropsInflight` (planted.rs): skip the next resend.
    #[cfg(feature = "planted-bugs")]
    skip_resends: bool,
    last_packet_id: u16,
    /// A will waiting for its delay interval (v5) after the connection ended.
    /// Boxed: rare, and this is held for every session.
    pending_will: Option<Box<(Will, Instant)>>,
    /// Broker-to-client topic aliases of the current connection.
    aliases: OutboundAliases,
    /// The millisecond of this session's retained scan share, and what is left of it.
    retained_scan: (Option<u64>, usize),
}

/// What a session holds only while messages are on their way to or from its client. Most
/// sessions, most of the time, have none of it, so it is a box that exists only while some
/// of it is not empty (an idle session is 128 bytes smaller, issue 15). Read through
/// [`Session::flow`] (an empty one when absent); changed through `Session::flow_mut`, which
/// makes it; given back by `Session::settle_flow` after every change that can empty it.
#[derive(Debug)]
struct Flow {
    /// The in-flight window; `inflight_bytes` is what its entries are charged.
    inflight: VecDeque<Inflight>,
    /// Messages waiting for the window, each with its store key; `queued_bytes` is what they
    /// are charged. Both sums are mirrored in `Stats`, so only this file changes them.
    queue: VecDeque<(u64, Queued)>,
    queued_bytes: usize,
    /// Bytes of the in-flight entries, as charged.
    inflight_bytes: usize,
    /// Some in-flight entry may still be unsent on this connection (set on resume): spares
    /// every acknowledgement a scan of the window once the resends are out.
    resend_pending: bool,
    /// Inbound QoS 2 packet ids received but not yet released by PUBREL (bounded by the
    /// Receive Maximum a v5 client was told, by the 16-bit id space for 3.x: `publish.rs`).
    awaiting_pubrel: BTreeSet<PacketId>,
    /// Walks through the retained messages of new subscriptions, fed in slices as the client
    /// takes them (`Broker::feed_retained`), with what each subscription asked for. At most
    /// one per filter; no storage once the last one ends.
    retained_walks: VecDeque<PendingRetained>,
}

impl Flow {
    const EMPTY: Flow = Flow {
        inflight: VecDeque::new(),
        queue: VecDeque::new(),
        queued_bytes: 0,
        inflight_bytes: 0,
        resend_pending: false,
        awaiting_pubrel: BTreeSet::new(),
        retained_walks: VecDeque::new(),
    };

    fn is_empty(&self) -> bool {
        let empty = self.inflight.is_empty()
            && self.queue.is_empty()
            && self.awaiting_pubrel.is_empty()
            && self.retained_walks.is_empty();
        debug_assert!(
            !empty || (self.queued_bytes == 0 && self.inflight_bytes == 0),
            "bytes charged for messages no longer held"
        );
        empty
    }
}

/// What [`Session::flow`] shows of a session that has none.
static NO_FLOW: Flow = Flow::EMPTY;

/// A new subscription's retained messages still to send.
#[derive(Debug)]
pub struct PendingRetained {
    pub cursor: RetainedCursor,
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

impl Session {
    pub fn new(
        client_id: ByteStr,
        login: Login,
        params: DeliveryParams,
        expiry_secs: u32,
    ) -> Session {
        Session {
            login,
            client_id,
            conn: None,
            params,
            expiry_secs,
            expires_at: None,
            subscriptions: CompactMap::default(),
            flow: None,
            next_key: 0,
            stored: false,
            #[cfg(feature = "planted-bugs")]
            skip_resends: false,
            last_packet_id: 0,
            pending_will: None,
            aliases: OutboundAliases::default(),
            retained_scan: (None, 0),
        }
    }

    /// The session gets a connection: how to send to it, whom its client logged in as, its
    /// expiry, fresh topic aliases (spec: [MQTT-3.3.2-7]). It no longer expires, and a will
    /// waiting for its delay is not sent (spec: [MQTT-3.1.3-9], v5).
    pub fn attach(
        &mut self,
        conn: ConnId,
        params: DeliveryParams,
        login: Login,
        expiry_secs: u32,
        aliases: OutboundAliases,
    ) {
        // A takeover closes the old connection (and detaches it) before the new one attaches.
        debug_assert!(
            self.conn.is_none(),
            "a session has one connection at a time"
        );
        self.conn = Some(conn);
        self.params = params;
        self.login = login;
        self.expiry_secs = expiry_secs;
        self.expires_at = None;
        self.pending_will = None;
        self.aliases = aliases;
    }

    /// Its messages on their way and its QoS 2 ids (all empty if it has none).
    fn flow(&self) -> &Flow {
        self.flow.as_deref().unwrap_or(&NO_FLOW)
    }

    /// The same, to change: made if the session had none.
    fn flow_mut(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(|| Box::new(Flow::EMPTY))
    }

    /// Gives the flow's storage back once all of it is empty.
    fn settle_flow(&mut self) {
        if self.flow.as_ref().is_some_and(|flow| flow.is_empty()) {
            self.flow = None;
        }
    }

    /// Whether the session holds anything on its way (tests check it is given back).
    #[cfg(test)]
    pub fn has_flow(&self) -> bool {
        self.flow.is_some()
    }

    /// True while a QoS 2 message with this id waits for its PUBREL.
    pub fn awaits_pubrel(&self, packet_id: PacketId) -> bool {
        self.flow().awaiting_pubrel.contains(&packet_id)
    }

    pub fn awaiting_pubrel_count(&self) -> usize {
        self.flow().awaiting_pubrel.len()
    }

    /// A QoS 2 message was taken: its id waits for the PUBREL.
    pub fn await_pubrel(&mut self, packet_id: PacketId) {
        let fresh = self.flow_mut().awaiting_pubrel.insert(packet_id);
        debug_assert!(
            fresh,
            "a QoS 2 id taken twice (the caller checks `awaits_pubrel`)"
        );
    }

    /// The PUBREL came: false if the id was not waiting.
    pub fn release_pubrel(&mut self, packet_id: PacketId) -> bool {
        let Some(flow) = self.flow.as_mut() else {
            return false;
        };
        let released = flow.awaiting_pubrel.remove(&packet_id);
        self.settle_flow();
        released
    }

    /// Ids read back from the store (`Broker::restore`).
    pub fn restore_awaiting_pubrel(&mut self, ids: impl IntoIterator<Item = PacketId>) {
        self.flow_mut().awaiting_pubrel.extend(ids);
        self.settle_flow();
    }

    /// Starts a walk through the retained messages for a subscription; a walk for the same
    /// filter restarts (a repeated SUBSCRIBE must not run two).
    pub fn start_retained_walk(&mut self, walk: PendingRetained) {
        self.stop_retained_walk(walk.cursor.filter());
        self.flow_mut().retained_walks.push_back(walk);
        debug_assert!(
            self.flow().retained_walks.len() <= self.subscriptions.len(),
            "at most one walk per subscribed filter"
        );
    }

    /// Stops the walk for `filter`, if one runs (UNSUBSCRIBE).
    pub fn stop_retained_walk(&mut self, filter: &str) {
        if let Some(flow) = self.flow.as_mut() {
            flow.retained_walks.retain(|w| w.cursor.filter() != filter);
        }
        self.release_walks_if_done();
    }

    /// The walk to feed next, if any.
    pub fn current_retained_walk(&mut self) -> Option<&mut PendingRetained> {
        self.flow.as_mut()?.retained_walks.front_mut()
    }

    /// The current walk went through every retained message.
    pub fn finish_retained_walk(&mut self) {
        if let Some(flow) = self.flow.as_mut() {
            flow.retained_walks.pop_front();
        }
        self.release_walks_if_done();
    }

    pub fn retained_walk_count(&self) -> usize {
        self.flow().retained_walks.len()
    }

    fn release_walks_if_done(&mut self) {
        if let Some(flow) = self.flow.as_mut() {
            if flow.retained_walks.is_empty() && flow.retained_walks.capacity() > 0 {
                // Its storage too: most sessions walk once, at their first SUBSCRIBE.
                flow.retained_walks = VecDeque::new();
            }
        }
        self.settle_flow();
    }

    /// The messages waiting for the window, oldest first (tests look inside).
    #[cfg(test)]
    pub fn queued(&self) -> impl Iterator<Item = &Queued> {
        self.flow().queue.iter().map(|(_, item)| item)
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn is_subscribed(&self, filter: &ByteStr) -> bool {
        self.subscriptions.contains_key(filter)
    }

    /// Adds or replaces (spec: [MQTT-3.8.4-3]) a subscription: true if it replaced one.
    pub fn subscribe(&mut self, filter: ByteStr, subscription: Subscription) -> bool {
        self.subscriptions.insert(filter, subscription).is_some()
    }

    /// True if the session had the filter.
    pub fn unsubscribe(&mut self, filter: &ByteStr) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    pub fn filters(&self) -> impl Iterator<Item = &ByteStr> {
        self.subscriptions.keys()
    }

    /// Clears No Local and Retain As Published, which a plain 3.x client cannot have; the
    /// subscriptions changed, for the tree.
    pub fn drop_v5_only_options(&mut self) -> Vec<(ByteStr, Subscription)> {
        let mut changed = Vec::new();
        for (filter, subscription) in self.subscriptions.iter_mut() {
            let options = &mut subscription.options;
            if options.no_local || options.retain_as_published {
                options.no_local = false;
                options.retain_as_published = false;
                changed.push((filter.clone(), *subscription));
            }
        }
        changed
    }

    /// The will held for its delay, taken whether due or not (the session ends).
    pub fn take_held_will(&mut self) -> Option<Will> {
        self.pending_will.take().map(|held| held.0)
    }

    /// Seconds the session outlives its connection (0: none; `u32::MAX`: forever).
    pub fn expiry_secs(&self) -> u32 {
        self.expiry_secs
    }

    /// True once a session without a connection has passed its expiry.
    pub fn has_expired(&self, now: Instant) -> bool {
        self.conn.is_none() && self.expires_at.is_some_and(|at| at <= now)
    }

    /// The connection ended; the session stays (or is ended by the caller).
    pub fn detach(&mut self) {
        self.conn = None;
    }

    /// The session now ends at `at` unless a connection comes first.
    pub fn expire_at(&mut self, at: Instant) {
        debug_assert!(self.conn.is_none(), "a connected session does not expire");
        self.expires_at = Some(at);
    }

    /// A v5 DISCONNECT changed the expiry interval (the caller checks what it may be).
    pub fn set_expiry_secs(&mut self, secs: u32) {
        self.expiry_secs = secs;
    }

    /// Holds the will of the ended connection until `at` (its v5 delay interval).
    pub fn hold_will(&mut self, will: Will, at: Instant) {
        self.pending_will = Some(Box::new((will, at)));
    }

    /// The held will, once its delay has passed while the session has no connection.
    pub fn take_due_will(&mut self, now: Instant) -> Option<Will> {
        let due = self.pending_will.as_ref().is_some_and(|held| held.1 <= now);
        if !due || self.conn.is_some() {
            return None;
        }
        self.pending_will.take().map(|held| held.0)
    }

    /// What is left of this session's share (`share_per_ms`) of the retained scan budget in
    /// `millisecond`; refilled when the millisecond changes.
    pub fn retained_scan_share(&mut self, millisecond: u64, share_per_ms: usize) -> &mut usize {
        if self.retained_scan.0 != Some(millisecond) {
            self.retained_scan = (Some(millisecond), share_per_ms);
        }
        &mut self.retained_scan.1
    }

    /// Bytes queued (as [`Message::charged_bytes`] counts them).
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.flow().queued_bytes
    }

    /// Deliveries waiting in the queue.
    pub fn queued_len(&self) -> usize {
        self.flow().queue.len()
    }

    /// Deliveries sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.flow().inflight.len()
    }

    /// The session is ending: its queued bytes no longer count against the memory limit,
    /// and what was still queued is discarded (counted). (Its store record goes with
    /// [`Session::unsave`].)
    pub fn release(&mut self, stats: &mut Stats) {
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        stats.messages_discarded += flow.queue.len() as u64;
        stats.queued_bytes -= flow.queued_bytes;
        stats.inflight_bytes -= flow.inflight_bytes;
        flow.queued_bytes = 0;
        flow.inflight_bytes = 0;
        flow.queue.clear();
        flow.inflight.clear();
        self.settle_flow();
    }

    /// Bytes held in flight (as charged).
    #[cfg(test)]
    pub fn inflight_bytes(&self) -> usize {
        self.flow().inflight_bytes
    }

    /// Takes the in-flight entry at `index` out, with its bytes and its store entry.
    fn remove_inflight(
        &mut self,
        index: usize,
        stats: &mut Stats,
        journal: &mut Journal,
    ) -> Option<Inflight> {
        let flow = self.flow.as_mut()?;
        let entry = flow.inflight.remove(index)?;
        flow.inflight_bytes -= entry.charged;
        stats.inflight_bytes -= entry.charged;
        self.journal_delete(entry.key, journal);
        self.settle_flow();
        Some(entry)
    }

    /// A packet id not used by any in-flight message (spec: [MQTT-2.3.1-4] 3.1.1,
    /// [MQTT-2.2.1-4] 5.0). The caller guarantees the window is not full, and the window is at
    /// most 65535, so a free id exists.
    fn allocate_packet_id(&mut self) -> PacketId {
        assert!(
            self.flow().inflight.len() < usize::from(u16::MAX),
            "in-flight window exceeds the id space"
        );
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.last_packet_id) else {
                continue;
            };
            if !self
                .flow()
                .inflight
                .iter()
                .any(|entry| entry.packet_id == id)
            {
                return id;
            }
        }
    }

    /// Hands a message to this session: sent now if connected and the window allows, queued
    /// otherwise (within the limits), dropped and counted if it cannot be kept.
    pub fn deliver(
        &mut self,
        item: Queued,
        now: Instant,
        limits: &Limits,
        out: &mut Outbox,
        stats: &mut Stats,
        journal: &mut Journal,
    ) {
        stats.deliveries += 1;
        let key = self.next_key;
        self.next_key += 1;
        if item.qos == QoS::AtMostOnce {
            if let Some(conn) = self.conn {
                if !out.has_room_for_delivery(conn) {
                    // The client reads slower than messages come: QoS 0 may be dropped, and is,
                    // before any topic alias is chosen for it.
                    stats.qos0_dropped_slow_consumer += 1;
                    return;
                }
                self.send_publish(conn, (key, item), None, now, out, stats, journal);
                return;
            }
            if !limits.queue_qos0 {
                stats.qos0_dropped_offline += 1;
                return;
            }
        }
        if let Some(conn) = self.ready_for_new(out) {
            // Straight into the window: nothing is held beyond the in-flight entry, so the
            // memory budget (which bounds what waits) has no say.
            let packet_id = self.allocate_packet_id();
            self.journal_put(key, &item, EntryState::Sent(packet_id), journal);
            self.send_publish(conn, (key, item), Some(packet_id), now, out, stats, journal);
            return;
        }
        if self.enqueue((key, item), limits, stats, journal) {
            self.send_queued(now, limits, out, stats, journal);
        }
    }

    /// The connection, if a new message (a QoS 1/2 delivery, a retained message from a
    /// cursor) can be sent on it at once: nothing waits ahead of it, the window and the
    /// outbound queue have room.
    pub fn ready_for_new(&self, out: &Outbox) -> Option<ConnId> {
        let conn = self.conn?;
        let flow = self.flow();
        let ready = flow.queue.is_empty()
            && flow.inflight.len() < usize::from(self.params.inflight_max)
            && out.has_room_for_delivery(conn);
        ready.then_some(conn)
    }

    /// Queues the message if the limits let it; returns whether it was queued.
    fn enqueue(
        &mut self,
        (key, item): (u64, Queued),
        limits: &Limits,
        stats: &mut Stats,
        journal: &mut Journal,
    ) -> bool {
        let bytes = item.message.charged_bytes();
        if stats.held_bytes() + bytes > limits.memory_bytes_max {
            // The broker-wide budget is spent: nothing more is held, whatever the session's
            // own room (publishers are refused before routing; this catches fan-out).
            stats.messages_dropped_memory += 1;
            return false;
        }
        let full = |s: &Session| {
            s.flow().queue.len() >= limits.queued_messages_max
                || s.flow().queued_bytes + bytes > limits.queued_bytes_max
        };
        if full(self) {
            match limits.queue_overflow {
                QueueOverflow::DropNewest => {
                    stats.messages_dropped_queue_full += 1;
                    return false;
                }
                QueueOverflow::DropOldest => {
                    while full(self) {
                        let Some(old) = self.flow.as_mut().and_then(|f| f.queue.pop_front()) else {
                            break;
                        };
                        self.unqueued(&old, stats, journal);
                        stats.messages_dropped_queue_full += 1;
                    }
                    if full(self) {
                        // The message alone is larger than the byte limit.
                        stats.messages_dropped_queue_full += 1;
                        self.settle_flow();
                        return false;
                    }
                }
            }
        }
        stats.queued_bytes += bytes;
        self.journal_put(key, &item, EntryState::Queued, journal);
        let flow = self.flow_mut();
        flow.queued_bytes += bytes;
        flow.queue.push_back((key, item));
        true
    }

    /// Takes a message that left the queue off the byte counts and out of the store.
    fn unqueued(&mut self, (key, item): &(u64, Queued), stats: &mut Stats, journal: &mut Journal) {
        self.uncount(item, stats);
        if item.qos != QoS::AtMostOnce {
            self.journal_delete(*key, journal);
        }
    }

    /// Takes a message that left the queue off the byte counts (its store entry stays: it is
    /// being sent).
    fn uncount(&mut self, item: &Queued, stats: &mut Stats) {
        let bytes = item.message.charged_bytes();
        let flow = self
            .flow
            .as_mut()
            .expect("a message from the queue has its flow");
        flow.queued_bytes -= bytes;
        stats.queued_bytes -= bytes;
    }

    /// Sends what the window and the outbound queue have room for while the client is
    /// connected: first in-flight messages not yet sent on this connection (after a resume),
    /// then queued messages. Expired and over-age messages are dropped on the way. If the
    /// outbound queue is what stops it, the driver is asked to say when it has room.
    pub fn send_queued(
        &mut self,
        now: Instant,
        limits: &Limits,
        out: &mut Outbox,
        stats: &mut Stats,
        journal: &mut Journal,
    ) {
        let Some(conn) = self.conn else { return };
        let window = usize::from(self.params.inflight_max);
        self.resend_unsent(conn, window, out, stats);
        while self.flow().inflight.len() < window {
            if self.flow().queue.is_empty() {
                break;
            }
            if !out.has_room_for_delivery(conn) {
                out.request_wake(conn);
                break;
            }
            let entry = self.flow_mut().queue.pop_front().expect("checked above");
            if now.saturating_since(entry.1.enqueued_at) > limits.queued_message_age_max {
                self.unqueued(&entry, stats, journal);
                stats.messages_dropped_expired += 1;
                continue;
            }
            let (key, item) = entry;
            self.uncount(&item, stats);
            let packet_id = (item.qos != QoS::AtMostOnce).then(|| self.allocate_packet_id());
            if let Some(packet_id) = packet_id {
                self.journal_state(key, item.qos, EntryState::Sent(packet_id), journal);
            }
            self.send_publish(conn, (key, item), packet_id, now, out, stats, journal);
        }
        self.settle_flow();
    }

    /// Sends one message. With a packet id it enters the window (its store entry, if any,
    /// already says so); one that has expired or is too large for the client is dropped and
    /// its store entry deleted.
    // The arguments are the message and the five things sending touches.
    #[allow(clippy::too_many_arguments)]
    fn send_publish(
        &mut self,
        conn: ConnId,
        (key, item): (u64, Queued),
        packet_id: Option<PacketId>,
        now: Instant,
        out: &mut Outbox,
        stats: &mut Stats,
        journal: &mut Journal,
    ) {
        let message = &item.message;
        if message.is_expired(now) {
            // spec: [MQTT-3.3.2-5] (v5)
            stats.messages_dropped_expired += 1;
            if packet_id.is_some() {
                self.journal_delete(key, journal);
            }
            return;
        }
        let publish = self.first_publish(&item, packet_id, now);
        let packet = Packet::Publish(publish);
        if let Some(max) = self.params.packet_bytes_max {
            // Room for a topic alias property (and the length bytes it may add) is counted
            // before an alias is chosen, so a dropped message never leaves the client without
            // a mapping the broker thinks it has.
            let alias_room = if self.aliases.enabled() {
                ALIAS_PROPERTY_BYTES_MAX
            } else {
                0
            };
            let fits = encoded_len(&packet, self.params.version)
                .is_ok_and(|len| len + alias_room <= max as usize);
            if !fits {
                // Discarded as if sent (spec: [MQTT-3.1.2-24] [MQTT-3.1.2-25], v5).
                stats.messages_dropped_too_large += 1;
                if packet_id.is_some() {
                    self.journal_delete(key, journal);
                }
                return;
            }
        }
        let Packet::Publish(mut publish) = packet else {
            unreachable!()
        };
        if let Some(packet_id) = packet_id {
            // Stored with its topic: a resend goes on a new connection, with no aliases yet.
            self.push_inflight(key, item, packet_id, publish.clone(), stats);
        }
        match self.aliases.assign(publish.topic()) {
            Some(AliasUse::Known(alias)) => {
                publish.content = publish.content.without_topic();
                publish.properties.0.insert(0, Property::TopicAlias(alias));
            }
            Some(AliasUse::New(alias)) => {
                publish.properties.0.insert(0, Property::TopicAlias(alias))
            }
            None => {}
        }
        stats.messages_sent.count(publish.qos);
        stats.publish_bytes_sent += publish.payload().len() as u64;
        out.send(conn, Packet::Publish(publish));
    }

    /// The PUBLISH that first carries `item` to this client (before any topic alias).
    fn first_publish(&self, item: &Queued, packet_id: Option<PacketId>, now: Instant) -> Publish {
        let message = &item.message;
        let properties = if self.params.version.is_v5() {
            message.outgoing_properties(now, &item.subscription_ids)
        } else {
            Properties::new()
        };
        Publish {
            dup: false,
            qos: item.qos,
            retain: item.retain,
            content: message.content.clone(),
            packet_id,
            properties,
        }
    }

    /// Puts a sent message into the window, waiting for PUBACK or PUBREC.
    fn push_inflight(
        &mut self,
        key: u64,
        item: Queued,
        packet_id: PacketId,
        publish: Publish,
        stats: &mut Stats,
    ) {
        let state = if item.qos == QoS::AtLeastOnce {
            Awaiting::PubAck
        } else {
            Awaiting::PubRec
        };
        let charged = item.message.charged_bytes();
        stats.inflight_bytes += charged;
        let flow = self.flow_mut();
        flow.inflight_bytes += charged;
        flow.inflight.push_back(Inflight {
            key,
            packet_id,
            state,
            publish,
            item,
            unsent: false,
            charged,
        });
    }

    /// Resends the unacknowledged PUBLISHes (DUP set) and PUBRELs in their original order, no
    /// more than the new connection's window (its Receive Maximum) allows, then fills the
    /// window (spec: [MQTT-4.4.0-1] 3.1.1, [MQTT-4.4.0-1] 5.0).
    pub fn resume(
        &mut self,
        now: Instant,
        limits: &Limits,
        out: &mut Outbox,
        stats: &mut Stats,
        journal: &mut Journal,
    ) {
        #[cfg(feature = "planted-bugs")]
        let skip = std::mem::take(&mut self.skip_resends);
        #[cfg(not(feature = "planted-bugs"))]
        let skip = false;
        if let Some(flow) = self.flow.as_mut().filter(|_| !skip) {
            for entry in &mut flow.inflight {
                entry.unsent = true;
            }
            flow.resend_pending = !flow.inflight.is_empty();
        }
        self.send_queued(now, limits, out, stats, journal);
    }

    /// Sends in-flight entries that the current connection has not seen, in order, while fewer
    /// than `window` are outstanding on it and the outbound queue has room.
    fn resend_unsent(&mut self, conn: ConnId, window: usize, out: &mut Outbox, stats: &mut Stats) {
        let v5 = self.params.version.is_v5();
        let Some(flow) = self.flow.as_mut().filter(|flow| flow.resend_pending) else {
            return;
        };
        let outstanding = flow.inflight.iter().filter(|e| !e.unsent).count();
        let unsent = flow.inflight.iter_mut().filter(|e| e.unsent);
        for entry in unsent.take(window.saturating_sub(outstanding)) {
            if !out.has_room_for_delivery(conn) {
                out.request_wake(conn);
                break;
            }
            let packet = match entry.state {
                Awaiting::PubAck | Awaiting::PubRec => {
                    let mut publish = entry.publish.clone();
                    publish.dup = true;
                    if !v5 {
                        publish.properties = Properties::new();
                    }
                    stats.messages_resent += 1;
                    Packet::Publish(publish)
                }
                Awaiting::PubComp => Packet::PubRel(Ack::new(entry.packet_id)),
            };
            out.send(conn, packet);
            entry.unsent = false;
        }
        flow.resend_pending = flow.inflight.iter().any(|e| e.unsent);
    }

    /// Planted bug `TakeoverDropsInflight`: the next `resume` leaves the in-flight messages
    /// marked as sent (to a connection that is gone), so they are never resent.
    #[cfg(feature = "planted-bugs")]
    pub fn forget_resends(&mut self) {
        self.skip_resends = true;
    }

    /// The shared-subscription groups and topics of the messages this session holds.
    pub fn shared_topics(&self) -> BTreeSet<(GroupId, ByteStr)> {
        let flow = self.flow();
        let held = flow.inflight.iter().map(|entry| &entry.item);
        let held = held.chain(flow.queue.iter().map(|(_, item)| item));
        held.filter_map(|item| Some((item.group?, item.message.content.to_topic())))
            .collect()
    }

    /// Takes out the messages given to this session by a shared subscription that it has not
    /// been sent yet, or (QoS 1) has not acknowledged, for the groups where `can_move` says
    /// another member can have them, with the instant each was queued (`now` for those already
    /// sent). QoS 2 messages already sent stay: the spec has them completed with this member.
    pub fn take_shared(
        &mut self,
        now: Instant,
        can_move: impl Fn(GroupId, &ByteStr) -> bool,
        stats: &mut Stats,
        journal: &mut Journal,
    ) -> Vec<SharedHandBack> {
        let mut taken = Vec::new();
        let Some(flow) = self.flow.as_mut() else {
            return taken;
        };
        let mut freed = 0;
        let mut gone = Vec::new();
        flow.inflight.retain(|entry| match entry.item.group {
            // A QoS 2 delivery that has begun stays with its member, even if its session
            // ends (spec: [MQTT-4.8.2-4] [MQTT-4.8.2-5], v5); QoS 1 may be sent again elsewhere.
            Some(group)
                if entry.state == Awaiting::PubAck
                    && can_move(group, &entry.item.message.content.to_topic()) =>
            {
                taken.push(SharedHandBack {
                    group,
                    message: entry.item.message.clone(),
                    enqueued_at: now,
                    queued: false,
                });
                freed += entry.charged;
                gone.push(entry.key);
                false
            }
            _ => true,
        });
        flow.inflight_bytes -= freed;
        stats.inflight_bytes -= freed;
        let queue = std::mem::take(&mut flow.queue);
        for key in gone {
            self.journal_delete(key, journal);
        }
        let mut kept = VecDeque::with_capacity(queue.len());
        for entry in queue {
            match entry.1.group {
                Some(group) if can_move(group, &entry.1.message.content.to_topic()) => {
                    self.unqueued(&entry, stats, journal);
                    let (_, item) = entry;
                    taken.push(SharedHandBack {
                        group,
                        message: item.message,
                        enqueued_at: item.enqueued_at,
                        queued: true,
                    });
                }
                _ => kept.push_back(entry),
            }
        }
        self.flow_mut().queue = kept;
        self.settle_flow();
        taken
    }

    fn position(&self, packet_id: PacketId, state: Awaiting) -> Option<usize> {
        self.flow()
            .inflight
            .iter()
            .position(|e| e.packet_id == packet_id && e.state == state)
    }

    /// PUBACK from the client: the QoS 1 delivery is complete. Returns false for an unknown id.
    pub fn puback(
        &mut self,
        packet_id: PacketId,
        stats: &mut Stats,
        journal: &mut Journal,
    ) -> bool {
        match self.position(packet_id, Awaiting::PubAck) {
            Some(index) => self.remove_inflight(index, stats, journal).is_some(),
            None => false,
        }
    }

    /// PUBREC from the client. Returns the PUBREL to send, if any. A v5 PUBREC with an error
    /// code ends the flow (no PUBREL).
    pub fn pubrec(
        &mut self,
        packet_id: PacketId,
        reason: ReasonCode,
        stats: &mut Stats,
        journal: &mut Journal,
    ) -> Option<Packet> {
        let index = self.position(packet_id, Awaiting::PubRec);
        match index {
            Some(index) if reason.is_error() => {
                self.remove_inflight(index, stats, journal);
                None
            }
            Some(index) => {
                let entry = &mut self.flow_mut().inflight[index];
                entry.state = Awaiting::PubComp;
                // Acknowledged, so seen on this connection: not to be resent as a PUBLISH.
                entry.unsent = false;
                let key = entry.key;
                let qos = QoS::ExactlyOnce;
                self.journal_state(key, qos, EntryState::Released(packet_id), journal);
                Some(Packet::PubRel(Ack::new(packet_id)))
            }
            // A PUBREC we already answered (the client resent it after a reconnect).
            None if self.position(packet_id, Awaiting::PubComp).is_some() => {
                Some(Packet::PubRel(Ack::new(packet_id)))
            }
            None => {
                let reason = if self.params.version.is_v5() {
                    ReasonCode::PacketIdentifierNotFound
                } else {
                    ReasonCode::Success
                };
                Some(Packet::PubRel(Ack {
                    packet_id,
                    reason_code: reason,
                    properties: Properties::new(),
                }))
            }
        }
    }

    /// PUBCOMP from the client: the QoS 2 delivery is complete.
    pub fn pubcomp(
        &mut self,
        packet_id: PacketId,
        stats: &mut Stats,
        journal: &mut Journal,
    ) -> bool {
        match self.position(packet_id, Awaiting::PubComp) {
            Some(index) => self.remove_inflight(index, stats, journal).is_some(),
            None => false,
        }
    }

    // ---- The store (see `durable.rs`) ----

    /// Whether the session outlives its connection, so a restart must keep it.
    pub fn is_persistent(&self) -> bool {
        self.expiry_secs > 0
    }

    /// Whether the session is in the store (its changes are journalled).
    pub fn is_stored(&self) -> bool {
        self.stored
    }

    /// Journals the session's own record if it is persistent; the first time, with every QoS
    /// 1/2 message it holds. A session that stopped being persistent (a v5 client reconnected
    /// with expiry 0) leaves the store.
    pub fn save(&mut self, journal: &mut Journal) {
        if !journal.enabled() {
            return;
        }
        if !self.is_persistent() {
            self.unsave(journal);
            return;
        }
        journal.record(StoreOp::PutSession(self.record(journal)), self.conn);
        if self.stored {
            return;
        }
        self.stored = true;
        for entry in &self.flow().inflight {
            let state = match entry.state {
                Awaiting::PubAck | Awaiting::PubRec => EntryState::Sent(entry.packet_id),
                Awaiting::PubComp => EntryState::Released(entry.packet_id),
            };
            self.journal_put(entry.key, &entry.item, state, journal);
        }
        for (key, item) in &self.flow().queue {
            self.journal_put(*key, item, EntryState::Queued, journal);
        }
        for packet_id in &self.flow().awaiting_pubrel {
            let op = StoreOp::PutIncomingId {
                client_id: self.client_id.clone(),
                packet_id: *packet_id,
            };
            journal.record(op, self.conn);
        }
    }

    /// Takes the session (record, messages, QoS 2 ids) out of the store, if it is there.
    pub fn unsave(&mut self, journal: &mut Journal) {
        if std::mem::take(&mut self.stored) {
            let op = StoreOp::DeleteSession {
                client_id: self.client_id.clone(),
            };
            journal.record(op, self.conn);
        }
    }

    fn record(&self, journal: &Journal) -> SessionRecord {
        SessionRecord {
            client_id: self.client_id.clone(),
            version: self.params.version,
            expiry_secs: self.expiry_secs,
            expires_at: self.expires_at.map(|at| journal.to_wall(at)),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(filter, s)| (filter.clone(), s.options, s.id))
                .collect(),
            login: self.login.clone(),
            pending_will: self
                .pending_will
                .as_ref()
                .map(|pending| (pending.0.clone(), journal.to_wall(pending.1))),
        }
    }

    /// Journals that a QoS 2 message from the client was taken (`taken`) or released.
    pub fn save_incoming_id(&self, packet_id: PacketId, taken: bool, journal: &mut Journal) {
        if !self.stored {
            return;
        }
        let client_id = self.client_id.clone();
        let op = if taken {
            StoreOp::PutIncomingId {
                client_id,
                packet_id,
            }
        } else {
            StoreOp::DeleteIncomingId {
                client_id,
                packet_id,
            }
        };
        journal.record(op, self.conn);
    }

    // What waits for which op (see `durable.rs`): the publisher's acknowledgement waits for
    // the message's entry (the input's own connection is held by the broker). This client's
    // packets wait only where a crash between sending and storing would break QoS 2: a QoS 2
    // PUBLISH must go out with the packet id the store has (else a restart sends it again
    // under a new id, and the client takes it for a new message), and a PUBREL only once the
    // store says released (else a restart resends the PUBLISH the client has already
    // completed). For QoS 1 the worst a crash can do is a duplicate, which QoS 1 allows, and
    // a lost delete only resends what the client already has: neither waits.

    /// Journals a new QoS 1/2 entry, `state` already as it will be sent.
    fn journal_put(&self, key: u64, item: &Queued, state: EntryState, journal: &mut Journal) {
        if !self.stored || item.qos == QoS::AtMostOnce {
            return;
        }
        let entry = EntryRecord {
            message: journal.stored_message(&item.message),
            qos: item.qos,
            retain: item.retain,
            subscription_ids: item.subscription_ids.clone(),
            state,
        };
        let qos = item.qos;
        let op = StoreOp::PutEntry {
            client_id: self.client_id.clone(),
            key,
            entry,
        };
        journal.record(op, self.conn.filter(|_| qos == QoS::ExactlyOnce));
    }

    fn journal_state(&self, key: u64, qos: QoS, state: EntryState, journal: &mut Journal) {
        if !self.stored {
            return;
        }
        let op = StoreOp::SetEntryState {
            client_id: self.client_id.clone(),
            key,
            state,
        };
        match qos {
            QoS::ExactlyOnce => journal.record(op, self.conn),
            _ => journal.record_lazily(op),
        }
    }

    /// Journals that an entry is gone: nobody waits for it (a delete lost in a crash brings
    /// back a message the client has, or one the limits dropped: a duplicate at worst).
    fn journal_delete(&self, key: u64, journal: &mut Journal) {
        if self.stored {
            let op = StoreOp::DeleteEntry {
                client_id: self.client_id.clone(),
                key,
            };
            journal.record_lazily(op);
        }
    }

    /// Puts back a stored message (at a restart, before any connection): in the window with
    /// its packet id, to be resent with DUP when the client is back, or in the queue. Limits
    /// are not applied: the store holds nothing the limits did not let in.
    pub fn restore_entry(
        &mut self,
        key: u64,
        item: Queued,
        state: EntryState,
        now: Instant,
        stats: &mut Stats,
    ) {
        debug_assert!(key >= self.next_key, "stored entries come in key order");
        self.next_key = key.saturating_add(1);
        self.stored = true;
        match state {
            EntryState::Queued => {
                stats.deliveries_restored += 1;
                let bytes = item.message.charged_bytes();
                stats.queued_bytes += bytes;
                let flow = self.flow_mut();
                flow.queued_bytes += bytes;
                flow.queue.push_back((key, item));
            }
            EntryState::Sent(packet_id) | EntryState::Released(packet_id) => {
                let publish = self.first_publish(&item, Some(packet_id), now);
                self.push_inflight(key, item, packet_id, publish, stats);
                let entry = self.flow_mut().inflight.back_mut().expect("just pushed");
                entry.unsent = true;
                if matches!(state, EntryState::Released(_)) {
                    entry.state = Awaiting::PubComp;
                }
                self.last_packet_id = self.last_packet_id.max(packet_id.get());
            }
        }
    }

    /// Marks a session rebuilt from the store as stored (it may hold no message at all).
    pub fn mark_stored(&mut self) {
        self.stored = true;
    }
}
