//! SUBSCRIBE and UNSUBSCRIBE: the session's filters, the SUBACK and UNSUBACK codes, and
//! retained messages for new subscriptions.

use super::message::owned as owned_str;
use super::session::PendingRetained;
use super::subscription_tree::Subscription;
use super::time::Instant;
use super::{fit, reason_string, Abbreviated, Broker, ConnId, SessionId};
use crate::codec::{
    ByteStr, Packet, Properties, ProtocolVersion, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::planted::{self, PlantedBug};
use crate::topic::{parse_shared, topic_levels, validate_filter};
use crate::types::{PacketId, QoS};

fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// A shared subscription's share name and filter as owned strings.
fn owned((share, inner): (&str, &str)) -> (ByteStr, ByteStr) {
    let string = |s: &str| ByteStr::new(s).expect("a part of a valid MQTT string is valid");
    (string(share), string(inner))
}

impl Broker {
    /// Each filter is handled as its own SUBSCRIBE and answered in one SUBACK, in order
    /// (spec: [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-4] [MQTT-3.8.4-5] [MQTT-3.9.3-1] 3.1.1;
    /// [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.9.3-1] 5.0).
    pub(super) fn handle_subscribe(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        subscribe: Subscribe,
        now: Instant,
    ) {
        if subscribe
            .filters
            .iter()
            .any(|(filter, options)| options.no_local && filter.starts_with("$share/"))
        {
            // spec: [MQTT-3.8.3-4] (v5), checked before anything of this SUBSCRIBE is applied.
            self.close(
                conn,
                Some(ReasonCode::ProtocolError),
                "No Local set on a shared subscription",
                true,
                now,
            );
            return;
        }
        if !self.sessions.contains_key(&session_id) {
            return;
        }
        let subscription_id = subscribe.properties.subscription_identifiers().next();
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut refusals: Vec<String> = Vec::new();
        let mut walks = Vec::new();
        for (filter, options) in subscribe.filters {
            // Kept for the subscription's life: copied out of the SUBSCRIBE's read buffer.
            let filter = owned_str(&filter);
            match self.subscribe_filter(session_id, filter.clone(), options, subscription_id) {
                Ok((code, walk)) => {
                    reason_codes.push(code);
                    walks.extend(walk);
                }
                Err((code, why)) => {
                    tracing::info!(%conn, filter = %Abbreviated(&filter), why, "subscription refused");
                    // 3.1.1 has one failure code, 0x80, which the encoder maps every error to.
                    reason_codes.push(code);
                    refusals.push(format!("{}: {why}", Abbreviated(&filter)));
                }
            }
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.save(&mut self.journal);
        let version = session.params.version;
        self.send_suback(conn, version, subscribe.packet_id, reason_codes, &refusals);
        // Every matching retained message is sent, none dropped for room (they are state, not
        // a stream), in slices the client's window and socket pace (see `retained.rs`).
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        for walk in walks {
            // A repeated SUBSCRIBE restarts the filter's walk rather than running two.
            session.start_retained_walk(walk);
        }
        self.send_queued_to(session_id, now);
    }

    /// One filter of a SUBSCRIBE: refused (the code and why), or subscribed (the code, and
    /// the walk through retained messages it asks for, if any).
    fn subscribe_filter(
        &mut self,
        session_id: SessionId,
        filter: ByteStr,
        mut options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> Result<(ReasonCode, Option<PendingRetained>), (ReasonCode, String)> {
        let target = parse_shared(&filter).and_then(|shared| {
            let inner = shared.map_or(filter.as_str(), |(_, inner)| inner);
            validate_filter(inner)?;
            Ok(shared.map(owned))
        });
        let shared = match target {
            Ok(shared) => shared,
            Err(error) => return Err((ReasonCode::TopicFilterInvalid, error.to_string())),
        };
        self.subscription_refusal(session_id, &filter, shared.as_ref())?;
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Err((ReasonCode::UnspecifiedError, "the session is gone".into()));
        };
        // spec: [MQTT-3.2.2-10] (v5): a request above Maximum QoS is granted at the maximum.
        options.qos = options.qos.min(self.config.features.maximum_qos);
        if session.params.bridge {
            // A bridge's subscriptions are No Local and Retain As Published, as Mosquitto
            // makes its own: options the session keeps (and the store), so they hold while
            // the bridge is away and after a restart. No Local is not allowed on a shared
            // subscription; the shared choice skips the publishing bridge instead.
            options.no_local = shared.is_none();
            options.retain_as_published = true;
        }
        let subscription = Subscription {
            options,
            id: subscription_id,
        };
        // spec: [MQTT-3.8.4-3] both: a repeated filter replaces the subscription.
        let existed = session.subscribe(filter.clone(), subscription);
        let code = granted(options.qos);
        if let Some((share, inner)) = shared {
            self.shared.join(&share, &inner, session_id, subscription);
            // Retained messages are not sent for shared subscriptions (MQTT 5 section 4.8.2).
            return Ok((code, None));
        }
        self.subscriptions.insert(&filter, session_id, subscription);
        let send_retained = match options.retain_handling {
            // spec: [MQTT-3.3.1-9] (v5); [MQTT-3.3.1-6] 3.1.1
            RetainHandling::SendAtSubscribe => true,
            // spec: [MQTT-3.3.1-10] (v5)
            RetainHandling::SendAtNewSubscribe => !existed,
            // spec: [MQTT-3.3.1-11] (v5)
            RetainHandling::DoNotSend => false,
        };
        let walk = send_retained.then(|| PendingRetained {
            cursor: self.retained.cursor(filter),
            options,
            subscription_id,
        });
        Ok((code, walk))
    }

    /// Why a valid filter may not be subscribed to now: too deep, the ACL, shared
    /// subscriptions off, the store full, the session's subscription limit.
    fn subscription_refusal(
        &mut self,
        session_id: SessionId,
        filter: &ByteStr,
        shared: Option<&(ByteStr, ByteStr)>,
    ) -> Result<(), (ReasonCode, String)> {
        let Some(session) = self.sessions.get(&session_id) else {
            return Ok(()); // the caller finds it gone
        };
        let levels_max = self.config.limits.topic_levels_max;
        if topic_levels(filter) > levels_max {
            let why = format!("more than {levels_max} topic levels");
            return Err((ReasonCode::TopicFilterInvalid, why));
        }
        let inner = shared.map_or(filter.as_str(), |(_, inner)| inner.as_str());
        if !self
            .access
            .allows_subscribe(&session.login, &session.client_id, inner)
        {
            self.stats.subscriptions_denied += 1;
            let why = "not authorized by the ACL";
            return Err((ReasonCode::NotAuthorized, why.into()));
        }
        if shared.is_some() && !self.config.features.shared_subscriptions {
            let why = "shared subscriptions are turned off";
            return Err((ReasonCode::SharedSubscriptionsNotSupported, why.into()));
        }
        if session.is_stored() && self.journal.full() {
            self.stats.persistent_work_refused_store_full += 1;
            let why = "the broker's store is full";
            return Err((ReasonCode::QuotaExceeded, why.into()));
        }
        let limit = self.config.limits.subscriptions_per_session_max;
        if !session.is_subscribed(filter) && session.subscription_count() >= limit {
            let why = "subscription limit reached";
            return Err((ReasonCode::QuotaExceeded, why.into()));
        }
        Ok(())
    }

    /// The SUBACK, with the refusals explained where the client wants to hear why.
    fn send_suback(
        &mut self,
        conn: ConnId,
        version: ProtocolVersion,
        packet_id: PacketId,
        reason_codes: Vec<ReasonCode>,
        refusals: &[String],
    ) {
        let connection = self.conns.get(&conn);
        // spec: [MQTT-3.1.2-29] (v5): no reason string when the client asked for none.
        let explain = connection.is_some_and(|c| c.problem_information) && !refusals.is_empty();
        let properties = if explain {
            reason_string(version, &refusals.join("; "))
        } else {
            Properties::new()
        };
        let max = connection.and_then(|c| c.packet_bytes_max);
        let suback = Packet::SubAck(SubAck {
            packet_id,
            properties,
            reason_codes,
        });
        self.out.send(conn, fit(suback, version, max));
    }

    /// spec: [MQTT-3.10.4-1] [MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-3.10.4-6] 3.1.1;
    /// [MQTT-3.10.4-1] [MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-3.10.4-6] [MQTT-3.11.3-1] 5.0.
    pub(super) fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        unsubscribe: Unsubscribe,
    ) {
        let Some(version) = self.sessions.get(&session_id).map(|s| s.params.version) else {
            return;
        };
        let mut reason_codes = Vec::new();
        for filter in &unsubscribe.filters {
            let existed = self.sessions.get_mut(&session_id).is_some_and(|session| {
                session.stop_retained_walk(filter);
                session.unsubscribe(filter)
            });
            let planted = planted::active(PlantedBug::UnsubscribeLeavesWildcard)
                && (filter.contains('#') || filter.contains('+'));
            if existed && !planted {
                self.forget_subscription(filter, session_id);
            }
            reason_codes.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if let Some(session) = self.sessions.get_mut(&session_id) {
            session.save(&mut self.journal);
        }
        if version != ProtocolVersion::V5 {
            reason_codes.clear();
        }
        self.out.send(
            conn,
            Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
                properties: Properties::new(),
                reason_codes,
            }),
        );
    }

    /// Puts a filter the session has into the subscription tree or its shared group (the
    /// session's own map is the caller's). For restored sessions: SUBSCRIBE, which has
    /// already parsed the filter, does the same inline.
    pub(super) fn add_subscription(
        &mut self,
        filter: &ByteStr,
        session_id: SessionId,
        subscription: Subscription,
    ) {
        match parse_shared(filter) {
            Ok(Some(shared)) => {
                let (share, inner) = owned(shared);
                self.shared.join(&share, &inner, session_id, subscription);
            }
            _ => {
                self.subscriptions.insert(filter, session_id, subscription);
            }
        }
    }

    /// A plain 3.x client resumed a session made by an MQTT 5 client or a bridge: it cannot
    /// have No Local or Retain As Published (a 3.x SUBSCRIBE cannot ask for them, and
    /// [MQTT-3.3.1-9] clears RETAIN on established subscriptions), so they go.
    pub(super) fn drop_options_it_cannot_have(&mut self, session_id: SessionId) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        for (filter, subscription) in session.drop_v5_only_options() {
            self.add_subscription(&filter, session_id, subscription);
        }
    }

    /// Takes a filter the session no longer has out of the subscription tree or its shared
    /// group (the session's own map is the caller's).
    pub(super) fn forget_subscription(&mut self, filter: &ByteStr, session_id: SessionId) {
        match parse_shared(filter) {
            Ok(Some(shared)) => {
                let (share, inner) = owned(shared);
                self.shared.leave(&share, &inner, session_id);
            }
            _ => {
                self.subscriptions.remove(filter, session_id);
            }
        }
    }
}
