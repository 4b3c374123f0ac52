//! Inbound PUBLISH and PUBREL (the QoS flows from client to broker) and routing a message to
//! every matching session.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use super::durable::StoreOp;
use super::message::{owned, Message};
use super::retained::RetainOutcome;
use super::session::Queued;
use super::shared::GroupId;
use super::time::Instant;
use super::{reason_string, Broker, ConnId, SessionId};
use crate::auth::acl::Access;
use crate::codec::{Ack, ByteStr, Content, Packet, Properties, Publish, ReasonCode};
use crate::topic::topic_levels;
use crate::types::{PacketId, QoS};

/// Where one message goes: the sessions with matching subscriptions and the shared groups.
struct Plan {
    deliveries: BTreeMap<SessionId, Delivery>,
    groups: Vec<GroupId>,
    /// Sessions whose subscriptions matched but which may not read the topic.
    denied: u64,
}

/// What one session gets from one message, merged over all its matching subscriptions.
struct Delivery {
    qos: QoS,
    retain_as_published: bool,
    subscription_ids: Vec<u32>,
}

impl Broker {
    /// An inbound PUBLISH, step by step: the protocol checks (closing the connection on a
    /// violation), the ACL, whether the broker can take it (memory, store), then the QoS flow.
    pub(super) fn handle_publish(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        mut publish: Publish,
        now: Instant,
    ) {
        if let Err((reason, why)) = self.check_publish(conn, &mut publish) {
            self.close(conn, Some(reason), &why, true, now);
            return;
        }
        let Some(connection) = self.conns.get(&conn) else {
            return;
        };
        let client_id = connection.client_id.clone();
        // Only a `$` topic can be reserved, and only an ACL can deny anything else.
        let judged = self.access.any() || publish.topic().starts_with('$');
        if judged
            && !self.access.allows(
                &connection.login,
                &client_id,
                publish.topic(),
                Access::Write,
            )
        {
            self.deny_publish(conn, publish.qos, publish.packet_id);
            return;
        }
        let (qos, packet_id) = (publish.qos, publish.packet_id);
        let message = Arc::new(Message::new(
            publish.content,
            publish.qos,
            publish.retain,
            &publish.properties,
            client_id,
            now,
        ));
        self.purge_expired_retained(now);
        let plan = self.plan(&message);
        let owned_already = qos == QoS::ExactlyOnce
            && packet_id.is_some_and(|id| {
                self.sessions
                    .get(&session_id)
                    .is_some_and(|s| s.awaits_pubrel(id))
            });
        if qos != QoS::AtMostOnce && !owned_already {
            let id = packet_id.expect("the codec guarantees a packet id for QoS > 0");
            if let Err(why) = self.can_take(&message, &plan, session_id) {
                self.refuse_publish(conn, qos, id, why, now);
                return;
            }
        }
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => self.route_planned(message, plan, now),
            (QoS::AtLeastOnce, Some(id)) => {
                // spec: [MQTT-4.3.2-2]: the PUBACK hands ownership to the broker.
                self.route_planned(message, plan, now);
                self.out.send(conn, Packet::PubAck(Ack::new(id)));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.take_exactly_once(conn, session_id, id, message, plan, now)
            }
            (_, None) => unreachable!("the codec guarantees a packet id for QoS > 0"),
        }
    }

    /// The rules a PUBLISH from a client must keep (a violation closes the connection): the
    /// broker's Maximum QoS and Retain Available, v5 subscription identifiers and topic
    /// aliases (an alias is resolved into `publish.topic` here), the topic's depth.
    fn check_publish(
        &mut self,
        conn: ConnId,
        publish: &mut Publish,
    ) -> Result<(), (ReasonCode, String)> {
        let features = &self.config.features;
        if publish.qos > features.maximum_qos {
            let why = "PUBLISH above the broker's Maximum QoS";
            return Err((ReasonCode::QoSNotSupported, why.into()));
        }
        if publish.retain && !features.retain_available {
            let why = "retained messages are not supported";
            return Err((ReasonCode::RetainNotSupported, why.into()));
        }
        let Some(connection) = self.conns.get_mut(&conn) else {
            return Ok(()); // gone: the caller finds nothing to do
        };
        if connection.version.is_v5() {
            if publish
                .properties
                .subscription_identifiers()
                .next()
                .is_some()
            {
                // spec: [MQTT-3.3.4-6]: subscription identifiers flow only from the server.
                let why = "PUBLISH from a client carries a subscription identifier";
                return Err((ReasonCode::ProtocolError, why.into()));
            }
            if let Some(alias) = publish.properties.topic_alias() {
                if alias > self.config.limits.topic_alias_max {
                    // spec: [MQTT-3.3.2-12]: only aliases up to our maximum are accepted.
                    let why = "topic alias above the maximum";
                    return Err((ReasonCode::TopicAliasInvalid, why.into()));
                }
                if alias == 0 {
                    // spec: [MQTT-3.3.2-8]: 0 is not an alias (the codec refuses it already;
                    // checked here too because `Connection::set_alias` relies on it).
                    let why = "topic alias 0";
                    return Err((ReasonCode::TopicAliasInvalid, why.into()));
                }
                if publish.topic().is_empty() {
                    let Some(topic) = connection.aliased_topic(alias) else {
                        let why = "unknown topic alias with an empty topic";
                        return Err((ReasonCode::ProtocolError, why.into()));
                    };
                    publish.content = publish.content.with_topic(topic.clone());
                } else {
                    let max = self.config.limits.topic_alias_max;
                    // A copy: the alias lives as long as the connection, and a slice would
                    // keep the whole read buffer it came in alive with it.
                    connection.set_alias(alias, owned(publish.topic()), max);
                }
            }
        }
        let levels_max = self.config.limits.topic_levels_max;
        if topic_levels(publish.topic()) > levels_max {
            let why = format!("PUBLISH topic has more than {levels_max} levels");
            return Err((ReasonCode::TopicNameInvalid, why));
        }
        Ok(())
    }

    /// Whether the broker can take ownership of a QoS 1/2 message: memory for every copy it
    /// may keep, and the store when it must be durable. Counted when not.
    fn can_take(
        &mut self,
        message: &Message,
        plan: &Plan,
        session_id: SessionId,
    ) -> Result<(), &'static str> {
        if !self.can_hold(message, plan) {
            self.stats.publishes_refused_memory += 1;
            return Err("broker memory budget spent");
        }
        if self.journal.full() && self.needs_store(message, plan, session_id) {
            self.stats.publishes_refused_store_full += 1;
            return Err("the broker's store is full");
        }
        Ok(())
    }

    /// QoS 2 from the client: the message is routed once, when its id is first seen, and the
    /// id held until PUBREL (spec: [MQTT-4.3.3-2]); every copy is answered with PUBREC.
    fn take_exactly_once(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        id: PacketId,
        message: Arc<Message>,
        plan: Plan,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.awaits_pubrel(id) {
            // A resend of a message we already own: acknowledge, never route twice.
            self.out.send(conn, Packet::PubRec(Ack::new(id)));
            return;
        }
        // A 3.1.1 client cannot be told a limit, and common clients (MQTT.js, Paho C) keep
        // publishing until their packet ids run out: only ids are held here, so the 16-bit id
        // space is the bound. A v5 client was told Receive Maximum.
        let v5 = session.params.version.is_v5();
        let receive_max = usize::from(self.config.limits.receive_maximum_count);
        if v5 && session.awaiting_pubrel_count() >= receive_max {
            self.close(
                conn,
                Some(ReasonCode::ReceiveMaximumExceeded),
                "more unreleased QoS 2 messages than Receive Maximum",
                true,
                now,
            );
            return;
        }
        session.await_pubrel(id);
        session.save_incoming_id(id, true, &mut self.journal);
        self.route_planned(message, plan, now);
        self.out.send(conn, Packet::PubRec(Ack::new(id)));
    }

    /// Whether the broker-wide memory budget can hold every copy of `message` that `plan`
    /// may keep (retained, in flight, queued), so that once it is acknowledged no delivery of
    /// it is dropped for memory.
    fn can_hold(&self, message: &Message, plan: &Plan) -> bool {
        let queue_qos0 = self.config.limits.queue_qos0;
        let held_copies = plan
            .deliveries
            .iter()
            .filter(|(id, delivery)| {
                message.qos.min(delivery.qos) != QoS::AtMostOnce
                    || (queue_qos0 && self.sessions.get(id).is_some_and(|s| s.conn.is_none()))
            })
            .count()
            + plan.groups.len()
            + usize::from(message.retain);
        let bytes = held_copies.saturating_mul(message.charged_bytes());
        self.stats.held_bytes().saturating_add(bytes) <= self.config.limits.memory_bytes_max
    }

    /// Drops retained messages whose expiry has passed, so they hold no room.
    fn purge_expired_retained(&mut self, now: Instant) {
        let freed = self.retained.purge_expired(now);
        self.stats.retained_bytes -= freed;
        self.forget_expired_retained();
    }

    /// Takes retained messages that expired out of the durable store too. Lazily: nobody
    /// waits for it, and one restored after a crash is found expired again.
    pub(super) fn forget_expired_retained(&mut self) {
        for topic in self.retained.take_expired() {
            self.journal
                .record_lazily(StoreOp::DeleteRetained { topic });
        }
    }

    /// Whether taking `message` changes durable state: it is retained, it is a QoS 2 message
    /// of a stored session (its id is stored until PUBREL), or it goes at QoS 1/2 to a stored
    /// session (or to a shared group, whose chosen member may be one).
    fn needs_store(&self, message: &Message, plan: &Plan, publisher: SessionId) -> bool {
        let stored = |id: &SessionId| self.sessions.get(id).is_some_and(|s| s.is_stored());
        message.retain
            || (message.qos == QoS::ExactlyOnce && stored(&publisher))
            || !plan.groups.is_empty()
            || plan
                .deliveries
                .iter()
                .any(|(id, d)| message.qos.min(d.qos) != QoS::AtMostOnce && stored(id))
    }

    /// A QoS 1/2 PUBLISH the broker cannot take now (memory budget spent, store full). It is
    /// not acknowledged as accepted: v5 gets 0x97 Quota exceeded (the flow ends there; the
    /// client may try later), 3.1.1, which has no refusal code, loses the connection, so the
    /// message stays the client's to resend when it reconnects. Closing rather than pausing
    /// the reads keeps a client that is also a subscriber from deadlocking with its own
    /// acknowledgements.
    fn refuse_publish(&mut self, conn: ConnId, qos: QoS, id: PacketId, why: &str, now: Instant) {
        let Some(connection) = self.conns.get(&conn) else {
            return;
        };
        if !connection.version.is_v5() {
            let why = format!("{why}: cannot take the message");
            self.close(conn, None, &why, true, now);
            return;
        }
        let ack = Ack {
            packet_id: id,
            reason_code: ReasonCode::QuotaExceeded,
            properties: reason_string(connection.version, why),
        };
        let packet = match qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        };
        self.out.send(conn, packet);
    }

    /// A PUBLISH the client may not make (ACL, or a topic of the broker's): the message is
    /// dropped (counted). v5 is told 0x87 Not authorized; 3.x, which has no refusal code, is
    /// acknowledged as usual, as Mosquitto does. A QoS 2 id is not kept: a PUBREL for it gets
    /// PUBCOMP anyway in 3.x, and a v5 flow ends at the refusing PUBREC.
    fn deny_publish(&mut self, conn: ConnId, qos: QoS, id: Option<PacketId>) {
        self.stats.publishes_denied += 1;
        let (Some(connection), Some(id)) = (self.conns.get(&conn), id) else {
            return;
        };
        let version = connection.version;
        let ack = if version.is_v5() {
            Ack {
                packet_id: id,
                reason_code: ReasonCode::NotAuthorized,
                properties: reason_string(version, "not authorized to publish to this topic"),
            }
        } else {
            Ack::new(id)
        };
        let packet = match qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        };
        self.out.send(conn, packet);
    }

    /// PUBREL from the client: the QoS 2 message is released; answer PUBCOMP.
    pub(super) fn handle_pubrel(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        packet_id: PacketId,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let known = session.release_pubrel(packet_id);
        if known {
            session.save_incoming_id(packet_id, false, &mut self.journal);
        }
        let v5 = session.params.version.is_v5();
        let reason_code = if known || !v5 {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.out.send(
            conn,
            Packet::PubComp(Ack {
                packet_id,
                reason_code,
                properties: Properties::new(),
            }),
        );
    }

    /// Hands a message the broker now owns to the retained store and to every session with a
    /// matching subscription (spec: [MQTT-4.5.0-1], [MQTT-3.3.2-3]).
    pub(super) fn route(&mut self, message: Arc<Message>, now: Instant) {
        self.purge_expired_retained(now);
        let plan = self.plan(&message);
        self.route_planned(message, plan, now);
    }

    /// Where `message` goes.
    fn plan(&self, message: &Message) -> Plan {
        let (deliveries, denied) = self.deliveries(message);
        Plan {
            deliveries,
            groups: self.shared.matching(message.topic()),
            denied,
        }
    }

    /// Publishes one of the broker's own `$SYS` values: retained, QoS 0, to every
    /// subscriber that may read it (a `#` filter never matches it: [MQTT-4.7.2-1]). Not a
    /// message received (the counters count clients' messages), and never made durable: it
    /// is rebuilt after a restart.
    ///
    /// Returns whether it was retained (the memory budget may refuse it): one that was not
    /// should be published again, even unchanged.
    pub fn publish_system(&mut self, topic: &str, payload: Bytes, now: Instant) -> bool {
        debug_assert!(topic.starts_with("$SYS/"), "{topic} is not a $SYS topic");
        let Ok(topic) = ByteStr::new(topic) else {
            return false;
        };
        let message = Message::new(
            Content::new(topic, payload),
            QoS::AtMostOnce,
            true,
            &Properties::new(),
            ByteStr::default(),
            now,
        );
        let message = Arc::new(message);
        self.purge_expired_retained(now);
        let plan = self.plan(&message);
        let retained = self.fan_out(message, plan, now, Durability::NeverStored);
        self.after_input(now);
        retained
    }

    /// [`Broker::route`] with the plan already made (the publisher's memory check needs it).
    fn route_planned(&mut self, message: Arc<Message>, plan: Plan, now: Instant) {
        self.stats.messages_received.count(message.qos);
        self.stats.publish_bytes_received += message.payload().len() as u64;
        self.fan_out(message, plan, now, Durability::Stored);
    }

    /// Stores `message` if retained and hands it to the sessions and groups of `plan`.
    /// Returns false if it was to be retained and the retained store refused it.
    fn fan_out(
        &mut self,
        message: Arc<Message>,
        plan: Plan,
        now: Instant,
        durability: Durability,
    ) -> bool {
        let Plan {
            deliveries,
            groups,
            denied,
        } = plan;
        self.stats.deliveries_denied += denied;
        // A message that will outlive this input (retained, queued, in flight) is copied out
        // of the read buffer it arrived in, once, as soon as the first such use shows up.
        let mut message = message;
        let mut compacted = false;
        let mut hold = |message: &mut Arc<Message>| {
            if !compacted {
                // In place when nothing else holds it yet (the usual case): no second `Arc`.
                match Arc::get_mut(message) {
                    Some(only) => *only = only.compacted(),
                    None => *message = Arc::new(message.compacted()),
                }
                compacted = true;
            }
        };
        let mut retained = true;
        if message.retain {
            hold(&mut message);
            retained = self.store_retained(&message, durability);
        }
        for (session_id, delivery) in deliveries {
            let Some(session) = self.sessions.get_mut(&session_id) else {
                continue;
            };
            // spec: [MQTT-3.8.4-6] 3.1.1, [MQTT-3.8.4-8] 5.0
            let qos = message.qos.min(delivery.qos);
            if qos != QoS::AtMostOnce || session.conn.is_none() {
                hold(&mut message);
            }
            let item = Queued {
                message: message.clone(),
                qos,
                // spec: [MQTT-3.3.1-9] 3.1.1; [MQTT-3.3.1-12] [MQTT-3.3.1-13] 5.0. A 3.x
                // SUBSCRIBE cannot ask for Retain As Published; a bridge's subscriptions have it.
                retain: message.retain && delivery.retain_as_published,
                subscription_ids: delivery.subscription_ids,
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
        // Each matching shared group adds one delivery, to one member, besides any delivery
        // to that member's own non-shared subscriptions (MQTT 5 section 4.8.2).
        for group in groups {
            // A bridge that published it is not chosen (loop prevention).
            let bridge = self
                .by_client_id
                .get(&message.publisher)
                .copied()
                .filter(|id| self.sessions.get(id).is_some_and(|s| s.params.bridge));
            if !self.deliver_shared(group, message.clone(), bridge, now, now) {
                self.stats.shared_unclaimed += 1;
            }
        }
        retained
    }

    /// spec: [MQTT-3.3.1-5] [MQTT-3.3.1-7] 3.1.1; [MQTT-3.3.1-5] 5.0. Within the retained
    /// limits and the broker-wide memory budget; a message that does not fit is not retained
    /// (counted, false) and the old one stays.
    pub(super) fn store_retained(
        &mut self,
        message: &Arc<Message>,
        durability: Durability,
    ) -> bool {
        // The broker's `$SYS` values are not kept over a restart, so a full disk does not
        // concern them; every other limit does.
        let durable = durability == Durability::Stored;
        if durable && self.journal.full() {
            // The store's disk is full: a retained message (a QoS 0 one gets here; QoS 1/2
            // were refused before routing) is not taken, so it cannot pile up batches.
            self.stats.retained_refused += 1;
            return false;
        }
        let limits = &self.config.limits;
        let held = self.stats.held_bytes();
        let (outcome, change) = self.retained.retain(
            message.clone(),
            limits.retained_messages_max,
            limits.retained_bytes_max,
            |growth| held + growth <= limits.memory_bytes_max,
        );
        let stored = outcome != RetainOutcome::Refused;
        let op = match outcome {
            RetainOutcome::Refused => {
                self.stats.retained_refused += 1;
                None
            }
            _ if !durable => None,
            RetainOutcome::Stored => {
                Some(StoreOp::PutRetained(self.journal.stored_message(message)))
            }
            RetainOutcome::Deleted => Some(StoreOp::DeleteRetained {
                topic: message.content.to_topic(),
            }),
        };
        match op {
            // Nobody waits on a QoS 0 message: it goes with the next batch.
            Some(op) if message.qos == QoS::AtMostOnce => self.journal.record_lazily(op),
            Some(op) => self.journal.record(op, None),
            None => {}
        }
        self.stats.retained_bytes = self.stats.retained_bytes.saturating_add_signed(change);
        debug_assert_eq!(self.stats.retained_bytes, self.retained.bytes());
        stored
    }

    /// One delivery per session, at the highest granted QoS of its matching subscriptions
    /// (spec: [MQTT-3.3.5-1] 3.1.1; [MQTT-3.3.4-2] [MQTT-3.3.4-3] [MQTT-3.3.4-4] 5.0).
    /// Sessions that may not read the topic get nothing (and are counted: the second value).
    fn deliveries(&self, message: &Message) -> (BTreeMap<SessionId, Delivery>, u64) {
        let mut deliveries: BTreeMap<SessionId, Delivery> = BTreeMap::new();
        let mut denied: BTreeSet<SessionId> = BTreeSet::new();
        let sessions = &self.sessions;
        // Without any ACL the checks are skipped: routing costs what it did before ACLs.
        let checking = self.access.any();
        self.subscriptions
            .for_each_match(message.topic(), |session_id, subscription| {
                let options = &subscription.options;
                if checking && denied.contains(&session_id) {
                    return;
                }
                if checking
                    && !deliveries.contains_key(&session_id)
                    && !sessions
                        .get(&session_id)
                        .is_some_and(|s| self.access.may_read(s, message.topic()))
                {
                    denied.insert(session_id);
                    return;
                }
                // A bridge's subscriptions are No Local too: it is never sent back what it
                // published (loop prevention, as in Mosquitto and EMQX).
                if options.no_local
                    && sessions
                        .get(&session_id)
                        .is_some_and(|s| s.client_id == message.publisher)
                {
                    // spec: [MQTT-3.8.3-3] (v5)
                    return;
                }
                let delivery = deliveries.entry(session_id).or_insert(Delivery {
                    qos: QoS::AtMostOnce,
                    retain_as_published: false,
                    subscription_ids: Vec::new(),
                });
                delivery.qos = delivery.qos.max(options.qos);
                delivery.retain_as_published |= options.retain_as_published;
                if let Some(id) = subscription.id {
                    delivery.subscription_ids.push(id);
                }
            });
        (deliveries, denied.len() as u64)
    }

    /// Gives a message to one member of a shared subscription group, at the QoS and with the
    /// options of that member's subscription (spec: [MQTT-4.8.2-3]). `exclude` is a member
    /// handing the message back. Returns whether a member took it.
    fn deliver_shared(
        &mut self,
        group: GroupId,
        message: Arc<Message>,
        exclude: Option<SessionId>,
        enqueued_at: Instant,
        now: Instant,
    ) -> bool {
        let sessions = &self.sessions;
        let connected = |id: SessionId| sessions.get(&id).is_some_and(|s| s.conn.is_some());
        // A member that may not read the topic is never chosen.
        let access = &self.access;
        let checking = access.any();
        let reader = |id: SessionId| {
            !checking
                || sessions
                    .get(&id)
                    .is_some_and(|s| access.may_read(s, message.topic()))
        };
        let Some((session_id, subscription)) =
            self.shared.pick_among(group, exclude, reader, connected)
        else {
            return false;
        };
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return false;
        };
        let options = subscription.options;
        let qos = message.qos.min(options.qos);
        // Held (queued, in flight, or handed back later): copied out of its read buffer first.
        let message = if qos != QoS::AtMostOnce || session.conn.is_none() {
            Arc::new(message.compacted())
        } else {
            message
        };
        let item = Queued {
            qos,
            retain: message.retain && options.retain_as_published,
            subscription_ids: subscription.id.into_iter().collect(),
            message,
            enqueued_at,
            group: Some(group),
        };
        session.deliver(
            item,
            now,
            &self.config.limits,
            &mut self.out,
            &mut self.stats,
            &mut self.journal,
        );
        true
    }

    /// A member of shared subscriptions lost its connection (`to_connected_only`) or its
    /// session is ending: its unsent shared messages, and the QoS 1 ones it has not
    /// acknowledged, go to another member of their group (QoS 2 deliveries under way stay,
    /// see `Session::take_shared`). While the session lives they move only if a connected
    /// member can take them, so a message is not moved from one absent client to another; a
    /// session that is ending gives them to any member rather than lose them. A QoS 1 message
    /// the first client did receive may so reach two members: MQTT 5 section 4.8.2 allows it,
    /// and it is the price of not losing messages with a consumer that went away.
    pub(super) fn hand_back_shared(
        &mut self,
        session_id: SessionId,
        to_connected_only: bool,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        let held = session.shared_topics();
        if held.is_empty() {
            return;
        }
        // Only what another member can take moves: one that may read the topic, and, while
        // this session lives, is connected. The rest stays (and is not lost).
        let sessions = &self.sessions;
        let access = &self.access;
        let checking = access.any();
        let movable: BTreeSet<(GroupId, ByteStr)> = held
            .into_iter()
            .filter(|(group, topic)| {
                self.shared.has_member(*group, |id: SessionId| {
                    let Some(member) = sessions.get(&id) else {
                        return false;
                    };
                    id != session_id
                        && (!to_connected_only || member.conn.is_some())
                        && (!checking || access.may_read(member, topic))
                })
            })
            .collect();
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let taken = session.take_shared(
            now,
            |group, topic| movable.contains(&(group, topic.clone())),
            &mut self.stats,
            &mut self.journal,
        );
        for item in taken {
            self.stats.shared_handed_back += 1;
            let delivered = self.deliver_shared(
                item.group,
                item.message,
                Some(session_id),
                item.enqueued_at,
                now,
            );
            // Checked above, so a miss is a bug; counted (and the account kept) all the same.
            debug_assert!(delivered, "a shared message found no member after all");
            match (item.queued, delivered) {
                (true, true) => self.stats.deliveries_moved += 1,
                (true, false) => self.stats.shared_dropped_no_member += 1,
                (false, _) => {}
            }
        }
    }
}

/// Whether a retained message goes to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// A client's (or a will): kept over a restart.
    Stored,
    /// The broker's own `$SYS` values: rebuilt by the next process.
    NeverStored,
}
