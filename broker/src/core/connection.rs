//! A network connection as the core sees it: before CONNECT, then bound to a session.

use std::collections::BTreeMap;
use std::time::Duration;

use super::access::{Login, Origin};
use super::time::Instant;
use super::SessionId;
use crate::auth::{AuthExchange, AuthStep};
use crate::codec::{ByteStr, Connect, ProtocolVersion, ReasonCode, Will};

#[derive(Debug)]
pub enum ConnState {
    /// Opened; CONNECT must arrive before `deadline`.
    AwaitingConnect { deadline: Instant },
    /// CONNECT asked for enhanced authentication and the exchange is under way; it must end
    /// before the same `deadline`. The CONNECT is applied when it succeeds.
    Authenticating {
        deadline: Instant,
        connect: Box<Connect>,
    },
    /// The login failed: the refusal goes out at a fixed delay (`access.rs`).
    Refusing {
        reason: ReasonCode,
        why: &'static str,
    },
    /// CONNACK sent; the connection serves `session`.
    Active { session: SessionId },
}

/// Logs an `info` line about a client with the fields every such line has (connection, client
/// id, address, listener, protocol level), then `$rest` (more fields and the message).
macro_rules! client_line {
    ($conn:expr, $connection:expr, $($rest:tt)*) => {
        tracing::info!(
            conn = %$conn,
            client_id = %$connection.client_id,
            addr = %$connection.origin.peer_text(),
            listener = $connection.origin.listener,
            protocol = $connection.version.level(),
            $($rest)*
        )
    };
}
pub(super) use client_line;

/// How a connection ended: which counter moves and what its log line says.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// The client sent DISCONNECT with this reason code.
    Disconnect(ReasonCode),
    /// The network ended it (end of stream, reset, write stall).
    Lost,
    /// The broker closed it, for this reason.
    Closed(&'a str),
    /// The broker refused its CONNECT (counted and logged by the refusal).
    Refused,
    /// The broker is shutting down.
    Shutdown,
}

/// The reason as the disconnect log line gives it.
impl std::fmt::Display for Ending<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Disconnect(code) => {
                write!(f, "client sent DISCONNECT ({})", code.description())
            }
            Ending::Lost => f.write_str("connection lost without DISCONNECT"),
            Ending::Closed(why) => write!(f, "closed by the broker: {why}"),
            Ending::Refused => f.write_str("CONNECT refused"),
            Ending::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// An enhanced-authentication exchange in progress (at CONNECT or re-authentication).
pub struct PendingAuth(pub Box<dyn AuthExchange>);

impl std::fmt::Debug for PendingAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingAuth")
    }
}

/// What an accepted CONNECT says about its connection (see [`Connection::activate`]).
pub struct Settled {
    pub client_id: ByteStr,
    /// Zero: keep alive off.
    pub keep_alive_secs: u16,
    pub will: Option<Box<Will>>,
    pub connect_expiry_was_zero: bool,
    pub problem_information: bool,
    pub packet_bytes_max: Option<u32>,
    pub auth_method: Option<ByteStr>,
}

/// A connection's enhanced authentication (see [`Connection::auth_method`]).
#[derive(Debug)]
struct Enhanced {
    /// The Authentication Method from CONNECT: every AUTH must name the same one.
    method: ByteStr,
    /// The exchange under way, if any.
    exchange: Option<PendingAuth>,
}

#[derive(Debug)]
pub struct Connection {
    pub state: ConnState,
    pub version: ProtocolVersion,
    pub client_id: ByteStr,
    /// Zero: keep alive off.
    pub keep_alive_secs: u16,
    pub last_activity: Instant,
    /// Published if the connection ends without a normal DISCONNECT.
    /// Boxed: most connections have none, and this is held for every connection.
    pub will: Option<Box<Will>>,
    /// Client-to-broker topic aliases (v5): keys 1..=`Limits::topic_alias_max`, so at most
    /// that many (the caller checks the alias against the maximum first).
    topic_aliases: BTreeMap<u16, ByteStr>,
    /// Session Expiry Interval from CONNECT was 0 (v5): DISCONNECT may not raise it.
    pub connect_expiry_was_zero: bool,
    /// Request Problem Information (v5): false suppresses reason strings on acks.
    pub problem_information: bool,
    /// The client's Maximum Packet Size (v5).
    pub packet_bytes_max: Option<u32>,
    /// Enhanced authentication (v5): boxed, and absent for the many clients that never use it.
    enhanced: Option<Box<Enhanced>>,
    /// The listener and client certificate, from the driver.
    pub origin: Origin,
    /// The driver's verdict on the CONNECT's user name and password (a password file).
    pub password_valid: Option<bool>,
    /// Whom the client logged in as (set when its CONNECT is accepted).
    pub login: Login,
    /// The deadline of this connection's entry in the broker's keep-alive checks, if it has
    /// one (the entry is found by it; see `Broker::schedule_keep_alive`).
    keep_alive_check: Option<Instant>,
}

impl Connection {
    pub fn new(now: Instant, connect_timeout: Duration, origin: Origin) -> Connection {
        Connection {
            state: ConnState::AwaitingConnect {
                deadline: now + connect_timeout,
            },
            version: ProtocolVersion::V3_1_1,
            client_id: ByteStr::default(),
            keep_alive_secs: 0,
            last_activity: now,
            will: None,
            topic_aliases: BTreeMap::new(),
            connect_expiry_was_zero: true,
            problem_information: true,
            packet_bytes_max: None,
            enhanced: None,
            login: Login {
                listener: origin.listener,
                ..Login::default()
            },
            origin,
            password_valid: None,
            keep_alive_check: None,
        }
    }

    /// An accepted CONNECT settles what it says about the connection.
    pub fn activate(&mut self, session: SessionId, settled: Settled) {
        debug_assert!(
            matches!(self.state, ConnState::AwaitingConnect { .. }),
            "only a connection awaiting its CONNECT is activated"
        );
        self.state = ConnState::Active { session };
        self.client_id = settled.client_id;
        self.keep_alive_secs = settled.keep_alive_secs;
        self.will = settled.will;
        self.connect_expiry_was_zero = settled.connect_expiry_was_zero;
        self.problem_information = settled.problem_information;
        self.packet_bytes_max = settled.packet_bytes_max;
        // Only a finished exchange leads here (accept_connect follows its success).
        debug_assert!(!self.auth_in_progress(), "activated mid-exchange");
        self.enhanced = settled.auth_method.map(|method| {
            Box::new(Enhanced {
                method,
                exchange: None,
            })
        });
    }

    /// The packet just received was the client's latest activity (keep alive).
    pub fn touch(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// CONNECT names the protocol version (before it is checked: a refusal speaks it).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// Whom the client logs in as, once its credentials passed.
    pub fn set_login(&mut self, login: Login) {
        self.login = login;
    }

    /// The driver's verdict on the CONNECT's password.
    pub fn set_password_verdict(&mut self, valid: bool) {
        self.password_valid = Some(valid);
    }

    /// A login failed: the refusal waits for the fixed delay.
    pub fn refuse_later(&mut self, reason: ReasonCode, why: &'static str) {
        self.state = ConnState::Refusing { reason, why };
    }

    /// Enhanced authentication starts at CONNECT: the CONNECT waits for its end.
    pub fn begin_connect_auth(
        &mut self,
        method: ByteStr,
        exchange: Box<dyn AuthExchange>,
        connect: Connect,
    ) {
        let ConnState::AwaitingConnect { deadline } = self.state else {
            unreachable!("CONNECT is handled only while awaiting it");
        };
        self.enhanced = Some(Box::new(Enhanced {
            method,
            exchange: Some(PendingAuth(exchange)),
        }));
        self.state = ConnState::Authenticating {
            deadline,
            connect: Box::new(connect),
        };
    }

    /// Enhanced authentication at CONNECT succeeded as `user`: the CONNECT it held, to be
    /// accepted; the connection awaits it again until then.
    pub fn finish_connect_auth(&mut self, user: Option<ByteStr>) -> Box<Connect> {
        if let Some(enhanced) = &mut self.enhanced {
            enhanced.exchange = None;
        }
        let state = std::mem::replace(
            &mut self.state,
            ConnState::AwaitingConnect {
                deadline: self.last_activity,
            },
        );
        let ConnState::Authenticating { connect, deadline } = state else {
            unreachable!("finish_connect_auth runs while authenticating");
        };
        self.state = ConnState::AwaitingConnect { deadline };
        // The method names the user the ACL judges.
        self.login.user = user;
        connect
    }

    /// The Authentication Method from CONNECT (v5), if it named one: every AUTH must name
    /// the same.
    pub fn auth_method(&self) -> Option<&ByteStr> {
        self.enhanced.as_ref().map(|enhanced| &enhanced.method)
    }

    /// Whether an exchange (at CONNECT, or a re-authentication) is under way.
    pub fn auth_in_progress(&self) -> bool {
        self.enhanced
            .as_ref()
            .is_some_and(|enhanced| enhanced.exchange.is_some())
    }

    /// The next step of the exchange under way, given the client's data; `None` if none is.
    pub fn auth_step(&mut self, data: &[u8]) -> Option<AuthStep> {
        let PendingAuth(exchange) = self.enhanced.as_mut()?.exchange.as_mut()?;
        Some(exchange.step(data))
    }

    /// A re-authentication starts (or one ends: `None`). Only a connection whose CONNECT
    /// named a method has one (the caller checked).
    pub fn set_auth(&mut self, exchange: Option<Box<dyn AuthExchange>>) {
        let enhanced = self.enhanced.as_mut();
        debug_assert!(enhanced.is_some(), "re-authentication without a method");
        if let Some(enhanced) = enhanced {
            enhanced.exchange = exchange.map(PendingAuth);
        }
    }

    /// The topic a client-to-broker alias stands for.
    pub fn aliased_topic(&self, alias: u16) -> Option<&ByteStr> {
        self.topic_aliases.get(&alias)
    }

    /// Sets (or replaces) what `alias` stands for; `alias` is at most `max`.
    pub fn set_alias(&mut self, alias: u16, topic: ByteStr, max: u16) {
        assert!(alias > 0 && alias <= max, "alias {alias} outside 1..={max}");
        self.topic_aliases.insert(alias, topic);
    }

    pub fn session(&self) -> Option<SessionId> {
        match self.state {
            ConnState::Active { session } => Some(session),
            ConnState::AwaitingConnect { .. }
            | ConnState::Authenticating { .. }
            | ConnState::Refusing { .. } => None,
        }
    }

    /// Where the connection's entry in the broker's keep-alive checks sits, if it has one.
    pub fn keep_alive_check(&self) -> Option<Instant> {
        self.keep_alive_check
    }

    /// Records where the connection's keep-alive check now sits; returns where it sat.
    pub fn set_keep_alive_check(&mut self, at: Option<Instant>) -> Option<Instant> {
        std::mem::replace(&mut self.keep_alive_check, at)
    }

    /// When the keep-alive deadline passes without a packet, given the grace factor.
    pub fn keep_alive_deadline(&self, tenths: u32) -> Option<Instant> {
        if self.keep_alive_secs == 0 {
            return None;
        }
        let keep_alive = Duration::from_secs(u64::from(self.keep_alive_secs));
        Some(self.last_activity + keep_alive * tenths / 10)
    }
}
