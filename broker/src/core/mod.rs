//! The broker core: all MQTT semantics as a state machine with no IO, no clock and no
//! randomness (docs/design.md section 1, the shape of `quinn-proto`).
//!
//! Inputs are method calls ([`Broker::connection_opened`], [`Broker::packet_received`],
//! [`Broker::decode_failed`], [`Broker::connection_closed`], [`Broker::timeout`],
//! [`Broker::outbound_room`]), each with the current [`Instant`]. Outputs are polled:
//! [`Broker::poll_output`] for packets to send, connections to close and requests to hear of
//! outbound room, [`Broker::poll_timeout`] for when to call `timeout` next. The same
//! inputs always give the same outputs, so the core runs unchanged in production, in the
//! turmoil simulation and in unit tests with virtual time.
//!
//! The impl is split by concern: `connect.rs` (CONNECT, sessions, wills, closing),
//! `auth.rs` (enhanced authentication), `publish.rs` (QoS flows and routing, shared
//! subscription hand-back), `subscribe.rs` (SUBSCRIBE, UNSUBSCRIBE); `shared.rs` keeps the
//! shared subscription groups.

mod access;
mod alias;
mod auth;
mod compact_map;
mod connect;
mod connection;
mod durable;
mod message;
mod outbox;
mod publish;
mod restore;
mod retained;
mod session;
mod shared;
mod stats;
mod subscribe;
pub mod subscription_tree;
pub mod time;

use std::collections::BTreeMap;
use std::time::Duration;

pub use access::{reserved_for_the_broker, ListenerAccess, Login, Origin, LOGIN_FAILURE_DELAY};
pub use durable::{
    EntryRecord, EntryState, SessionRecord, Snapshot, StoreOp, StoredMessage, StoredSession, WallMs,
};
pub use message::Message;
pub use outbox::Output;
pub use stats::{PerQos, Sample, Stats};
pub use time::Instant;

use crate::auth::scram::ScramSha256;
use crate::auth::{Authenticator, Entropy, SeededEntropy};
use crate::codec::{
    encoded_len, ByteStr, DecodeError, Disconnect, Packet, Properties, Property, ProtocolVersion,
    ReasonCode,
};
use crate::limits::Limits;
use crate::log_limit::HostileWarnings;
pub use crate::types::ConnId;
use crate::types::QoS;
use access::AccessRules;
use connection::{client_line, ConnState, Connection, Ending};
use durable::Journal;
use outbox::Outbox;
use retained::RetainedStore;
use session::Session;
use shared::SharedSubscriptions;
use subscription_tree::{SubscriptionTree, TreeHasher};
use time::{DeadlineSet, TimerQueue};

/// Identifies a session for its whole life (a new session for the same client id gets a new id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Mosquitto's default `sys_interval`.
pub const SYS_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);

/// What the core needs to know beyond the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub limits: Limits,
    /// Accept clients without credentials.
    pub allow_anonymous: bool,
    /// User name to password.
    pub users: BTreeMap<String, String>,
    pub features: Features,
    /// Users of the SCRAM-SHA-256 enhanced authentication method (MQTT 5).
    pub scram: ScramConfig,
    /// How each listener (by its index in `Origin::listener`) logs clients in; a listener
    /// not listed uses `allow_anonymous` and `users`.
    pub listeners: Vec<ListenerAccess>,
    /// How often the driver publishes the `$SYS` tree (`Broker::publish_system`); zero: never.
    pub sys_interval: Duration,
}

/// SCRAM-SHA-256 users; none: the method is not offered.
#[derive(Debug, Clone, PartialEq)]
pub struct ScramConfig {
    /// User name to password (stored only as salted keys once the broker starts).
    pub users: BTreeMap<String, String>,
    /// PBKDF2 iterations for the salted passwords.
    pub iterations: u32,
}

impl Default for ScramConfig {
    fn default() -> ScramConfig {
        ScramConfig {
            users: BTreeMap::new(),
            iterations: crate::auth::scram::ITERATIONS_DEFAULT,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            allow_anonymous: true,
            users: BTreeMap::new(),
            features: Features::default(),
            scram: ScramConfig::default(),
            listeners: Vec::new(),
            sys_interval: SYS_INTERVAL_DEFAULT,
        }
    }
}

/// Optional capabilities and what the broker tells MQTT 5 clients about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Accept `$share/{group}/{filter}` subscriptions (announced in CONNACK).
    pub shared_subscriptions: bool,
    /// Highest QoS accepted from publishers and granted to subscribers (announced as Maximum
    /// QoS when below 2).
    pub maximum_qos: QoS,
    /// Accept retained messages (announced as Retain Available when off).
    pub retain_available: bool,
    /// Given to a v5 client that sets Request Response Information, with `{client_id}`
    /// replaced by its client identifier: typically the prefix of its response topics.
    pub response_information: Option<String>,
    /// Another broker for v5 clients this one cannot take: refusals for capacity become
    /// 0x9C Use another server with this Server Reference, and so does the DISCONNECT at
    /// shutdown.
    pub server_reference: Option<String>,
    /// This broker has moved to `server_reference` for good: every v5 CONNECT is refused with
    /// 0x9D Server moved (3.x clients, which cannot be told, are served as usual).
    pub server_moved: bool,
}

impl Default for Features {
    fn default() -> Features {
        Features {
            shared_subscriptions: true,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            response_information: None,
            server_reference: None,
            server_moved: false,
        }
    }
}

/// Something that must be checked at a deadline. Entries may be stale; handlers re-check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    ConnectTimeout(ConnId),
    /// Never in the `timers` queue: keep-alive checks have their own (`Broker::keep_alive`).
    KeepAlive(ConnId),
    WillDelay(SessionId),
    SessionExpiry(SessionId),
    /// A retained-message walk ran out of scan budget with room to spare: go on (soon, after
    /// other clients' events).
    RetainedFeed(SessionId),
    /// A failed login's delay has passed: send the refusal (`access.rs`).
    LoginRefusal(ConnId),
}

/// Retained messages looked at per millisecond by all new subscriptions' walks together
/// (`Broker::feed_retained`): a SUBSCRIBE to a sparse filter over a large store, or many of
/// them, take a bounded share of the core's time (a look is ~50 ns: about 20%), and the rest
/// of the walk continues a millisecond later, after other clients' events.
const RETAINED_SCAN_BUDGET_PER_MS: usize = 4096;

/// The most of that budget one session's walks may use per millisecond, so one client (one
/// SUBSCRIBE per millisecond to a sparse filter, or thousands of filters at once) cannot take
/// all of it and postpone everyone else's retained messages.
const RETAINED_SCAN_SHARE_PER_MS: usize = RETAINED_SCAN_BUDGET_PER_MS / 4;

pub struct Broker {
    config: Config,
    /// Enhanced authentication methods, by method name.
    authenticators: Vec<Box<dyn Authenticator>>,
    entropy: Box<dyn Entropy>,
    // Boxed values: a B-tree node holds eleven values inline and is about half full, so
    // inline each connection and session would cost nearly twice its size (idle memory).
    conns: BTreeMap<ConnId, Box<Connection>>,
    sessions: BTreeMap<SessionId, Box<Session>>,
    by_client_id: BTreeMap<ByteStr, SessionId>,
    subscriptions: SubscriptionTree,
    shared: SharedSubscriptions,
    retained: RetainedStore,
    /// Every deadline but the keep-alive checks.
    timers: TimerQueue<Timer>,
    /// The keep-alive checks, one per connection with a keep alive, apart from `timers`
    /// because every idle connection holds one (see [`DeadlineSet`]). Each connection
    /// remembers where its entry sits; only [`Broker::schedule_keep_alive`], `pop_due_timer`
    /// and `forget_connection` change the two together.
    keep_alive: DeadlineSet<ConnId>,
    out: Outbox,
    stats: Stats,
    /// Which addresses were warned about lately (bounds the log a hostile client can cause).
    hostile: HostileWarnings,
    /// The ACLs, per listener.
    access: AccessRules,
    /// What the current input changed that must be durable (a no-op when persistence is off).
    journal: Journal,
    next_session_id: u64,
    next_assigned_client_id: u64,
    /// The millisecond the retained scan budget was last refilled in, and what is left of it.
    retained_scan: (u64, usize),
}

impl Broker {
    /// A broker whose entropy is a fixed seed: for tests and benches. The driver uses
    /// [`Broker::with_entropy`] with the OS (or, in simulation, the scenario's seed).
    pub fn new(config: Config) -> Broker {
        Broker::with_entropy(config, Box::new(SeededEntropy::new(0)))
    }

    /// A broker that draws nonces and salts from `entropy`. The SCRAM-SHA-256 method is set up
    /// when the config has SCRAM users.
    pub fn with_entropy(config: Config, mut entropy: Box<dyn Entropy>) -> Broker {
        let mut authenticators: Vec<Box<dyn Authenticator>> = Vec::new();
        if !config.scram.users.is_empty() {
            authenticators.push(Box::new(ScramSha256::from_passwords(
                &config.scram.users,
                config.scram.iterations,
                &mut *entropy,
            )));
        }
        // A secret key for the subscription trees' hash maps (hash-flooding defence).
        let mut key = [0u8; 16];
        entropy.fill(&mut key);
        let (k0, k1) = key.split_at(8);
        let hasher = TreeHasher::with_key((
            u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            u64::from_le_bytes(k1.try_into().expect("8 bytes")),
        ));
        let out = Outbox::new(config.limits.outbound_queue_packets_max);
        Broker {
            config,
            authenticators,
            entropy,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            by_client_id: BTreeMap::new(),
            subscriptions: SubscriptionTree::with_hasher(hasher),
            shared: SharedSubscriptions::with_hasher(hasher),
            retained: RetainedStore::default(),
            timers: TimerQueue::new(),
            keep_alive: DeadlineSet::new(),
            out,
            stats: Stats::default(),
            access: AccessRules::default(),
            hostile: HostileWarnings::default(),
            journal: Journal::disabled(),
            next_session_id: 0,
            next_assigned_client_id: 0,
            retained_scan: (0, RETAINED_SCAN_BUDGET_PER_MS),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The counters and the gauges counted on demand: O(sessions + subscriptions), for a
    /// scrape or a `$SYS` interval, not for every input.
    pub fn sample(&self) -> Sample {
        let mut sample = Sample {
            stats: self.stats.clone(),
            connections: self.conns.len(),
            sessions: self.sessions.len(),
            retained_messages: self.retained.len(),
            ..Sample::default()
        };
        for session in self.sessions.values() {
            sample.clients_connected += usize::from(session.conn.is_some());
            sample.subscriptions += session.subscription_count();
            sample.queued_messages += session.queued_len();
            sample.inflight_messages += session.inflight_len();
        }
        sample
    }

    /// Logs hostile input from `conn`'s address, at most one line per address and window
    /// (`log_limit.rs`).
    fn warn_hostile(&mut self, conn: ConnId, what: &str, now: Instant) {
        let Some(connection) = self.conns.get(&conn) else {
            return;
        };
        let ip = connection
            .origin
            .peer
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |peer| peer.ip());
        let now_ms = u64::try_from(now.since_epoch().as_millis()).unwrap_or(u64::MAX);
        if let Some(line) = self.hostile.offence(ip, now_ms) {
            crate::log_limit::warn(&connection.origin.peer_text(), &what, line);
        }
    }

    /// Open connections (including those still waiting for CONNECT).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// A network connection was accepted (on the listener, and with the verified client
    /// certificate, that `origin` names). CONNECT must follow within the connect timeout.
    pub fn connection_opened(&mut self, conn: ConnId, origin: Origin, now: Instant) {
        let connection = Connection::new(now, self.config.limits.connect_timeout, origin);
        if let ConnState::AwaitingConnect { deadline } = connection.state {
            self.timers.schedule(deadline, Timer::ConnectTimeout(conn));
        }
        let previous = self.conns.insert(conn, Box::new(connection));
        assert!(previous.is_none(), "connection id {conn} reused");
        self.out.open(conn);
    }

    /// The driver's answer to [`Output::WakeWhenWritable`]: `conn`'s outbound queue can take
    /// `free` more packets. Whatever was waiting for room is sent.
    pub fn outbound_room(&mut self, conn: ConnId, free: usize, now: Instant) {
        self.out.set_room(conn, free);
        if let Some(session) = self.conns.get(&conn).and_then(|c| c.session()) {
            self.send_queued_to(session, now);
        }
        self.after_input(now);
    }

    /// A complete packet arrived on `conn`.
    pub fn packet_received(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        let Some(connection) = self.conns.get_mut(&conn) else {
            // Closed by the core already; the driver may still deliver what was in flight.
            return;
        };
        connection.touch(now);
        self.stats.packets_received += 1;
        // Its replies wait for whatever this packet makes durable.
        self.journal.hold(conn);
        match connection.session() {
            // A failed login waits for its refusal: what the client pipelined is ignored.
            None if matches!(connection.state, ConnState::Refusing { .. }) => {}
            None if matches!(connection.state, ConnState::Authenticating { .. }) => match packet {
                Packet::Auth(auth) => self.handle_auth(conn, auth, now),
                Packet::Disconnect(_) => {
                    // The client gave up before it was authenticated.
                    self.forget_connection(conn, Ending::Disconnect(ReasonCode::Success));
                    self.out.close(conn);
                }
                other => {
                    // spec: [MQTT-3.1.2-30] (v5): only AUTH or DISCONNECT until CONNACK.
                    let why = format!("{} during enhanced authentication", other.packet_type());
                    self.refuse(conn, ReasonCode::ProtocolError, &why);
                }
            },
            None => match packet {
                Packet::Connect(connect) => self.handle_connect(conn, *connect, now),
                other => {
                    // spec: [MQTT-3.1.0-1]: the first packet must be CONNECT.
                    let why = format!("first packet is {}, not CONNECT", other.packet_type());
                    self.close(conn, None, &why, true, now);
                }
            },
            Some(session) => self.handle_active(conn, session, packet, now),
        }
        self.after_input(now);
    }

    /// The bytes from `conn` are not valid MQTT. Closes only that connection; a v5 client
    /// first gets the reason code, and a CONNECT with an unsupported protocol level gets the
    /// CONNACK refusal the spec asks for.
    pub fn decode_failed(&mut self, conn: ConnId, error: &DecodeError, now: Instant) {
        let Some(connection) = self.conns.get(&conn) else {
            return;
        };
        if matches!(connection.state, ConnState::Refusing { .. }) {
            // The refusal goes out at its fixed time, whatever followed the CONNECT: an
            // earlier answer would tell the client its login failed.
            return;
        }
        let why = match error.spec_id(connection.version) {
            Some(rule) => format!("malformed packet: {error} [{rule}]"),
            None => format!("malformed packet: {error}"),
        };
        self.stats.malformed_packets += 1;
        if connection.session().is_none() {
            if matches!(error, DecodeError::UnsupportedProtocolLevel { .. }) {
                // spec: [MQTT-3.1.2-2] (3.1.1: return code 0x01; 5.0: 0x84). The level is not
                // one we speak, so the 3.1.1 layout is used, as Mosquitto does.
                self.refuse(conn, ReasonCode::UnsupportedProtocolVersion, &why);
            } else {
                // spec: [MQTT-3.1.4-1]: close without CONNACK.
                self.warn_hostile(conn, &why, now);
                self.close(conn, None, &why, true, now);
            }
        } else {
            self.close(conn, Some(error.reason_code()), &why, true, now);
        }
        self.after_input(now);
    }

    /// The network connection ended (end of stream, reset, or the driver dropped it).
    /// Counts as an abnormal end: the will is published.
    pub fn connection_closed(&mut self, conn: ConnId, now: Instant) {
        let Some(connection) = self.forget_connection(conn, Ending::Lost) else {
            return;
        };
        self.out.forget(conn);
        self.detach(connection, true, now);
        self.after_input(now);
    }

    /// Handles every deadline that has passed.
    pub fn timeout(&mut self, now: Instant) {
        while let Some(timer) = self.pop_due_timer(now) {
            match timer {
                Timer::ConnectTimeout(conn) => {
                    let waiting = self.conns.get(&conn).is_some_and(|c| {
                        c.session().is_none() && !matches!(c.state, ConnState::Refusing { .. })
                    });
                    if waiting {
                        self.close(
                            conn,
                            None,
                            "no CONNECT within the connect timeout",
                            false,
                            now,
                        );
                    }
                }
                Timer::KeepAlive(conn) => self.check_keep_alive(conn, now),
                Timer::WillDelay(session) => self.will_delay_passed(session, now),
                Timer::SessionExpiry(session) => self.session_expiry_passed(session, now),
                Timer::RetainedFeed(session) => self.feed_retained(session, now),
                Timer::LoginRefusal(conn) => self.login_refusal_due(conn),
            }
        }
        self.after_input(now);
    }

    /// The next instant at which [`Broker::timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_deadline(), self.keep_alive.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest timer due at `now` from either queue (the general queue first on a tie).
    fn pop_due_timer(&mut self, now: Instant) -> Option<Timer> {
        let keep_alive_first = match (self.keep_alive.next_deadline(), self.timers.next_deadline())
        {
            (Some(check), Some(other)) => check < other,
            (check, _) => check.is_some(),
        };
        if !keep_alive_first {
            return self.timers.pop_due(now).map(|(_, timer)| timer);
        }
        let (_, conn) = self.keep_alive.pop_due(now)?;
        if let Some(connection) = self.conns.get_mut(&conn) {
            connection.set_keep_alive_check(None);
        }
        Some(Timer::KeepAlive(conn))
    }

    /// (Re)sets `conn`'s keep-alive check to `at`, replacing the one it had.
    fn schedule_keep_alive(&mut self, conn: ConnId, at: Instant) {
        let Some(connection) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(old) = connection.set_keep_alive_check(Some(at)) {
            self.remove_keep_alive(old, conn);
        }
        let inserted = self.keep_alive.insert(at, conn);
        debug_assert!(inserted, "a connection has one keep-alive check");
    }

    /// Takes `conn`'s keep-alive check, which its connection says sits at `at`, out of the set.
    fn remove_keep_alive(&mut self, at: Instant, conn: ConnId) {
        let removed = self.keep_alive.remove(at, conn);
        assert!(
            removed,
            "a connection's keep-alive check out of step with the queue"
        );
    }

    /// The driver's report that every [`Output::Persist`] batch up to `batch` is durable: what
    /// waited for them (acknowledgements, deliveries) is released, in order.
    pub fn durable(&mut self, batch: u64) {
        if self.journal.mark_durable(batch) {
            self.out.release(batch);
        }
    }

    /// The driver's report that the store's disk is full (or has room again). While it is,
    /// new persistent work is refused with reason codes that say so (v5 0x97 Quota exceeded;
    /// 3.1.1: CONNACK 0x03, SUBACK 0x80, a QoS 1/2 PUBLISH closes the connection) and
    /// everything else goes on: clean sessions, QoS 0, and what was already accepted (whose
    /// acknowledgements wait for the retried commit).
    pub fn store_full(&mut self, full: bool) {
        if full != self.journal.full() {
            tracing::warn!(full, "store disk full: refusing new persistent work");
        }
        self.journal.set_full(full);
    }

    /// Whether replies to `conn` wait for the store. The driver keeps the connection's read
    /// tickets while they do, so a client that pipelines requests faster than the store
    /// commits is paused, not cut off for filling its outbound queue with held replies.
    pub fn holds_replies_for(&self, conn: ConnId) -> bool {
        self.out.holds(conn)
    }

    /// Batches handed out in [`Output::Persist`] and not yet reported durable.
    pub fn pending_batches(&self) -> u64 {
        self.journal.pending_batches()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.out.pop()?;
        if let Output::Send { .. } = output {
            self.stats.packets_sent += 1;
        }
        Some(output)
    }

    /// The broker is shutting down: every client is told (v5: DISCONNECT 0x8B, or 0x9C with
    /// the Server Reference when one is configured) and closed. Wills are not published: the
    /// broker going away is not the clients' abnormal end. Persistent sessions stay in the
    /// store (their stored state is already durable); the connections' wills are not stored.
    pub fn shutdown(&mut self) {
        let (reason, properties) = match self.server_reference(ReasonCode::UseAnotherServer) {
            Some(reference) => (ReasonCode::UseAnotherServer, vec![reference].into()),
            None => (ReasonCode::ServerShuttingDown, Properties::new()),
        };
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            if let Some(connection) = self.forget_connection(conn, Ending::Shutdown) {
                if connection.session().is_some() && connection.version.is_v5() {
                    self.out.send(conn, disconnect(reason, properties.clone()));
                }
                self.out.close(conn);
            }
        }
        // Behind whatever still waits for the store (the driver waits for it).
        self.out.end_input(None);
    }

    /// Closes the connections that were sent a packet with no room left in their outbound
    /// queue: deliveries stop short of a reserve kept for replies, so only a client that keeps
    /// sending requests without reading the answers gets here.
    fn after_input(&mut self, now: Instant) {
        for conn in self.out.take_overflowed() {
            if self.conns.contains_key(&conn) {
                self.stats.slow_consumers_disconnected += 1;
                let why = "outbound queue full (slow consumer: it sends requests and does not read the answers)";
                self.warn_hostile(conn, why, now);
                self.close(conn, None, why, true, now);
            }
        }
        let batch = self.journal.cut();
        self.out
            .end_input(batch.as_ref().map(|batch| (batch.number, &batch.hold)));
        if let Some(batch) = batch {
            self.out.persist(batch.number, batch.ops);
        }
    }

    /// Sends what `session` has waiting, as far as its window and outbound queue allow:
    /// resends, queued messages, then retained messages of new subscriptions.
    fn send_queued_to(&mut self, session_id: SessionId, now: Instant) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.send_queued(
            now,
            &self.config.limits,
            &mut self.out,
            &mut self.stats,
            &mut self.journal,
        );
        self.feed_retained(session_id, now);
    }

    /// Sends retained messages of the session's new subscriptions while its connection can
    /// take them (see `retained.rs`): a slice per call, bounded by the window, the outbound
    /// queue and [`RETAINED_SCAN_BUDGET_PER_MS`]; the driver's wake-up or a timer brings the next.
    fn feed_retained(&mut self, session_id: SessionId, now: Instant) {
        // u64 milliseconds last 584 million years.
        let millisecond = u64::try_from(now.since_epoch().as_millis()).unwrap_or(u64::MAX);
        if self.retained_scan.0 != millisecond {
            self.retained_scan = (millisecond, RETAINED_SCAN_BUDGET_PER_MS);
        }
        loop {
            let Some(session) = self.sessions.get_mut(&session_id) else {
                return;
            };
            let Some(conn) = session.conn else { return };
            if session.retained_walk_count() == 0 {
                return;
            }
            if session.ready_for_new(&self.out).is_none() {
                if !self.out.has_room_for_delivery(conn) {
                    self.out.request_wake(conn);
                }
                // Otherwise the window or the queue is full: acknowledgements send more.
                return;
            }
            let share = *session.retained_scan_share(millisecond, RETAINED_SCAN_SHARE_PER_MS);
            let allowed = self.retained_scan.1.min(share);
            if allowed == 0 {
                let next_millisecond = now + std::time::Duration::from_millis(1);
                self.timers
                    .schedule(next_millisecond, Timer::RetainedFeed(session_id));
                return;
            }
            let mut budget = allowed;
            let pending = session.current_retained_walk().expect("checked above");
            let (next, freed) = self.retained.next(&mut pending.cursor, now, &mut budget);
            let (options, subscription_id) = (pending.options, pending.subscription_id);
            let looked = allowed - budget;
            self.retained_scan.1 -= looked;
            *session.retained_scan_share(millisecond, RETAINED_SCAN_SHARE_PER_MS) -= looked;
            self.stats.retained_bytes -= freed;
            // Expired on the way: out of the durable store too (lazily, as in
            // `forget_expired_retained`; `session` is borrowed here).
            for topic in self.retained.take_expired() {
                self.journal
                    .record_lazily(StoreOp::DeleteRetained { topic });
            }
            let message = match next {
                retained::Next::Message(message) => message,
                retained::Next::Exhausted => {
                    session.finish_retained_walk();
                    continue;
                }
                retained::Next::Paused => continue,
            };
            if !self.access.may_read(session, message.topic()) {
                self.stats.deliveries_denied += 1;
                continue;
            }
            let item = session::Queued {
                qos: message.qos.min(options.qos),
                // spec: [MQTT-3.3.1-8] 3.1.1: a retained message sent for a new subscription
                // has RETAIN set; [MQTT-3.3.1-9] v5.
                retain: true,
                subscription_ids: subscription_id.into_iter().collect(),
                message,
                enqueued_at: now,
                group: None,
            };
            session.deliver(
                item,
                now,
                &self.config.limits,
                &mut self.out,
                &mut self.stats,
                &mut self.journal,
            );
        }
    }

    /// Removes a connection from the core's view, with its timers. Every path that ends a
    /// connection goes through here, so no timer outlives what it guards.
    /// Counts how it ended and logs the disconnect line of a client that was connected.
    fn forget_connection(&mut self, conn: ConnId, ending: Ending) -> Option<Connection> {
        self.timers.cancel(&Timer::ConnectTimeout(conn));
        let connection = self.conns.remove(&conn)?;
        if let Some(at) = connection.keep_alive_check() {
            self.remove_keep_alive(at, conn);
        }
        match ending {
            Ending::Disconnect(_) => self.stats.disconnects += 1,
            Ending::Lost => self.stats.connections_lost += 1,
            Ending::Closed(_) | Ending::Shutdown => self.stats.connections_closed += 1,
            Ending::Refused => {}
        }
        if connection.session().is_some() {
            client_line!(conn, connection, reason = %ending, "client disconnected");
        } else {
            tracing::debug!(%conn, addr = %connection.origin.peer_text(), reason = %ending, "connection ended before CONNACK");
        }
        Some(*connection)
    }

    /// Pending timers: at most two per connection and three per session (the proptest checks).
    #[cfg(test)]
    fn timer_count(&self) -> usize {
        self.timers.len() + self.keep_alive.len()
    }

    fn handle_active(&mut self, conn: ConnId, session: SessionId, packet: Packet, now: Instant) {
        match packet {
            Packet::Publish(publish) => self.handle_publish(conn, session, publish, now),
            Packet::PubAck(ack) => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    if !s.puback(ack.packet_id, &mut self.stats, &mut self.journal) {
                        tracing::debug!(%conn, id = %ack.packet_id, "PUBACK for an unknown packet id");
                    }
                    self.send_queued_to(session, now);
                }
            }
            Packet::PubRec(ack) => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    if let Some(pubrel) = s.pubrec(
                        ack.packet_id,
                        ack.reason_code,
                        &mut self.stats,
                        &mut self.journal,
                    ) {
                        self.out.send(conn, pubrel);
                    }
                    self.send_queued_to(session, now);
                }
            }
            Packet::PubRel(ack) => self.handle_pubrel(conn, session, ack.packet_id),
            Packet::PubComp(ack) => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    if !s.pubcomp(ack.packet_id, &mut self.stats, &mut self.journal) {
                        tracing::debug!(%conn, id = %ack.packet_id, "PUBCOMP for an unknown packet id");
                    }
                    self.send_queued_to(session, now);
                }
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(conn, session, subscribe, now),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(conn, session, unsubscribe),
            // spec: [MQTT-3.12.4-1]
            Packet::PingReq => self.out.send(conn, Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(conn, d, now),
            Packet::Connect(_) => {
                // spec: [MQTT-3.1.0-2]
                self.close(
                    conn,
                    Some(ReasonCode::ProtocolError),
                    "second CONNECT",
                    true,
                    now,
                );
            }
            Packet::Auth(auth) => self.handle_auth(conn, auth, now),
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                let why = format!("{} is a server-to-client packet", other.packet_type());
                self.close(conn, Some(ReasonCode::ProtocolError), &why, true, now);
            }
        }
    }
}

/// A client-chosen string (a topic, a filter) as it goes into a log line: at most
/// [`Abbreviated::CHARS_MAX`] characters, so a 65,535-byte topic cannot flood the log.
struct Abbreviated<'a>(&'a str);

impl Abbreviated<'_> {
    const CHARS_MAX: usize = 100;
}

impl std::fmt::Display for Abbreviated<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(Self::CHARS_MAX) {
            None => f.write_str(self.0),
            Some((end, _)) => write!(f, "{}... ({} bytes)", &self.0[..end], self.0.len()),
        }
    }
}

fn disconnect(reason: ReasonCode, properties: Properties) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: reason,
        properties,
    })
}

/// A Reason String property for v5 (empty for 3.x, which cannot carry one).
fn reason_string(version: ProtocolVersion, why: &str) -> Properties {
    match ByteStr::new(why) {
        Ok(text) if version.is_v5() && !why.is_empty() => vec![Property::ReasonString(text)].into(),
        _ => Properties::new(),
    }
}

/// Leaves out the Reason String and User Properties of a packet the broker composed if they
/// would make it larger than the client's Maximum Packet Size (spec: [MQTT-3.2.2-19]
/// [MQTT-3.2.2-20] [MQTT-3.9.2-1] [MQTT-3.9.2-2] [MQTT-3.14.2-3] [MQTT-3.14.2-4], v5).
fn fit(mut packet: Packet, version: ProtocolVersion, max: Option<u32>) -> Packet {
    let Some(max) = max else { return packet };
    if encoded_len(&packet, version).is_ok_and(|len| len <= max as usize) {
        return packet;
    }
    if let Some(properties) = packet.properties_mut() {
        properties
            .0
            .retain(|p| !matches!(p, Property::ReasonString(_) | Property::UserProperty(..)));
    }
    packet
}

#[cfg(test)]
mod tests;
