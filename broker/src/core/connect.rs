//! Connection and session life cycle: CONNECT and CONNACK, takeover, keep alive, DISCONNECT,
//! wills, session expiry, and every way a connection ends.

use super::connection::{client_line, Ending};
use crate::planted::{self, PlantedBug};
use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use super::access::Login;
use super::alias::OutboundAliases;
use super::connection::{Connection, Settled};
use super::message::{owned, owned_properties, Message};
use super::session::{DeliveryParams, Session};
use super::time::Instant;
use super::{disconnect, fit, reason_string, Abbreviated, Broker, ConnId, SessionId, Timer};
use crate::codec::{
    ByteStr, ConnAck, Connect, Content, Disconnect, Packet, Properties, Property, ProtocolVersion,
    ReasonCode, Will,
};
use crate::topic::topic_levels;
use crate::types::QoS;

/// MQTT 3.1 limits client identifiers to 23 characters.
const V3_1_CLIENT_ID_BYTES_MAX: usize = 23;

/// What this broker grants of what a CONNECT asked for (see [`Broker::grant`]).
struct Granted {
    client_id: ByteStr,
    keep_alive: u16,
    /// The session expiry the client asked for (0 matters apart from the granted one: a v5
    /// DISCONNECT may not raise it from 0, [MQTT-3.14.2-2]).
    requested_expiry: u32,
    expiry_secs: u32,
    /// The CONNACK's properties so far.
    connack: Properties,
}

impl Broker {
    pub(super) fn handle_connect(&mut self, conn: ConnId, connect: Connect, now: Instant) {
        let version = connect.protocol;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.set_version(version);
        }
        if let Err((reason, why)) = self.check_connect(&connect) {
            self.refuse(conn, reason, why);
            return;
        }
        let login = match self.authenticate(conn, &connect) {
            Ok(login) => login,
            Err((reason, why)) => {
                self.refuse_login(conn, reason, why, now);
                return;
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.set_login(login);
        }
        if let Some(method) = connect.properties.authentication_method().cloned() {
            self.begin_connect_auth(conn, connect, method, now);
            return;
        }
        self.accept_connect(conn, connect, Properties::new(), now);
    }

    /// Applies a CONNECT that passed every check (and its authentication, whose closing
    /// properties are `auth_properties`): session, CONNACK, resumed messages. The steps, in
    /// order: what is granted, the refusals that must come before anything changes, takeover
    /// and clean start, the session, the connection, the CONNACK.
    pub(super) fn accept_connect(
        &mut self,
        conn: ConnId,
        mut connect: Connect,
        auth_properties: Properties,
        now: Instant,
    ) {
        let v5 = connect.protocol.is_v5();
        // Checked here, once the login is final (enhanced authentication names the user only
        // when it ends).
        let login = self
            .conns
            .get(&conn)
            .map(|c| c.login.clone())
            .unwrap_or_default();
        if !self.will_allowed(&login, &connect) {
            self.stats.publishes_denied += 1;
            self.refuse(
                conn,
                ReasonCode::NotAuthorized,
                "the will's topic is not writable by this client",
            );
            return;
        }
        let mut granted = self.grant(&connect);
        if let Err((reason, why)) = self.refusal_before_changes(&login, &granted, v5) {
            self.refuse(conn, reason, why);
            return;
        }
        let (resumed, taken_over) =
            self.end_or_take_over(conn, &granted.client_id, connect.clean_start, now);
        if resumed.is_none() && self.sessions.len() >= self.config.limits.sessions_max {
            let reason = match (v5, &self.config.features.server_reference) {
                (true, Some(_)) => ReasonCode::UseAnotherServer,
                (true, None) => ReasonCode::QuotaExceeded,
                (false, _) => ReasonCode::ServerUnavailable,
            };
            let why = "the broker holds its maximum number of sessions";
            self.refuse(conn, reason, why);
            return;
        }
        let params = self.delivery_params(&connect);
        let session_id = match resumed {
            Some(id) => id,
            None => self.new_session(&granted, params),
        };
        if v5 {
            self.announce_capabilities(&granted.client_id, &connect, &mut granted.connack);
        }
        // spec: [MQTT-4.12.0-5] (v5): the method (and the final data) in the CONNACK.
        granted.connack.0.extend(auth_properties.0);
        let will = connect.will.take(); // house-rules: another type (the CONNECT packet)
        let Some(login) = self.activate_connection(conn, session_id, &granted, &connect, will)
        else {
            return;
        };
        self.attach_session(session_id, conn, params, login, &granted, &connect);
        // spec: [MQTT-3.2.2-1] [MQTT-3.2.2-2] [MQTT-3.2.2-3] 3.1.1; [MQTT-3.2.2-2] [MQTT-3.2.2-3] 5.0
        let lost = !v5 && planted::active(PlantedBug::SessionPresentLostV3);
        let session_present = resumed.is_some() && !lost;
        self.send_connack(conn, session_present, granted, params.bridge);
        self.resume_session(session_id, taken_over, now);
    }

    /// After the CONNACK: what the session has in flight and queued goes out, then the
    /// retained messages its subscriptions still wait for.
    fn resume_session(&mut self, session_id: SessionId, taken_over: bool, now: Instant) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        #[cfg(feature = "planted-bugs")]
        if taken_over && planted::active(PlantedBug::TakeoverDropsInflight) {
            session.forget_resends();
        }
        #[cfg(not(feature = "planted-bugs"))]
        let _ = taken_over;
        session.resume(
            now,
            &self.config.limits,
            &mut self.out,
            &mut self.stats,
            &mut self.journal,
        );
        self.feed_retained(session_id, now);
    }

    /// The session takes the connection: options a plain 3.x client cannot have go, fresh
    /// topic aliases (spec: [MQTT-3.3.2-7]), no expiry or delayed will while connected.
    fn attach_session(
        &mut self,
        session_id: SessionId,
        conn: ConnId,
        params: DeliveryParams,
        login: Login,
        granted: &Granted,
        connect: &Connect,
    ) {
        let v5 = connect.protocol.is_v5();
        if !v5 && !connect.bridge {
            self.drop_options_it_cannot_have(session_id);
        }
        let client_alias_max = match v5 {
            true => connect.properties.topic_alias_maximum().unwrap_or(0),
            false => 0,
        };
        let alias_max = client_alias_max.min(self.config.limits.outbound_topic_alias_max);
        let session = self
            .sessions
            .get_mut(&session_id)
            .expect("session was just found or made");
        let aliases = OutboundAliases::new(alias_max);
        session.attach(conn, params, login, granted.expiry_secs, aliases);
        session.save(&mut self.journal);
        self.timers.cancel(&Timer::SessionExpiry(session_id));
        self.timers.cancel(&Timer::WillDelay(session_id));
    }

    /// What this broker grants of what CONNECT asked for: the client id (assigned if empty),
    /// keep alive and session expiry within their limits, with the CONNACK properties that
    /// tell a v5 client so.
    fn grant(&mut self, connect: &Connect) -> Granted {
        let v5 = connect.protocol.is_v5();
        let mut connack = Properties::new();
        let (client_id, assigned) = if connect.client_id.is_empty() {
            (self.assign_client_id(), true)
        } else {
            // A copy: the id lives as long as the session (and in every message it
            // publishes), and must not keep the CONNECT's read buffer alive with it.
            (owned(&connect.client_id), false)
        };
        if assigned && v5 {
            // spec: [MQTT-3.1.3-7] [MQTT-3.2.2-16]
            connack.push(Property::AssignedClientIdentifier(client_id.clone()));
        }
        let limits = &self.config.limits;
        let mut keep_alive = connect.keep_alive;
        let max = limits.keep_alive_max_secs;
        if v5 && max > 0 && (keep_alive == 0 || keep_alive > max) {
            keep_alive = max;
            connack.push(Property::ServerKeepAlive(max));
        }
        let requested_expiry = if v5 {
            connect.properties.session_expiry_interval().unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let expiry_secs = match limits.session_expiry_max_secs {
            max if requested_expiry > max => {
                if v5 {
                    connack.push(Property::SessionExpiryInterval(max));
                }
                max
            }
            _ => requested_expiry,
        };
        Granted {
            client_id,
            keep_alive,
            requested_expiry,
            expiry_secs,
            connack,
        }
    }

    /// The refusals that must come before anything changes: a refused CONNECT must not take
    /// over or end a session.
    fn refusal_before_changes(
        &mut self,
        login: &Login,
        granted: &Granted,
        v5: bool,
    ) -> Result<(), (ReasonCode, &'static str)> {
        if granted.expiry_secs > 0 && self.journal.full() {
            self.stats.persistent_work_refused_store_full += 1;
            let reason = if v5 {
                ReasonCode::QuotaExceeded
            } else {
                ReasonCode::ServerUnavailable
            };
            return Err((
                reason,
                "the broker's store is full: no persistent session now",
            ));
        }
        // A client id held by a session of another login (another user, or the same name on
        // another listener, where it may not be verified) is refused: taking it over would
        // end that client's connection and session, and resuming it would hand over a queue
        // routed under other read rights.
        let owner = self
            .by_client_id
            .get(&granted.client_id)
            .and_then(|id| self.sessions.get(id));
        if owner.is_some_and(|owner| !owner.login.admits(login)) {
            self.stats.logins_failed += 1;
            return Err((
                ReasonCode::NotAuthorized,
                "the client id belongs to a session of another login",
            ));
        }
        Ok(())
    }

    /// Session takeover (spec: [MQTT-3.1.4-2] 3.1.1, [MQTT-3.1.4-3] 5.0) and clean start:
    /// the session to resume, if any, and whether a connection was taken over.
    fn end_or_take_over(
        &mut self,
        conn: ConnId,
        client_id: &ByteStr,
        clean_start: bool,
        now: Instant,
    ) -> (Option<SessionId>, bool) {
        // The old connection is closed as an abnormal end, so its will follows the usual rules.
        let existing = self.by_client_id.get(client_id).copied();
        let mut taken_over = false;
        if let Some(old_conn) = existing
            .and_then(|s| self.sessions.get(&s))
            .and_then(|s| s.conn)
        {
            tracing::info!(%conn, %old_conn, %client_id, "session taken over");
            self.stats.takeovers += 1;
            taken_over = true;
            self.close(
                old_conn,
                Some(ReasonCode::SessionTakenOver),
                "session taken over by a new connection",
                true,
                now,
            );
        }
        // The close above may have ended the old session.
        let existing = self.by_client_id.get(client_id).copied();
        if let (Some(old), true) = (existing, clean_start) {
            // spec: [MQTT-3.1.2-6] 3.1.1, [MQTT-3.1.2-4] 5.0
            self.end_session(old, now);
        }
        let resumed = match clean_start {
            true => None,
            false => self.by_client_id.get(client_id).copied(),
        };
        (resumed, taken_over)
    }

    /// How to send to this client: our window lowered by its Receive Maximum, its Maximum
    /// Packet Size, whether it is a bridge.
    fn delivery_params(&self, connect: &Connect) -> DeliveryParams {
        let limits = &self.config.limits;
        let client_receive_max = connect.properties.receive_maximum().unwrap_or(u16::MAX);
        DeliveryParams {
            version: connect.protocol,
            inflight_max: limits.inflight_count_max.min(client_receive_max).max(1),
            packet_bytes_max: connect.properties.maximum_packet_size(),
            bridge: connect.bridge,
        }
    }

    fn new_session(&mut self, granted: &Granted, params: DeliveryParams) -> SessionId {
        let id = SessionId(self.next_session_id);
        self.next_session_id += 1;
        let login = Login::default(); // the connection's, given at `Session::attach`
        let session = Session::new(
            granted.client_id.clone(),
            login,
            params,
            granted.expiry_secs,
        );
        self.sessions.insert(id, Box::new(session));
        self.by_client_id.insert(granted.client_id.clone(), id);
        id
    }

    /// The v5 CONNACK properties that say what this broker supports and allows.
    fn announce_capabilities(
        &self,
        client_id: &ByteStr,
        connect: &Connect,
        connack: &mut Properties,
    ) {
        let limits = &self.config.limits;
        if limits.receive_maximum_count != u16::MAX {
            connack.push(Property::ReceiveMaximum(limits.receive_maximum_count));
        }
        connack.push(Property::MaximumPacketSize(
            limits.packet_bytes_max.min(u32::MAX as usize) as u32,
        ));
        if limits.topic_alias_max > 0 {
            connack.push(Property::TopicAliasMaximum(limits.topic_alias_max));
        }
        let features = &self.config.features;
        if features.maximum_qos < QoS::ExactlyOnce {
            // spec: [MQTT-3.2.2-9] (v5)
            connack.push(Property::MaximumQoS(features.maximum_qos));
        }
        if !features.retain_available {
            connack.push(Property::RetainAvailable(false));
        }
        let requested = connect
            .properties
            .request_response_information()
            .unwrap_or(false);
        // spec: [MQTT-3.1.2-28] (v5): only when asked for.
        if let (true, Some(template)) = (requested, &features.response_information) {
            let text = template.replace("{client_id}", client_id.as_str());
            if let Ok(text) = ByteStr::new(&text) {
                connack.push(Property::ResponseInformation(text));
            }
        }
        // Said explicitly even where "available" is the default when absent, so a client's
        // log shows what this broker does.
        connack.push(Property::WildcardSubscriptionAvailable(true));
        connack.push(Property::SubscriptionIdentifierAvailable(true));
        connack.push(Property::SharedSubscriptionAvailable(
            features.shared_subscriptions,
        ));
    }

    /// The connection becomes active on its session: what CONNECT said about it (keep alive,
    /// `will`, v5 settings) and its keep-alive timer. Its login, for the session; `None` if
    /// the connection is gone.
    fn activate_connection(
        &mut self,
        conn: ConnId,
        session: SessionId,
        granted: &Granted,
        connect: &Connect,
        will: Option<Will>,
    ) -> Option<Login> {
        let connection = self.conns.get_mut(&conn)?;
        let properties = &connect.properties;
        let settled = Settled {
            client_id: granted.client_id.clone(),
            keep_alive_secs: granted.keep_alive,
            // Held until the connection ends (and the will delay after): copied out of the
            // CONNECT's read buffer, which may be megabytes of padding.
            will: will.map(|will| {
                Box::new(Will {
                    topic: owned(&will.topic),
                    payload: Bytes::copy_from_slice(&will.payload),
                    properties: owned_properties(&will.properties),
                    ..will
                })
            }),
            connect_expiry_was_zero: granted.requested_expiry == 0,
            problem_information: properties.request_problem_information().unwrap_or(true),
            packet_bytes_max: properties.maximum_packet_size(),
            auth_method: properties.authentication_method().cloned(),
        };
        connection.activate(session, settled);
        let login = connection.login.clone();
        let keep_alive = connection.keep_alive_deadline(self.config.limits.keep_alive_tenths);
        self.timers.cancel(&Timer::ConnectTimeout(conn));
        if let Some(deadline) = keep_alive {
            self.schedule_keep_alive(conn, deadline);
        }
        Some(login)
    }

    /// Counts the connection, logs it, and sends the CONNACK with what was granted.
    fn send_connack(
        &mut self,
        conn: ConnId,
        session_present: bool,
        granted: Granted,
        bridge: bool,
    ) {
        self.stats.connections_accepted += 1;
        if bridge {
            self.stats.bridge_connections_accepted += 1;
        }
        if let Some(connection) = self.conns.get(&conn) {
            client_line!(
                conn,
                connection,
                user = connection.login.user.as_ref().map_or("", |u| u.as_str()),
                bridge,
                session_present,
                keep_alive = granted.keep_alive,
                "client connected"
            );
        }
        self.out.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code: ReasonCode::Success,
                properties: granted.connack,
            }),
        );
    }

    /// The checks that can refuse a CONNECT before any state changes.
    fn check_connect(&self, connect: &Connect) -> Result<(), (ReasonCode, &'static str)> {
        let version = connect.protocol;
        let features = &self.config.features;
        if version.is_v5() && features.server_moved && features.server_reference.is_some() {
            return Err((ReasonCode::ServerMoved, "this broker has moved"));
        }
        if let Some(will) = &connect.will {
            if topic_levels(&will.topic) > self.config.limits.topic_levels_max {
                return Err((
                    ReasonCode::TopicNameInvalid,
                    "will topic has too many levels",
                ));
            }
            if will.qos > features.maximum_qos {
                // spec: [MQTT-3.2.2-12] (v5)
                return Err((
                    ReasonCode::QoSNotSupported,
                    "will QoS is above the broker's Maximum QoS",
                ));
            }
            if will.retain && !features.retain_available {
                // spec: [MQTT-3.2.2-13] (v5)
                return Err((
                    ReasonCode::RetainNotSupported,
                    "retained wills are not supported",
                ));
            }
        }
        if let Some(method) = connect.properties.authentication_method() {
            if !self
                .authenticators
                .iter()
                .any(|a| a.method() == method.as_str())
            {
                // spec: [MQTT-4.12.0-1] (v5)
                return Err((
                    ReasonCode::BadAuthenticationMethod,
                    "authentication method not supported",
                ));
            }
        }
        let id = &connect.client_id;
        if id.is_empty() {
            // spec: [MQTT-3.1.3-8] (3.1.1: empty id needs a clean session); 3.1 has no empty ids.
            if version == ProtocolVersion::V3_1
                || (version == ProtocolVersion::V3_1_1 && !connect.clean_start)
            {
                return Err((
                    ReasonCode::ClientIdentifierNotValid,
                    "an empty client id needs a clean session",
                ));
            }
        }
        let id_max = if version == ProtocolVersion::V3_1 {
            V3_1_CLIENT_ID_BYTES_MAX
        } else {
            self.config.limits.client_id_bytes_max
        };
        if id.len() > id_max {
            // spec: [MQTT-3.1.3-9] 3.1.1, [MQTT-3.1.3-8] 5.0
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                "client id is too long",
            ));
        }
        Ok(())
    }

    /// The Server Reference property that goes with `reason`, if it is a redirect and a
    /// reference is configured.
    pub(super) fn server_reference(&self, reason: ReasonCode) -> Option<Property> {
        let redirect = matches!(
            reason,
            ReasonCode::UseAnotherServer | ReasonCode::ServerMoved
        );
        let reference = self.config.features.server_reference.as_deref()?;
        redirect
            .then(|| ByteStr::new(reference).ok())
            .flatten()
            .map(Property::ServerReference)
    }

    /// A unique id for a client that sent an empty one (spec: [MQTT-3.1.3-6]): a counter,
    /// so runs are reproducible, skipping ids that clients chose themselves.
    fn assign_client_id(&mut self) -> ByteStr {
        loop {
            self.next_assigned_client_id += 1;
            let id = ByteStr::new(&format!("tern-{:012}", self.next_assigned_client_id))
                .expect("ASCII id is a valid MQTT string");
            if !self.by_client_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sends a refusing CONNACK (v5: with `why` as reason string) and closes
    /// (spec: [MQTT-3.2.2-4] [MQTT-3.2.2-5] 3.1.1, [MQTT-3.2.2-6] [MQTT-3.2.2-7] 5.0).
    pub(super) fn refuse(&mut self, conn: ConnId, reason: ReasonCode, why: &str) {
        debug_assert!(reason.is_error());
        let Some(connection) = self.forget_connection(conn, Ending::Refused) else {
            return;
        };
        client_line!(
            conn,
            connection,
            reason = reason.description(),
            why,
            "refusing CONNECT"
        );
        self.stats.connections_refused += 1;
        let mut properties = reason_string(connection.version, why);
        if let Some(reference) = self.server_reference(reason) {
            properties.push(reference);
        }
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: reason,
            properties,
        });
        self.out.send(
            conn,
            fit(connack, connection.version, connection.packet_bytes_max),
        );
        self.out.close(conn);
    }

    /// Closes a connection the broker decided to end, logging `why`. A v5 client that had its
    /// CONNACK is first sent DISCONNECT with `reason` and `why` as reason string;
    /// `publish_will` says whether this counts as an abnormal end.
    pub(super) fn close(
        &mut self,
        conn: ConnId,
        reason: Option<ReasonCode>,
        why: &str,
        publish_will: bool,
        now: Instant,
    ) {
        if reason.is_some_and(breaks_the_protocol) {
            self.warn_hostile(conn, why, now);
        }
        let Some(connection) = self.forget_connection(conn, Ending::Closed(why)) else {
            return;
        };
        if let Some(reason) = reason {
            // spec: [MQTT-3.14.0-1] (only after a successful CONNACK)
            if connection.version.is_v5() && connection.session().is_some() {
                let packet = disconnect(reason, reason_string(connection.version, why));
                self.out.send(
                    conn,
                    fit(packet, connection.version, connection.packet_bytes_max),
                );
            }
        }
        self.out.close(conn);
        self.detach(connection, publish_will, now);
    }

    /// The connection is gone: deal with its will and its session.
    pub(super) fn detach(&mut self, connection: Connection, publish_will: bool, now: Instant) {
        let Some(session_id) = connection.session() else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.detach();
        self.hand_back_shared(session_id, true, now);
        if let (true, Some(will)) = (publish_will, connection.will) {
            let delay = will.properties.will_delay_interval().unwrap_or(0);
            if delay == 0 || !connection.version.is_v5() {
                self.publish_will(&connection.client_id, *will, now);
            } else {
                let at = now + Duration::from_secs(u64::from(delay));
                let session = self.sessions.get_mut(&session_id).expect("checked above");
                session.hold_will(*will, at);
                self.timers.schedule(at, Timer::WillDelay(session_id));
            }
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        match session.expiry_secs() {
            0 => self.end_session(session_id, now),
            u32::MAX => session.save(&mut self.journal),
            secs => {
                let at = now + Duration::from_secs(u64::from(secs));
                session.expire_at(at);
                session.save(&mut self.journal);
                self.timers.schedule(at, Timer::SessionExpiry(session_id));
            }
        }
    }

    /// Removes a session and its subscriptions. A will still waiting for its delay is
    /// published now: the session ending comes first (spec: [MQTT-3.1.2-8], v5).
    pub(super) fn end_session(&mut self, session_id: SessionId, now: Instant) {
        // Shared messages it still holds go to any other member, connected or not: this
        // session will never deliver them.
        self.hand_back_shared(session_id, false, now);
        let Some(mut session) = self.sessions.remove(&session_id) else {
            return;
        };
        session.release(&mut self.stats);
        session.unsave(&mut self.journal);
        self.timers.cancel(&Timer::SessionExpiry(session_id));
        self.timers.cancel(&Timer::WillDelay(session_id));
        self.timers.cancel(&Timer::RetainedFeed(session_id));
        assert!(
            session.conn.is_none(),
            "ending a session that still has a connection"
        );
        for filter in session.filters() {
            self.forget_subscription(filter, session_id);
        }
        if self.by_client_id.get(&session.client_id) == Some(&session_id) {
            self.by_client_id.remove(&session.client_id);
        }
        tracing::debug!(client_id = %session.client_id, "session ended");
        if let Some(will) = session.take_held_will() {
            self.publish_will(&session.client_id, will, now);
        }
    }

    /// Publishes a will as a message from its client (spec: [MQTT-3.1.2-8] [MQTT-3.1.2-10]
    /// [MQTT-3.1.2-16] [MQTT-3.1.2-17] 3.1.1; [MQTT-3.1.2-14] [MQTT-3.1.2-15] [MQTT-3.1.3-10] 5.0).
    fn publish_will(&mut self, client_id: &ByteStr, will: Will, now: Instant) {
        tracing::info!(%client_id, topic = %Abbreviated(&will.topic), "publishing will");
        self.stats.wills_published += 1;
        let message = Message::new(
            Content::new(will.topic, will.payload),
            will.qos,
            will.retain,
            &will.properties,
            client_id.clone(),
            now,
        );
        self.route(Arc::new(message), now);
    }

    pub(super) fn handle_disconnect(&mut self, conn: ConnId, disconnect: Disconnect, now: Instant) {
        let Some(connection) = self.conns.get(&conn) else {
            return;
        };
        let session_id = connection.session();
        if let Some(expiry) = disconnect.properties.session_expiry_interval() {
            if connection.connect_expiry_was_zero && expiry != 0 {
                // A session that was to end with its connection cannot be extended at DISCONNECT.
                self.close(
                    conn,
                    Some(ReasonCode::ProtocolError),
                    "DISCONNECT sets a session expiry after CONNECT set 0",
                    true,
                    now,
                );
                return;
            }
            let capped = expiry.min(self.config.limits.session_expiry_max_secs);
            if let Some(session) = session_id.and_then(|id| self.sessions.get_mut(&id)) {
                session.set_expiry_secs(capped);
            }
        }
        // spec: [MQTT-3.14.4-3] 3.1.1 and 5.0: a normal DISCONNECT discards the will; 0x04 asks for it.
        let publish_will = disconnect.reason_code == ReasonCode::DisconnectWithWillMessage;
        let Some(connection) =
            self.forget_connection(conn, Ending::Disconnect(disconnect.reason_code))
        else {
            return;
        };
        self.out.close(conn);
        self.detach(connection, publish_will, now);
    }

    pub(super) fn check_keep_alive(&mut self, conn: ConnId, now: Instant) {
        let tenths = self.config.limits.keep_alive_tenths;
        let Some(deadline) = self
            .conns
            .get(&conn)
            .and_then(|c| c.keep_alive_deadline(tenths))
        else {
            return;
        };
        if now >= deadline {
            self.stats.keep_alive_timeouts += 1;
            // spec: [MQTT-3.1.2-24] 3.1.1, [MQTT-3.1.2-22] 5.0
            self.close(
                conn,
                Some(ReasonCode::KeepAliveTimeout),
                "keep alive expired",
                true,
                now,
            );
        } else {
            self.schedule_keep_alive(conn, deadline);
        }
    }

    pub(super) fn will_delay_passed(&mut self, session_id: SessionId, now: Instant) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if let Some(will) = session.take_due_will(now) {
            session.save(&mut self.journal);
            let client_id = session.client_id.clone();
            self.publish_will(&client_id, will, now);
        }
    }

    pub(super) fn session_expiry_passed(&mut self, session_id: SessionId, now: Instant) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        if session.has_expired(now) {
            self.end_session(session_id, now);
        }
    }
}

/// Reason codes of a close that the client brought on by breaking the protocol (not by being
/// slow, silent or replaced): worth a warning, rate-limited per address.
fn breaks_the_protocol(reason: ReasonCode) -> bool {
    matches!(
        reason,
        ReasonCode::MalformedPacket
            | ReasonCode::ProtocolError
            | ReasonCode::PacketTooLarge
            | ReasonCode::TopicNameInvalid
            | ReasonCode::TopicAliasInvalid
            | ReasonCode::ReceiveMaximumExceeded
    )
}
