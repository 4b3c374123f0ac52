//! Every limit the broker enforces, in one place, each with the reason for its default.
//!
//! Names end in their unit. The TOML config (`config.rs`) maps onto this struct field for field;
//! the core and the driver read only this.

use std::time::Duration;

/// What happens to a message that arrives for a session whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueOverflow {
    /// Drop the oldest queued message to make room (EMQX's behaviour): fresh data wins.
    #[default]
    DropOldest,
    /// Drop the message that does not fit: what was queued first is kept.
    DropNewest,
}

/// User properties one packet may carry. Each costs about 70 bytes in memory against 5 on the
/// wire, so 8 MiB of empty pairs would take over 100 MiB while being decoded. More ends the
/// connection (v5: DISCONNECT 0x83 Implementation specific error, or CONNACK 0x83 for a
/// CONNECT). AWS IoT and Azure allow far fewer; the spec sets no limit. A constant, because
/// the codec enforces it while reading, before any configuration-aware code sees the packet.
pub const USER_PROPERTIES_PER_PACKET_MAX: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// A connection must send CONNECT within this time or be closed (slowloris defence).
    pub connect_timeout: Duration,
    /// Largest packet accepted from a client, fixed header included; announced to v5 clients
    /// as Maximum Packet Size. Large enough for 1 MiB payloads with room for properties.
    pub packet_bytes_max: usize,
    /// Unacknowledged QoS 1/2 PUBLISH packets the broker keeps in flight to one client; the
    /// client's v5 Receive Maximum lowers it further. More waits in the session queue.
    pub inflight_count_max: u16,
    /// QoS 2 PUBLISH packets a v5 client may have unreleased at once; announced as Receive
    /// Maximum (the broker acknowledges QoS 1 at once, so only QoS 2 can pile up), exceeding it
    /// ends the connection with 0x93. The default, 65535, is the id space: only packet ids are
    /// held, and MQTT.js ignores a lower Receive Maximum. 3.1.1 clients, which cannot be told
    /// a limit, are bounded by their id space alone.
    pub receive_maximum_count: u16,
    /// Messages queued for one session beyond its in-flight window (EMQX default: 1000).
    pub queued_messages_max: usize,
    /// Bytes queued for one session (topic, payload, properties and overhead).
    pub queued_bytes_max: usize,
    /// A queued message older than this is dropped instead of delivered (EMQX default: 5 min).
    pub queued_message_age_max: Duration,
    /// Whether QoS 0 messages are queued for an offline persistent session (EMQX: no).
    pub queue_qos0: bool,
    pub queue_overflow: QueueOverflow,
    /// The keep-alive deadline is this many tenths of the keep-alive period (spec: 1.5x).
    pub keep_alive_tenths: u32,
    /// Largest keep alive accepted; a v5 client asking for more (or for 0) is told this value
    /// as Server Keep Alive. 0: no maximum.
    pub keep_alive_max_secs: u16,
    /// Upper bound on any session expiry interval, 3.1.1 persistent sessions included (which
    /// would otherwise never expire): anonymous clients must not be able to make sessions
    /// that live forever. Two hours, as EMQX. `u32::MAX`: no cap (3.1.1 sessions then never
    /// expire, and v5 clients get what they ask for).
    pub session_expiry_max_secs: u32,
    /// Sessions (connected or not) the broker holds; CONNECTs that need a new one are refused
    /// beyond this, so random client ids cannot exhaust memory.
    pub sessions_max: usize,
    /// Subscriptions one session may hold.
    pub subscriptions_per_session_max: usize,
    /// Retained messages the broker stores; a new topic beyond this is not retained (counted).
    pub retained_messages_max: usize,
    /// Bytes of all retained messages together (topic, payload, properties and overhead, see
    /// `Message::charged_bytes`); a message that does not fit is not retained (counted), so
    /// one client cannot fill memory with large retained payloads.
    pub retained_bytes_max: usize,
    /// Bytes of everything held for later, all session queues and retained messages together.
    /// Beyond it nothing more is held: QoS 0 deliveries that would be queued are dropped
    /// (counted), a QoS 1/2 PUBLISH is refused before it is acknowledged (v5: PUBACK/PUBREC
    /// 0x97 Quota exceeded; 3.1.1, which has no way to say so: the connection is closed, so
    /// the unacknowledged message stays the client's to send again), a new retained message
    /// is not retained. Messages being delivered to connected clients are not held, so
    /// traffic between live clients flows on.
    pub memory_bytes_max: usize,
    /// Topic aliases a v5 client may set per connection (announced as Topic Alias Maximum).
    pub topic_alias_max: u16,
    /// Topic aliases the broker uses towards a v5 client that accepts them (never more than
    /// the client's Topic Alias Maximum); 0 turns broker-to-client aliases off.
    pub outbound_topic_alias_max: u16,
    /// Levels ('/'-separated) in a topic name or filter (EMQX's default: 128). A deeper filter
    /// is refused in its SUBACK (0x8F Topic Filter invalid; 3.1.1: 0x80), a deeper PUBLISH
    /// topic ends the connection (v5: DISCONNECT 0x90 Topic Name invalid), a deeper will topic
    /// refuses the CONNECT (v5: CONNACK 0x90). Depth costs the broker work on every match.
    pub topic_levels_max: usize,
    /// Client identifiers longer than this are refused.
    pub client_id_bytes_max: usize,
    /// Open network connections; further ones are closed on accept.
    pub connections_max: usize,
    /// Packets waiting in one connection's outbound queue. A QoS 0 message that does not fit
    /// is dropped and counted; anything else that does not fit disconnects the client as too
    /// slow (QoS 1/2 are bounded by the in-flight window, so only a client that stopped
    /// reading can fill it).
    pub outbound_queue_packets_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(10),
            packet_bytes_max: 8 * 1024 * 1024,
            inflight_count_max: 32,
            receive_maximum_count: u16::MAX,
            queued_messages_max: 1000,
            queued_bytes_max: 64 * 1024 * 1024,
            queued_message_age_max: Duration::from_secs(300),
            queue_qos0: false,
            queue_overflow: QueueOverflow::DropOldest,
            keep_alive_tenths: 15,
            keep_alive_max_secs: 0,
            session_expiry_max_secs: 2 * 60 * 60,
            sessions_max: 100_000,
            subscriptions_per_session_max: 10_000,
            retained_messages_max: 1_000_000,
            retained_bytes_max: 1024 * 1024 * 1024,
            memory_bytes_max: 2 * 1024 * 1024 * 1024,
            topic_alias_max: 64,
            outbound_topic_alias_max: 64,
            topic_levels_max: 128,
            client_id_bytes_max: 256,
            connections_max: 100_000,
            outbound_queue_packets_max: 1024,
        }
    }
}
