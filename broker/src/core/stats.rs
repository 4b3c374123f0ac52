//! Counters of what the broker did and, above all, what it had to drop.
//!
//! Every documented drop policy increments one of these, so a limit that bites is visible
//! (and the simulation's checkers can tell a counted drop from a lost message). The core keeps
//! plain counters, with no clock and no global state; the driver samples them ([`Sample`]) for
//! the `$SYS` tree and the Prometheus endpoint (`crate::metrics`).
//!
//! One account is kept exactly: every delivery (a message handed to one session) ends in one
//! place, sent, dropped for a counted reason, discarded with its session, moved to another
//! member of a shared group, or still queued. [`Sample::unaccounted_deliveries`] checks it;
//! the simulation checks it at the end of every run.

use crate::types::QoS;

/// A counter per QoS level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerQos([u64; 3]);

impl PerQos {
    pub fn count(&mut self, qos: QoS) {
        self.0[qos as usize] += 1;
    }

    pub fn get(&self, qos: QoS) -> u64 {
        self.0[qos as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CONNECTs answered with a successful CONNACK.
    pub connections_accepted: u64,
    pub connections_refused: u64,
    /// Connections accepted from other brokers' bridges (the 3.x bridge bit), each of them:
    /// a bridge that reconnects counts again.
    pub bridge_connections_accepted: u64,
    /// Connections closed because another connection took their client id.
    pub takeovers: u64,
    /// Connections the client ended with DISCONNECT.
    pub disconnects: u64,
    /// Connections the network ended (no DISCONNECT), before or after CONNECT.
    pub connections_lost: u64,
    /// Connections the broker ended (protocol error, keep alive, slow consumer, takeover,
    /// connect timeout, shutdown), before or after CONNECT; CONNACK refusals excluded.
    pub connections_closed: u64,
    /// Of `connections_closed`: the client was silent for 1.5 times its keep alive.
    pub keep_alive_timeouts: u64,
    /// Packets the codec refused (the connection is closed).
    pub malformed_packets: u64,
    /// MQTT packets of every type received and sent.
    pub packets_received: u64,
    pub packets_sent: u64,
    /// Application messages the broker took ownership of (PUBLISH, wills), by their QoS.
    pub messages_received: PerQos,
    /// Their payload bytes.
    pub publish_bytes_received: u64,
    /// Deliveries sent for the first time, by the QoS they were sent with (a QoS 2 delivery
    /// to a stored session counts when it enters the window, even if the PUBLISH waits for
    /// the store: it has left the queue).
    pub messages_sent: PerQos,
    /// Their payload bytes.
    pub publish_bytes_sent: u64,
    /// PUBLISHes sent again (DUP) after a reconnect or a restart.
    pub messages_resent: u64,
    /// Messages handed to a session (one per receiving session): each ends sent, dropped,
    /// discarded, moved or still queued (see [`Sample::unaccounted_deliveries`]).
    pub deliveries: u64,
    /// Queued deliveries read back from the store at a restart.
    pub deliveries_restored: u64,
    /// Queued deliveries of a shared subscription moved to another member of the group.
    pub deliveries_moved: u64,
    /// Queued deliveries discarded because their session ended (expired, or replaced by a
    /// clean start).
    pub messages_discarded: u64,
    /// Messages for a shared group that no member could take (none may read the topic).
    pub shared_unclaimed: u64,
    /// Queued deliveries of a member that went away that no other member could take.
    pub shared_dropped_no_member: u64,
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

    /// Deliveries dropped, for any counted reason.
    pub fn deliveries_dropped(&self) -> u64 {
        self.qos0_dropped_offline
            + self.qos0_dropped_slow_consumer
            + self.messages_dropped_queue_full
            + self.messages_dropped_expired
            + self.messages_dropped_too_large
            + self.messages_dropped_memory
            + self.shared_dropped_no_member
    }
}

/// The counters with the gauges that are counted when asked (sessions, subscriptions, queue
/// lengths): what the driver reads, at most once per scrape or `$SYS` interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub stats: Stats,
    /// Open network connections, including those not yet past CONNECT.
    pub connections: usize,
    /// Sessions with a connection.
    pub clients_connected: usize,
    /// Every session, connected or not.
    pub sessions: usize,
    /// Subscriptions of all sessions (shared ones included).
    pub subscriptions: usize,
    pub retained_messages: usize,
    /// Deliveries waiting in session queues.
    pub queued_messages: usize,
    /// Deliveries sent and not yet acknowledged.
    pub inflight_messages: usize,
}

impl Sample {
    /// How many deliveries the counters cannot place: those that came in (handed to a
    /// session, or restored) less those that went somewhere (sent, dropped, discarded, moved,
    /// still queued). Zero unless a path forgets to count; negative if one counts twice.
    pub fn unaccounted_deliveries(&self) -> i128 {
        let s = &self.stats;
        let came = i128::from(s.deliveries) + i128::from(s.deliveries_restored);
        let went = i128::from(s.messages_sent.total())
            + i128::from(s.deliveries_dropped())
            + i128::from(s.messages_discarded)
            + i128::from(s.deliveries_moved)
            + self.queued_messages as i128;
        came - went
    }
}
