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
}
