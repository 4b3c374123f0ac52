//! Who a client is and what it may do: each listener's login policy, the facts the driver
//! reports about a connection (the listener, a verified client certificate, a password
//! file's verdict), the fixed delay before a failed login is answered, and the ACL checks on
//! SUBSCRIBE filters, PUBLISH and will topics, and every delivery.
//!
//! Checking a password against a password file is slow on purpose, so the driver does it off
//! the core's task and reports only the verdict ([`Broker::credentials_checked`]); what to do
//! with it stays here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::connection::ConnState;
use super::session::Session;
use super::time::Instant;
use super::{Broker, ConnId, Timer};
use crate::auth::acl::{Access, Acl, Principal};
use crate::auth::password_matches;
use crate::codec::{ByteStr, Connect, ReasonCode};

/// A failed login is answered this long after its CONNECT, however long the check took, so
/// a client can try only one password per second per connection, and the answer's timing
/// does not tell an unknown user from a wrong password.
pub const LOGIN_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// How one listener logs clients in (Mosquitto's `per_listener_settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAccess {
    /// Accept clients that send no user name.
    pub allow_anonymous: bool,
    /// The driver checks user names and passwords against a password file and reports the
    /// verdict: a user name without a good verdict is refused.
    pub password_file: bool,
    /// The verified client certificate's identity is the user name (and one is required).
    pub use_identity_as_username: bool,
}

/// Where a connection came from, as the driver saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The listener's index in the configuration.
    pub listener: u16,
    /// The identity in the client's verified certificate (its CN, else its first SAN).
    pub identity: Option<String>,
    /// The client's address (for the log; never for a decision).
    pub peer: Option<SocketAddr>,
}

impl Origin {
    /// The address as the log shows it (`-` when unknown, as in tests).
    pub fn peer_text(&self) -> String {
        self.peer
            .map_or_else(|| "-".to_owned(), |peer| peer.to_string())
    }
}

/// Whom a session's client logged in as, and where: its rights are judged by these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    pub listener: u16,
    pub user: Option<ByteStr>,
    /// Read from a session record written before logins were stored: the first login that
    /// resumes the session becomes its owner.
    pub unknown: bool,
    /// The client is another broker's bridge (the 3.x bridge bit); not stored.
    pub bridge: bool,
}

impl Login {
    /// Whether `other` may take over or resume a session that `self` logged into: the same
    /// user on the same listener (or a session whose login was never recorded).
    pub fn admits(&self, other: &Login) -> bool {
        self.unknown || (self.user == other.user && self.listener == other.listener)
    }
}

/// The ACL of each listener; a listener without one allows everything.
#[derive(Debug, Default)]
pub(super) struct AccessRules {
    acls: Vec<Option<Arc<Acl>>>,
}

impl AccessRules {
    /// The ACL that judges `login`. A login on a listener the broker does not have (a session
    /// stored before the listeners were changed) is judged by an empty ACL, which allows
    /// nothing, as soon as any listener has an ACL: an unknown listener fails closed.
    fn acl(&self, login: &Login) -> Option<&Acl> {
        static NOTHING_ALLOWED: std::sync::OnceLock<Acl> = std::sync::OnceLock::new();
        match self.acls.get(usize::from(login.listener)) {
            Some(acl) => acl.as_deref(),
            None if self.acls.iter().any(Option::is_some) => {
                Some(NOTHING_ALLOWED.get_or_init(Acl::default))
            }
            None => None,
        }
    }

    /// Whether any listener has an ACL (without one, only the `$SYS`/`$share` rule applies).
    pub fn any(&self) -> bool {
        self.acls.iter().any(Option::is_some)
    }

    /// Whether the client `client_id` logged in as `login` may publish to, or receive a
    /// message published to, `topic`.
    pub fn allows(&self, login: &Login, client_id: &str, topic: &str, access: Access) -> bool {
        if access == Access::Write
            && reserved_for_the_broker(topic)
            && !(login.bridge && is_bridge_state_topic(topic, client_id))
        {
            return false;
        }
        self.acl(login).is_none_or(|acl| {
            let who = Principal {
                client_id,
                user: login.user.as_deref(),
            };
            acl.allows(who, topic, access)
        })
    }

    /// Whether `session`'s client may receive a message published to `topic`.
    pub fn may_read(&self, session: &Session, topic: &str) -> bool {
        self.allows(&session.login, &session.client_id, topic, Access::Read)
    }

    /// Whether it may subscribe to `filter` (without any `$share/{group}/` prefix).
    pub fn allows_subscribe(&self, login: &Login, client_id: &str, filter: &str) -> bool {
        self.acl(login).is_none_or(|acl| {
            let who = Principal {
                client_id,
                user: login.user.as_deref(),
            };
            acl.allows_subscribe(who, filter)
        })
    }
}

/// Topics no client may publish to: the broker's own `$SYS` tree, and `$share/...`, which
/// names shared subscriptions, never a topic (a bridge may still publish its own state topic,
/// see `is_bridge_state_topic`).
pub fn reserved_for_the_broker(topic: &str) -> bool {
    let first = topic.split('/').next().unwrap_or_default();
    first == "$SYS" || first == "$share"
}

/// The one `$SYS` topic a client may publish to: a Mosquitto bridge announces its own state
/// (and sets its will) on `$SYS/broker/connection/{its client id}/state`, which Tern never
/// publishes itself and Mosquitto accepts from bridges. An ACL still applies (wildcards do not
/// match `$SYS`: a bridge needs a rule for it there).
fn is_bridge_state_topic(topic: &str, client_id: &str) -> bool {
    topic
        .strip_prefix("$SYS/broker/connection/")
        .and_then(|rest| rest.strip_suffix("/state"))
        .is_some_and(|id| id == client_id)
}

impl Broker {
    /// Installs (or, with `None`, removes) the ACL of `listener`: at start and when the
    /// operator reloads it. Takes effect for the next check: sessions keep their
    /// subscriptions, and what is routed from now on follows the new rules (messages already
    /// queued or in flight for a session were checked when they were routed, and are sent).
    pub fn set_acl(&mut self, listener: u16, acl: Option<Arc<Acl>>) {
        let index = usize::from(listener);
        if self.access.acls.len() <= index {
            self.access.acls.resize(index + 1, None);
        }
        self.access.acls[index] = acl;
    }

    /// The driver checked the user name and password of the CONNECT it is about to hand
    /// over on `conn` against the listener's password file.
    pub fn credentials_checked(&mut self, conn: ConnId, valid: bool) {
        if let Some(connection) = self.conns.get_mut(&conn) {
            connection.set_password_verdict(valid);
        }
    }

    fn listener_access(&self, listener: u16) -> ListenerAccess {
        self.config
            .listeners
            .get(usize::from(listener))
            .cloned()
            .unwrap_or(ListenerAccess {
                allow_anonymous: self.config.allow_anonymous,
                password_file: false,
                use_identity_as_username: false,
            })
    }

    /// Who the client of `conn` is (its user name, if any), or why it is refused.
    pub(super) fn authenticate(
        &self,
        conn: ConnId,
        connect: &Connect,
    ) -> Result<Login, (ReasonCode, &'static str)> {
        let connection = self
            .conns
            .get(&conn)
            .ok_or((ReasonCode::UnspecifiedError, "the connection is gone"))?;
        let listener = connection.origin.listener;
        let policy = self.listener_access(listener);
        let login = |user: Option<ByteStr>| Login {
            listener,
            user,
            unknown: false,
            bridge: connect.bridge,
        };
        let enhanced = connect.properties.authentication_method().is_some();
        if enhanced && policy.use_identity_as_username {
            return Err((
                ReasonCode::NotAuthorized,
                "this listener takes the user name from the client certificate",
            ));
        }
        if enhanced {
            // Enhanced authentication: the method decides, and names the user when it ends.
            return Ok(login(connect.username.clone()));
        }
        if policy.use_identity_as_username {
            let identity = connection.origin.identity.as_deref().ok_or((
                ReasonCode::NotAuthorized,
                "this listener needs a client certificate",
            ))?;
            let user = ByteStr::new(identity).map_err(|_| {
                (
                    ReasonCode::NotAuthorized,
                    "the certificate's identity is not a valid MQTT string",
                )
            })?;
            return Ok(login(Some(user)));
        }
        let bad_password = (
            ReasonCode::BadUserNameOrPassword,
            "bad user name or password",
        );
        match &connect.username {
            None if policy.allow_anonymous => Ok(login(None)),
            None => Err((ReasonCode::NotAuthorized, "anonymous access is disabled")),
            Some(user) if policy.password_file => match connection.password_valid {
                Some(true) => Ok(login(Some(user.clone()))),
                _ => Err(bad_password),
            },
            Some(user) if !self.config.users.is_empty() => {
                let expected = self.config.users.get(user.as_str()).map(String::as_str);
                if password_matches(expected, connect.password.as_deref()) {
                    Ok(login(Some(user.clone())))
                } else {
                    Err(bad_password)
                }
            }
            // No password file: the name is taken as given (for the ACL), as Mosquitto does,
            // except a SCRAM user's, which only its proof may claim.
            Some(user)
                if policy.allow_anonymous
                    && !self.config.scram.users.contains_key(user.as_str()) =>
            {
                Ok(login(Some(user.clone())))
            }
            // Nothing to check the name against: it is not a known user.
            Some(_) => Err(bad_password),
        }
    }

    /// Whether `login` may set `connect`'s will: its topic must be writable.
    pub(super) fn will_allowed(&self, login: &Login, connect: &Connect) -> bool {
        connect.will.as_ref().is_none_or(|will| {
            self.access
                .allows(login, &connect.client_id, &will.topic, Access::Write)
        })
    }

    /// Refuses a failed login after [`LOGIN_FAILURE_DELAY`]; until then the connection
    /// ignores whatever else the client sends.
    pub(super) fn refuse_login(
        &mut self,
        conn: ConnId,
        reason: ReasonCode,
        why: &'static str,
        now: Instant,
    ) {
        let Some(connection) = self.conns.get_mut(&conn) else {
            return;
        };
        self.stats.logins_failed += 1;
        tracing::info!(%conn, client_id = %connection.client_id, addr = %connection.origin.peer_text(), why, "login failed");
        connection.refuse_later(reason, why);
        self.timers.cancel(&Timer::ConnectTimeout(conn));
        self.timers
            .schedule(now + LOGIN_FAILURE_DELAY, Timer::LoginRefusal(conn));
    }

    /// The delay of a failed login has passed: send the refusal.
    pub(super) fn login_refusal_due(&mut self, conn: ConnId) {
        let Some(connection) = self.conns.get(&conn) else {
            return;
        };
        if let ConnState::Refusing { reason, why } = connection.state {
            self.refuse(conn, reason, why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_topics_are_reserved() {
        assert!(reserved_for_the_broker("$SYS"));
        assert!(reserved_for_the_broker("$SYS/broker/uptime"));
        assert!(reserved_for_the_broker("$share/g/t"));
        assert!(reserved_for_the_broker("$SYS/broker/clients/connected"));
        assert!(is_bridge_state_topic(
            "$SYS/broker/connection/edge/state",
            "edge"
        ));
        assert!(!is_bridge_state_topic(
            "$SYS/broker/connection/edge/state",
            "other"
        ));
        assert!(!is_bridge_state_topic(
            "$SYS/broker/connection/edge",
            "edge"
        ));
        let rules = AccessRules::default();
        let login = |bridge| Login {
            bridge,
            ..Login::default()
        };
        let own = "$SYS/broker/connection/edge/state";
        assert!(rules.allows(&login(true), "edge", own, Access::Write));
        assert!(!rules.allows(&login(false), "edge", own, Access::Write));
        assert!(!rules.allows(&login(true), "other", own, Access::Write));
        assert!(!reserved_for_the_broker("$SYSTEM/x"));
        assert!(!reserved_for_the_broker("a/$SYS"));
        assert!(!reserved_for_the_broker("$other/x"));
    }
}
