//! Counters of what the broker did and, above all, what it had to drop.
//!
//! Every documented drop policy increments one of these, so a limit that bites is visible
//! (and the simulation's checkers can tell a counted drop from a lost message).

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    /// QoS 0 messages for a disconnected session with QoS 0 queueing off.
    pub qos0_dropped_offline: u64,
    /// Messages dropped because a session queue was full.
    pub messages_dropped_queue_full: u64,
    /// Messages whose expiry interval or queue age ran out before delivery.
    pub messages_dropped_expired: u64,
    /// Messages larger than the receiving client's Maximum Packet Size.
    pub messages_dropped_too_large: u64,
    /// Retained messages not stored because the store was full.
    pub retained_refused: u64,
    pub wills_published: u64,
    /// Enhanced authentications (at CONNECT or re-authentication) that failed.
    pub authentications_failed: u64,
    /// Shared-subscription messages moved from a member that went away to another member.
    pub shared_handed_back: u64,
    /// QoS 0 deliveries dropped because the client's outbound queue was full (it reads slower
    /// than messages arrive).
    pub qos0_dropped_slow_consumer: u64,
    /// Connections closed because their outbound queue was full even of replies: the client
    /// sent requests and did not read the answers.
    pub slow_consumers_disconnected: u64,
    /// Deliveries not queued because the broker-wide memory budget was spent.
    pub messages_dropped_memory: u64,
    /// QoS 1/2 PUBLISHes refused (v5: 0x97; 3.1.1: connection closed, unacknowledged) because
    /// the broker-wide memory budget was spent.
    pub publishes_refused_memory: u64,
    /// Connections accepted from other brokers' bridges (the 3.x bridge bit), each of them:
    /// a bridge that reconnects counts again.
    pub bridge_connections_accepted: u64,
    /// QoS 1/2 PUBLISHes refused because they needed the store and its disk was full.
    pub publishes_refused_store_full: u64,
    /// CONNECTs and SUBSCRIBE filters of persistent sessions refused for a full store.
    pub persistent_work_refused_store_full: u64,
    /// CONNECTs refused for their credentials (after `LOGIN_FAILURE_DELAY`).
    pub logins_failed: u64,
    /// PUBLISHes the ACL (or a `$SYS`/`$share` topic) did not allow: v5 gets 0x87, 3.x is
    /// acknowledged and the message dropped, as Mosquitto does.
    pub publishes_denied: u64,
    /// SUBSCRIBE filters the ACL did not allow (SUBACK 0x87, 3.x 0x80).
    pub subscriptions_denied: u64,
    /// Deliveries not made because the subscriber may not read the topic.
    pub deliveries_denied: u64,
    /// Gauge: bytes queued in all sessions (see `Message::charged_bytes`).
    pub queued_bytes: usize,
    /// Gauge: bytes of all retained messages.
    pub retained_bytes: usize,
    /// Gauge: bytes of messages sent and not yet acknowledged.
    pub inflight_bytes: usize,
    /// Driver: packets the core sent to a full outbound queue. Always 0 unless the core's
    /// count of the room is wrong (a bug; the tests assert it stays 0).
    pub outbound_count_mismatches: u64,
}

impl Stats {
    /// Bytes held (queued, in flight, retained): what `Limits::memory_bytes_max` bounds.
    pub fn held_bytes(&self) -> usize {
        self.queued_bytes + self.inflight_bytes + self.retained_bytes
    }
}
