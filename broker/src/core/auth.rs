//! Enhanced authentication in the core (MQTT 5 section 4.12): the exchange a CONNECT with an
//! Authentication Method starts, AUTH packets during it and for re-authentication, and what
//! each step of the method (`crate::auth`) sends: AUTH 0x18, CONNACK, AUTH 0x00, or a refusal.

use bytes::Bytes;

use super::connection::ConnState;
use super::time::Instant;
use super::{fit, Broker, ConnId};
use crate::auth::AuthStep;
use crate::codec::{Auth, ByteStr, Connect, Packet, Properties, Property, ReasonCode};

/// The Authentication Method and, if any, Data properties of an AUTH or CONNACK.
fn auth_properties(method: &ByteStr, data: Option<Vec<u8>>) -> Properties {
    let mut properties = Properties::new();
    properties.push(Property::AuthenticationMethod(method.clone()));
    if let Some(data) = data {
        properties.push(Property::AuthenticationData(Bytes::from(data)));
    }
    properties
}

impl Broker {
    /// CONNECT named a method the broker has (`check_connect` made sure): begin the exchange
    /// with the CONNECT's Authentication Data.
    pub(super) fn begin_connect_auth(
        &mut self,
        conn: ConnId,
        connect: Connect,
        method: ByteStr,
        now: Instant,
    ) {
        let Some(authenticator) = self
            .authenticators
            .iter()
            .find(|a| a.method() == method.as_str())
        else {
            unreachable!("check_connect refuses unknown methods");
        };
        let mut exchange = authenticator.begin(&mut *self.entropy);
        let data = connect.properties.authentication_data().cloned();
        let step = exchange.step(data.as_deref().unwrap_or_default());
        let Some(connection) = self.conns.get_mut(&conn) else {
            return;
        };
        connection.begin_connect_auth(method, exchange, connect);
        self.connect_auth_step(conn, step, now);
    }

    /// An AUTH packet: the next message of the exchange at CONNECT, or a re-authentication.
    pub(super) fn handle_auth(&mut self, conn: ConnId, auth: Auth, now: Instant) {
        let Some(connection) = self.conns.get_mut(&conn) else {
            return;
        };
        let authenticating = matches!(connection.state, ConnState::Authenticating { .. });
        let Some(method) = connection.auth_method().cloned() else {
            // spec: [MQTT-4.12.0-6] (v5): no method at CONNECT, no AUTH exchange.
            self.protocol_error(
                conn,
                authenticating,
                "AUTH without an authentication method",
                now,
            );
            return;
        };
        if auth.properties.authentication_method() != Some(&method) {
            // spec: [MQTT-4.12.0-5] [MQTT-4.12.1-1] (v5): the method never changes.
            self.protocol_error(
                conn,
                authenticating,
                "AUTH names another authentication method",
                now,
            );
            return;
        }
        let in_progress = connection.auth_in_progress();
        match auth.reason_code {
            ReasonCode::ContinueAuthentication if in_progress => {}
            ReasonCode::ReAuthenticate if !authenticating && !in_progress => {
                let Some(authenticator) = self
                    .authenticators
                    .iter()
                    .find(|a| a.method() == method.as_str())
                else {
                    unreachable!("the connection authenticated with this method");
                };
                let exchange = authenticator.begin(&mut *self.entropy);
                if let Some(connection) = self.conns.get_mut(&conn) {
                    connection.set_auth(Some(exchange));
                }
            }
            other => {
                let why = format!("AUTH with reason {} out of turn", other.description());
                self.protocol_error(conn, authenticating, &why, now);
                return;
            }
        }
        let data = auth.properties.authentication_data().cloned();
        let Some(step) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.auth_step(data.as_deref().unwrap_or_default()))
        else {
            return;
        };
        if authenticating {
            self.connect_auth_step(conn, step, now);
        } else {
            self.reauth_step(conn, step, now);
        }
    }

    fn protocol_error(&mut self, conn: ConnId, before_connack: bool, why: &str, now: Instant) {
        if before_connack {
            self.refuse(conn, ReasonCode::ProtocolError, why);
        } else {
            self.close(conn, Some(ReasonCode::ProtocolError), why, true, now);
        }
    }

    /// Sends an AUTH on `conn`, within the client's Maximum Packet Size
    /// (spec: [MQTT-3.15.2-2] [MQTT-3.15.2-3], v5).
    fn send_auth(&mut self, conn: ConnId, reason_code: ReasonCode, properties: Properties) {
        let Some(connection) = self.conns.get(&conn) else {
            return;
        };
        let packet = Packet::Auth(Auth {
            reason_code,
            properties,
        });
        let (version, max) = (connection.version, connection.packet_bytes_max);
        self.out.send(conn, fit(packet, version, max));
    }

    fn connect_auth_step(&mut self, conn: ConnId, step: AuthStep, now: Instant) {
        let Some(connection) = self.conns.get_mut(&conn) else {
            return;
        };
        let method = connection
            .auth_method()
            .cloned()
            .expect("set when the exchange began");
        match step {
            AuthStep::Continue(data) => {
                // spec: [MQTT-4.12.0-2] (v5)
                self.send_auth(
                    conn,
                    ReasonCode::ContinueAuthentication,
                    auth_properties(&method, Some(data)),
                );
            }
            AuthStep::Success { user, data } => {
                let connect = connection.finish_connect_auth(ByteStr::new(&user).ok());
                tracing::info!(%conn, %user, method = %method, "enhanced authentication succeeded");
                self.accept_connect(conn, *connect, auth_properties(&method, data), now);
            }
            AuthStep::Failure { why } => {
                self.stats.authentications_failed += 1;
                // spec: [MQTT-4.12.0-4] (v5): refused, then closed.
                self.refuse(conn, ReasonCode::NotAuthorized, &why);
            }
        }
    }

    fn reauth_step(&mut self, conn: ConnId, step: AuthStep, now: Instant) {
        let Some(connection) = self.conns.get_mut(&conn) else {
            return;
        };
        let method = connection
            .auth_method()
            .cloned()
            .expect("checked by handle_auth");
        match step {
            AuthStep::Continue(data) => self.send_auth(
                conn,
                ReasonCode::ContinueAuthentication,
                auth_properties(&method, Some(data)),
            ),
            AuthStep::Success { user, data } => {
                connection.set_auth(None);
                tracing::info!(%conn, %user, method = %method, "re-authentication succeeded");
                self.send_auth(conn, ReasonCode::Success, auth_properties(&method, data));
            }
            AuthStep::Failure { why } => {
                self.stats.authentications_failed += 1;
                // spec: [MQTT-4.12.1-2] (v5)
                self.close(conn, Some(ReasonCode::NotAuthorized), &why, true, now);
            }
        }
    }
}
