//! Self-tests of the checkers: each gets a synthetic trace that breaks its property (it must
//! fail) and the nearest trace that keeps it (it must pass). A checker that cannot fail shows
//! up here.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tern::codec::*;
use tern::types::{PacketId, QoS};

use super::model::Fault;
use super::*;
use crate::scenario::Scenario;
use crate::trace::{BrokerCounters, Event, Trace};

fn scenario(clients: &str) -> Scenario {
    let text = format!("goal: g\nclients:\n{clients}steps: []\n");
    Scenario::parse(&text, Path::new("x.yaml")).unwrap()
}

/// Subscriber `s` and publisher `p`, both 3.1.1.
fn two() -> Scenario {
    scenario("  s: { version: 3.1.1 }\n  p: { version: 3.1.1 }\n")
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn qos(q: u8) -> QoS {
    QoS::from_bits(q).unwrap()
}

/// A trace written event by event, at a clock the test moves.
#[derive(Default)]
struct Build {
    trace: Trace,
    at: Duration,
}

impl Build {
    fn at(mut self, secs: f64) -> Build {
        self.at = Duration::from_secs_f64(secs);
        self
    }

    fn push(mut self, host: &str, event: Event) -> Build {
        self.trace.push(self.at, host, event);
        self
    }

    fn connect(
        self,
        host: &str,
        version: ProtocolVersion,
        clean: bool,
        expiry: Option<u32>,
    ) -> Build {
        let mut properties = Properties::new();
        if let Some(e) = expiry {
            properties.push(Property::SessionExpiryInterval(e));
        }
        let connect = Connect {
            protocol: version,
            clean_start: clean,
            keep_alive: 0,
            properties,
            client_id: ByteStr::new(host).unwrap(),
            will: None,
            username: None,
            password: None,
            bridge: false,
        };
        self.push(host, Event::Sent(Packet::Connect(Box::new(connect))))
    }

    fn connack(self, host: &str, present: bool) -> Build {
        self.push(
            host,
            Event::Received(Packet::ConnAck(ConnAck {
                session_present: present,
                reason_code: ReasonCode::Success,
                properties: Properties::new(),
            })),
        )
    }

    /// A clean 3.1.1 connection.
    fn online(self, host: &str) -> Build {
        self.connect(host, ProtocolVersion::V3_1_1, true, None)
            .connack(host, false)
    }

    fn subscribe(self, host: &str, n: u16, filter: &'static str, q: u8) -> Build {
        let filters = vec![(
            ByteStr::from_static(filter),
            SubscriptionOptions::new(qos(q)),
        )];
        self.push(
            host,
            Event::Sent(Packet::Subscribe(Subscribe {
                packet_id: id(n),
                properties: Properties::new(),
                filters,
            })),
        )
        .push(
            host,
            Event::Received(Packet::SubAck(SubAck {
                packet_id: id(n),
                properties: Properties::new(),
                reason_codes: vec![ReasonCode::from_u8(q).unwrap()],
            })),
        )
    }

    fn unsubscribe(self, host: &str, n: u16, filter: &'static str) -> Build {
        self.push(
            host,
            Event::Sent(Packet::Unsubscribe(Unsubscribe {
                packet_id: id(n),
                properties: Properties::new(),
                filters: vec![ByteStr::from_static(filter)],
            })),
        )
        .push(
            host,
            Event::Received(Packet::UnsubAck(UnsubAck {
                packet_id: id(n),
                properties: Properties::new(),
                reason_codes: vec![ReasonCode::Success],
            })),
        )
    }

    fn message(topic: &'static str, payload: &'static str, q: u8, n: u16, retain: bool) -> Publish {
        Publish {
            dup: false,
            qos: qos(q),
            retain,
            content: Content::new(
                ByteStr::from_static(topic),
                Bytes::from_static(payload.as_bytes()),
            ),
            packet_id: (q > 0).then(|| id(n)),
            properties: Properties::new(),
        }
    }

    /// `host` sends a PUBLISH (packet id `n` when QoS > 0).
    fn publish(
        self,
        host: &str,
        topic: &'static str,
        payload: &'static str,
        q: u8,
        n: u16,
    ) -> Build {
        self.push(
            host,
            Event::Sent(Packet::Publish(Build::message(topic, payload, q, n, false))),
        )
    }

    fn publish_retained(
        self,
        host: &str,
        topic: &'static str,
        payload: &'static str,
        q: u8,
        n: u16,
    ) -> Build {
        self.push(
            host,
            Event::Sent(Packet::Publish(Build::message(topic, payload, q, n, true))),
        )
    }

    fn publish_expiring(
        self,
        host: &str,
        topic: &'static str,
        payload: &'static str,
        secs: u32,
    ) -> Build {
        let mut p = Build::message(topic, payload, 1, 9, false);
        p.properties.push(Property::MessageExpiryInterval(secs));
        self.push(host, Event::Sent(Packet::Publish(p)))
    }

    fn puback(self, host: &str, n: u16) -> Build {
        self.push(host, Event::Received(Packet::PubAck(Ack::new(id(n)))))
    }

    /// `host` receives a PUBLISH and its application gets the message.
    fn receive(
        self,
        host: &str,
        topic: &'static str,
        payload: &'static str,
        q: u8,
        retain: bool,
    ) -> Build {
        self.receive_with(host, Build::message(topic, payload, q, 1, retain))
    }

    fn receive_with(self, host: &str, p: Publish) -> Build {
        let delivered = Event::Delivered {
            topic: p.topic().to_string(),
            payload: String::from_utf8_lossy(p.payload()).into_owned(),
            qos: p.qos.bits(),
            retain: p.retain,
        };
        self.push(host, Event::Received(Packet::Publish(p)))
            .push(host, delivered)
    }

    fn closed(self, host: &str, by_client: bool) -> Build {
        self.push(
            host,
            Event::Closed {
                by_client,
                normal: false,
            },
        )
    }

    fn fault(self, text: &str) -> Build {
        self.push("director", Event::Fault(text.into()))
    }

    fn done(self) -> Trace {
        self.trace
    }
}

/// `s` subscribed to `filter` at QoS 1 and p's QoS 1 message m on t was acknowledged.
fn accepted_on(filter: &'static str, delivered: bool) -> Trace {
    let b = Build::default()
        .online("s")
        .online("p")
        .subscribe("s", 1, filter, 1)
        .publish("p", "t", "m", 1, 7)
        .puback("p", 7);
    if delivered {
        b.receive("s", "t", "m", 1, false).done()
    } else {
        b.done()
    }
}

#[test]
fn faults_name_their_hosts_exactly() {
    let f = Fault::parse("partition pub <-> broker");
    assert_eq!(f.kind, "partition");
    assert!(f.touches("pub") && f.touches("broker") && !f.touches("p"));
    let f = Fault::parse("latency a <-> broker 50ms");
    assert_eq!((f.hosts.len(), f.value.as_deref()), (2, Some("50ms")));
    assert_eq!(Fault::parse("partition a -> b").hosts, ["a", "b"]);
    assert_eq!(Fault::parse("crash broker").hosts, ["broker"]);
    assert!(Fault::parse("raw bytes [c0]").hosts.is_empty());
}

#[test]
fn a_client_error_fails_the_run() {
    let t = accepted_on("t", true);
    assert!(client_errors(&two(), &t).is_ok());
    let t = Build {
        trace: t,
        at: Duration::ZERO,
    }
    .push(
        "s",
        Event::ClientError("the broker's SCRAM proof is wrong".into()),
    )
    .done();
    assert!(client_errors(&two(), &t).is_err());
}

#[test]
fn delivery_without_subscription_is_caught() {
    let t = Build::default()
        .online("s")
        .receive("s", "secret", "x", 0, false)
        .done();
    assert!(delivery::matches_subscription(&two(), &t).is_err());
    let t = Build::default()
        .online("s")
        .subscribe("s", 1, "#", 0)
        .receive("s", "secret", "x", 0, false)
        .done();
    assert!(delivery::matches_subscription(&two(), &t).is_ok());
    // `$` topics never match a leading wildcard.
    let t = Build::default()
        .online("s")
        .subscribe("s", 1, "#", 0)
        .receive("s", "$SYS/x", "x", 0, false)
        .done();
    assert!(delivery::matches_subscription(&two(), &t).is_err());
}

#[test]
fn a_message_published_after_the_unsuback_is_caught() {
    let base = || {
        Build::default()
            .online("s")
            .online("p")
            .subscribe("s", 1, "t", 0)
    };
    // Published before the UNSUBACK: it may still arrive.
    let t = base()
        .publish("p", "t", "early", 0, 0)
        .unsubscribe("s", 2, "t")
        .receive("s", "t", "early", 0, false)
        .done();
    assert!(delivery::none_after_unsuback(&two(), &t).is_ok());
    let t = base()
        .unsubscribe("s", 2, "t")
        .publish("p", "t", "late", 0, 0)
        .receive("s", "t", "late", 0, false)
        .done();
    let err = delivery::none_after_unsuback(&two(), &t).unwrap_err();
    assert!(err.0.contains("after its UNSUBACK"), "{}", err.0);
    // Unsubscribing a filter never held changes nothing; the one held was removed later.
    let t = base()
        .unsubscribe("s", 2, "#")
        .publish("p", "t", "m", 0, 0)
        .unsubscribe("s", 3, "t")
        .receive("s", "t", "m", 0, false)
        .done();
    assert!(delivery::none_after_unsuback(&two(), &t).is_ok());
    // Another subscription still matching makes it rightful.
    let t = base()
        .subscribe("s", 3, "#", 0)
        .unsubscribe("s", 2, "t")
        .publish("p", "t", "late", 0, 0)
        .receive("s", "t", "late", 0, false)
        .done();
    assert!(delivery::none_after_unsuback(&two(), &t).is_ok());
}

#[test]
fn a_message_delivered_after_its_expiry_is_caught() {
    let v5 = scenario("  s: { version: 5 }\n  p: { version: 5 }\n");
    let base = || {
        Build::default()
            .online("s")
            .online("p")
            .subscribe("s", 1, "t", 1)
            .publish_expiring("p", "t", "m", 2)
            .puback("p", 9)
    };
    let copy = |left: Option<u32>| {
        let mut p = Build::message("t", "m", 1, 1, false);
        if let Some(left) = left {
            p.properties.push(Property::MessageExpiryInterval(left));
        }
        p
    };
    let t = base().at(1.0).receive_with("s", copy(Some(1))).done();
    assert!(delivery::none_after_expiry(&v5, &t).is_ok());
    let t = base().at(10.0).receive_with("s", copy(Some(1))).done();
    let err = delivery::none_after_expiry(&v5, &t).unwrap_err();
    assert!(err.0.contains("expired"), "{}", err.0);
    // An MQTT 5 copy must carry what is left of the interval, never more than was given.
    let t = base().at(1.0).receive_with("s", copy(None)).done();
    assert!(delivery::none_after_expiry(&v5, &t).is_err());
    let t = base().at(1.0).receive_with("s", copy(Some(3))).done();
    assert!(delivery::none_after_expiry(&v5, &t).is_err());
    // A hold on the subscriber's link may delay a copy sent in time.
    let t = base()
        .fault("hold s <-> broker")
        .at(10.0)
        .fault("release s <-> broker")
        .receive_with("s", copy(Some(1)))
        .done();
    assert!(delivery::none_after_expiry(&v5, &t).is_ok());
}

#[test]
fn a_qos2_message_delivered_twice_is_caught() {
    let once = Build::default().receive("s", "t", "m", 2, false);
    assert!(qos::qos2_exactly_once(&two(), &once.trace).is_ok());
    let twice = once.receive("s", "t", "m", 2, false);
    assert!(qos::qos2_exactly_once(&two(), &twice.trace).is_err());
    // Two matching subscriptions may bring two copies, not three.
    let overlapping = Build::default()
        .online("s")
        .subscribe("s", 1, "t", 2)
        .subscribe("s", 2, "#", 2)
        .receive("s", "t", "m", 2, false)
        .receive("s", "t", "m", 2, false);
    assert!(qos::qos2_exactly_once(&two(), &overlapping.trace).is_ok());
    let thrice = overlapping.receive("s", "t", "m", 2, false).done();
    assert!(qos::qos2_exactly_once(&two(), &thrice).is_err());
}

#[test]
fn messages_out_of_publisher_order_are_caught() {
    let base = || {
        Build::default()
            .online("s")
            .online("p")
            .subscribe("s", 1, "t", 1)
            .publish("p", "t", "first", 1, 1)
            .publish("p", "t", "second", 1, 2)
    };
    let t = base()
        .receive("s", "t", "first", 1, false)
        .receive("s", "t", "second", 1, false)
        .done();
    assert!(qos::publisher_order(&two(), &t).is_ok());
    let t = base()
        .receive("s", "t", "second", 1, false)
        .receive("s", "t", "first", 1, false)
        .done();
    let err = qos::publisher_order(&two(), &t).unwrap_err();
    assert!(err.0.contains("out of order"), "{}", err.0);
}

#[test]
fn an_acknowledged_message_must_reach_the_subscriber() {
    assert!(qos::at_least_once(&two(), &accepted_on("t", true)).is_ok());
    let err = qos::at_least_once(&two(), &accepted_on("t", false)).unwrap_err();
    assert!(err.0.contains("never got t"), "{}", err.0);
}

#[test]
fn a_shared_group_with_a_qos0_member_is_settled_by_a_copy_to_any_member() {
    let three = scenario("  s: { version: 5 }\n  s2: { version: 5 }\n  p: { version: 5 }\n");
    let base = || {
        Build::default()
            .online("s")
            .online("s2")
            .online("p")
            .subscribe("s", 1, "$share/g/t", 0)
            .subscribe("s2", 1, "$share/g/t", 1)
            .publish("p", "t", "m", 1, 7)
            .puback("p", 7)
    };
    let t = base().receive("s", "t", "m", 0, false).done();
    assert!(qos::at_least_once(&three, &t).is_ok());
    let t = base().done();
    assert!(qos::at_least_once(&three, &t).is_err());
}

#[test]
fn a_subscription_made_while_the_message_was_under_way_is_not_owed_it() {
    let t = Build::default()
        .online("s")
        .online("p")
        .publish("p", "t", "m", 1, 7)
        .subscribe("s", 1, "t", 1)
        .puback("p", 7)
        .done();
    assert!(qos::at_least_once(&two(), &t).is_ok());
}

#[test]
fn a_shared_group_must_get_an_acknowledged_message_in_any_order() {
    let shared = "$share/g/t";
    assert!(qos::at_least_once(&two(), &accepted_on(shared, true)).is_ok());
    let err = qos::at_least_once(&two(), &accepted_on(shared, false)).unwrap_err();
    assert!(err.0.contains("shared group"), "{}", err.0);
    assert!(delivery::matches_subscription(&two(), &accepted_on(shared, true)).is_ok());
    assert!(qos::publisher_order(&two(), &accepted_on(shared, true)).is_ok());
}

#[test]
fn a_message_late_to_a_calm_subscriber_is_caught() {
    let base = || Build {
        trace: accepted_on("t", false),
        at: Duration::ZERO,
    };
    let t = base()
        .at(1.0)
        .receive("s", "t", "m", 1, false)
        .at(10.0)
        .fault("end")
        .done();
    assert!(qos::liveness(&two(), &t).is_ok());
    let t = base()
        .at(7.0)
        .receive("s", "t", "m", 1, false)
        .at(10.0)
        .fault("end")
        .done();
    let err = qos::liveness(&two(), &t).unwrap_err();
    assert!(err.0.contains("within"), "{}", err.0);
    // Not owed in time when the subscriber's path is disturbed meanwhile.
    let t = base()
        .at(2.0)
        .fault("partition s <-> broker")
        .at(3.0)
        .fault("repair s <-> broker")
        .at(7.0)
        .receive("s", "t", "m", 1, false)
        .at(10.0)
        .fault("end")
        .done();
    assert!(qos::liveness(&two(), &t).is_ok());
    // ... but a partition of another host with a longer name is no excuse.
    let three =
        scenario("  s: { version: 3.1.1 }\n  p: { version: 3.1.1 }\n  ss: { version: 3.1.1 }\n");
    let t = base()
        .at(2.0)
        .fault("partition ss <-> broker")
        .at(7.0)
        .receive("s", "t", "m", 1, false)
        .at(10.0)
        .fault("end")
        .done();
    assert!(qos::liveness(&three, &t).is_err());
}

#[test]
fn more_unacknowledged_messages_than_receive_maximum_are_caught() {
    let scenario = scenario("  s: { version: 5, receive_maximum: 1 }\n");
    let t = Build::default()
        .receive("s", "t", "a", 1, false)
        .push("s", Event::Sent(Packet::PubAck(Ack::new(id(1)))))
        .receive("s", "t", "b", 1, false);
    assert!(qos::receive_maximum(&scenario, &t.trace).is_ok());
    let mut p = Build::message("t", "c", 1, 2, false);
    p.packet_id = Some(id(3));
    let t = t.receive_with("s", p).done();
    assert!(qos::receive_maximum(&scenario, &t).is_err());
}

/// p retained v1 then v2 (both acknowledged), then s subscribed to t.
fn retained_then_subscribed() -> Build {
    Build::default()
        .online("s")
        .online("p")
        .publish_retained("p", "t", "v1", 1, 1)
        .puback("p", 1)
        .publish_retained("p", "t", "v2", 1, 2)
        .puback("p", 2)
        .subscribe("s", 1, "t", 1)
}

#[test]
fn a_stale_retained_message_is_caught() {
    let t = retained_then_subscribed()
        .receive("s", "t", "v2", 1, true)
        .done();
    assert!(retained::never_stale(&two(), &t).is_ok());
    // The old checker accepted this: v1 had been published, so it looked "newer".
    let t = retained_then_subscribed()
        .receive("s", "t", "v1", 1, true)
        .done();
    let err = retained::never_stale(&two(), &t).unwrap_err();
    assert!(err.0.contains("stale"), "{}", err.0);
    // v1 from another client still unanswered when v2 was sent may have arrived last.
    let three =
        scenario("  s: { version: 3.1.1 }\n  p: { version: 3.1.1 }\n  q: { version: 3.1.1 }\n");
    let t = Build::default()
        .online("s")
        .online("p")
        .online("q")
        .publish_retained("q", "t", "v1", 1, 1)
        .publish_retained("p", "t", "v2", 1, 2)
        .puback("q", 1)
        .puback("p", 2)
        .subscribe("s", 1, "t", 1)
        .receive("s", "t", "v1", 1, true);
    assert!(retained::never_stale(&three, &t.trace).is_ok());
    // ... but not when v1 was acknowledged before v2 was sent.
    let t = Build::default()
        .online("s")
        .online("p")
        .online("q")
        .publish_retained("q", "t", "v1", 1, 1)
        .puback("q", 1)
        .publish_retained("p", "t", "v2", 1, 2)
        .puback("p", 2)
        .subscribe("s", 1, "t", 1)
        .receive("s", "t", "v1", 1, true)
        .done();
    assert!(retained::never_stale(&three, &t).is_err());
    // Never published retained, or empty: wrong whatever the order.
    let t = retained_then_subscribed()
        .receive("s", "t", "v9", 1, true)
        .done();
    assert!(retained::never_stale(&two(), &t).is_err());
    let t = retained_then_subscribed()
        .receive("s", "t", "", 1, true)
        .done();
    assert!(retained::never_stale(&two(), &t).is_err());
    // An answer to an earlier SUBSCRIBE, delayed past a later one, is judged by the earlier.
    let earlier = |second_subscribe: bool| {
        let b = Build::default()
            .online("s")
            .online("p")
            .publish_retained("p", "t", "v1", 1, 1)
            .puback("p", 1)
            .subscribe("s", 1, "t", 1)
            .publish_retained("p", "t", "v2", 1, 2)
            .puback("p", 2);
        let b = if second_subscribe {
            b.subscribe("s", 2, "t", 1)
        } else {
            b
        };
        b.receive("s", "t", "v1", 1, true).done()
    };
    assert!(retained::never_stale(&two(), &earlier(true)).is_ok());
    assert!(retained::never_stale(&two(), &earlier(false)).is_ok());
}

// A shared group that joined between a PUBLISH and its PUBACK is not owed the message (the
// broker may have routed it before the group existed), as for a plain subscription.
#[test]
fn a_shared_group_that_joined_during_the_flow_is_not_owed_the_message() {
    let joined_late = |delivered: bool| {
        let b = Build::default()
            .online("s")
            .online("p")
            .publish("p", "t", "m", 1, 7)
            .subscribe("s", 1, "$share/g/t", 1)
            .puback("p", 7);
        if delivered {
            b.receive("s", "t", "m", 1, false).done()
        } else {
            b.done()
        }
    };
    assert!(qos::at_least_once(&two(), &joined_late(false)).is_ok());
    assert!(qos::at_least_once(&two(), &joined_late(true)).is_ok());
}

#[test]
fn a_missing_retained_message_is_caught() {
    let t = retained_then_subscribed()
        .receive("s", "t", "v2", 1, true)
        .at(10.0)
        .fault("end")
        .done();
    assert!(retained::converges(&two(), &t).is_ok());
    let t = retained_then_subscribed().at(10.0).fault("end").done();
    let err = retained::converges(&two(), &t).unwrap_err();
    assert!(err.0.contains("did not get the retained"), "{}", err.0);
    let t = retained_then_subscribed()
        .receive("s", "t", "v1", 1, true)
        .at(10.0)
        .fault("end")
        .done();
    assert!(retained::converges(&two(), &t).is_err());
    // Cleared by an empty retained publish: nothing is owed, and the old value is stale.
    let cleared = || {
        Build::default()
            .online("s")
            .online("p")
            .publish_retained("p", "t", "v1", 1, 1)
            .puback("p", 1)
            .publish_retained("p", "t", "", 1, 2)
            .puback("p", 2)
            .subscribe("s", 1, "t", 1)
    };
    let t = cleared().at(10.0).fault("end").done();
    assert!(retained::converges(&two(), &t).is_ok());
    let t = cleared().receive("s", "t", "v1", 1, true).done();
    assert!(retained::never_stale(&two(), &t).is_err());
}

#[test]
fn a_wrong_session_present_flag_is_caught() {
    use ProtocolVersion::V3_1_1;
    let persistent = || {
        Build::default()
            .connect("s", V3_1_1, false, None)
            .connack("s", false)
            .at(1.0)
            .closed("s", true)
            .at(10.0)
            .connect("s", V3_1_1, false, None)
    };
    let t = persistent().connack("s", true).done();
    assert!(session::present_flag(&two(), &t).is_ok());
    let t = persistent().connack("s", false).done();
    let err = session::present_flag(&two(), &t).unwrap_err();
    assert!(err.0.contains("still held"), "{}", err.0);
    // A clean start never finds a session; a first connection has none to find.
    let t = Build::default()
        .connect("s", V3_1_1, true, None)
        .connack("s", true)
        .done();
    assert!(session::present_flag(&two(), &t).is_err());
    let t = Build::default()
        .connect("s", V3_1_1, false, None)
        .connack("s", true)
        .done();
    assert!(session::present_flag(&two(), &t).is_err());
    // MQTT 3.1 has no flag: its CONNACK always says 0.
    let v31 = Build::default()
        .connect("s", ProtocolVersion::V3_1, false, None)
        .connack("s", false)
        .closed("s", true)
        .connect("s", ProtocolVersion::V3_1, false, None)
        .connack("s", false)
        .done();
    assert!(session::present_flag(&two(), &v31).is_ok());
    // MQTT 5: the session expired while the client was away.
    let v5 = scenario("  s: { version: 5 }\n");
    let away = |secs: f64, present: bool| {
        Build::default()
            .connect("s", ProtocolVersion::V5, false, Some(5))
            .connack("s", false)
            .closed("s", true)
            .at(secs)
            .connect("s", ProtocolVersion::V5, false, Some(5))
            .connack("s", present)
            .done()
    };
    assert!(session::present_flag(&v5, &away(2.0, true)).is_ok());
    assert!(session::present_flag(&v5, &away(2.0, false)).is_err());
    assert!(session::present_flag(&v5, &away(20.0, false)).is_ok());
    assert!(session::present_flag(&v5, &away(20.0, true)).is_err());
    // Near the deadline the trace cannot tell: either answer passes.
    assert!(session::present_flag(&v5, &away(5.0, true)).is_ok());
    assert!(session::present_flag(&v5, &away(5.0, false)).is_ok());
    // A broker crash loses every session (no persistence yet).
    let t = Build::default()
        .connect("s", V3_1_1, false, None)
        .connack("s", false)
        .fault("crash broker")
        .closed("s", false)
        .fault("restart broker")
        .at(1.0)
        .connect("s", V3_1_1, false, None)
        .connack("s", true)
        .done();
    assert!(session::present_flag(&two(), &t).is_err());
}

/// `two()` with the broker's persistence on.
fn two_persistent() -> Scenario {
    let text = "goal: g\nbroker: { persistence: true }\nclients:\n  s: { version: 3.1.1 }\n  p: { version: 3.1.1 }\nsteps: []\n";
    Scenario::parse(text, Path::new("x.yaml")).unwrap()
}

#[test]
fn with_persistence_a_session_lost_in_a_crash_is_caught() {
    use ProtocolVersion::{V3_1_1, V5};
    let crash = |present: bool| {
        Build::default()
            .connect("s", V3_1_1, false, None)
            .connack("s", false)
            .fault("crash broker")
            .closed("s", false)
            .fault("restart broker")
            .at(1.0)
            .connect("s", V3_1_1, false, None)
            .connack("s", present)
            .done()
    };
    assert!(session::present_flag(&two_persistent(), &crash(true)).is_ok());
    let err = session::present_flag(&two_persistent(), &crash(false)).unwrap_err();
    assert!(err.0.contains("still held"), "{}", err.0);
    // A session that ends with its connection is gone after a crash, store or not.
    let clean = Build::default()
        .online("s")
        .fault("crash broker")
        .closed("s", false)
        .fault("restart broker")
        .at(1.0)
        .connect("s", V3_1_1, false, None)
        .connack("s", true)
        .done();
    assert!(session::present_flag(&two_persistent(), &clean).is_err());
    // Connected at the crash: its expiry (5 s) runs from the restart, not from the crash.
    let v5 = || {
        let text =
            "goal: g\nbroker: { persistence: true }\nclients:\n  s: { version: 5 }\nsteps: []\n";
        Scenario::parse(text, Path::new("x.yaml")).unwrap()
    };
    let down = |present: bool| {
        Build::default()
            .connect("s", V5, false, Some(5))
            .connack("s", false)
            .fault("crash broker")
            .closed("s", false)
            .at(30.0)
            .fault("restart broker")
            .at(32.0)
            .connect("s", V5, false, Some(5))
            .connack("s", present)
            .done()
    };
    assert!(session::present_flag(&v5(), &down(true)).is_ok());
    assert!(session::present_flag(&v5(), &down(false)).is_err());
    // A failed fsync stops the broker like a crash.
    let fsync = Build::default()
        .connect("s", V3_1_1, false, None)
        .connack("s", false)
        .fault("disk fail_fsync")
        .closed("s", false)
        .fault("restart broker")
        .at(1.0)
        .connect("s", V3_1_1, false, None)
        .connack("s", false)
        .done();
    assert!(session::present_flag(&two_persistent(), &fsync).is_err());
    // A CONNECT unanswered at the crash may have been stored: either answer passes after.
    for present in [true, false] {
        let unanswered = Build::default()
            .connect("s", V3_1_1, false, None)
            .fault("crash broker")
            .closed("s", false)
            .fault("restart broker")
            .at(1.0)
            .connect("s", V3_1_1, false, None)
            .connack("s", present)
            .done();
        assert!(session::present_flag(&two_persistent(), &unanswered).is_ok());
    }
}

#[test]
fn with_persistence_an_acknowledged_message_lost_in_a_crash_is_caught() {
    use ProtocolVersion::V3_1_1;
    let crash = |delivered: bool| {
        let b = Build::default()
            .connect("s", V3_1_1, false, None)
            .connack("s", false)
            .subscribe("s", 1, "t", 1)
            .online("p")
            .publish("p", "t", "m", 1, 7)
            .puback("p", 7)
            .fault("crash broker")
            .closed("s", false)
            .closed("p", false)
            .fault("restart broker")
            .at(1.0)
            .connect("s", V3_1_1, false, None)
            .connack("s", true);
        if delivered {
            b.receive("s", "t", "m", 1, false).at(10.0).done()
        } else {
            b.at(10.0).done()
        }
    };
    assert!(qos::at_least_once(&two_persistent(), &crash(true)).is_ok());
    let err = qos::at_least_once(&two_persistent(), &crash(false)).unwrap_err();
    assert!(err.0.contains("never got"), "{}", err.0);
    // Without a store the crash excuses the loss.
    assert!(qos::at_least_once(&two(), &crash(false)).is_ok());
    // A subscription made before the crash still holds for a message published after it.
    let after = |delivered: bool| {
        let b = Build::default()
            .connect("s", V3_1_1, false, None)
            .connack("s", false)
            .subscribe("s", 1, "t", 1)
            .fault("crash broker")
            .closed("s", false)
            .fault("restart broker")
            .at(1.0)
            .connect("s", V3_1_1, false, None)
            .connack("s", true)
            .online("p")
            .publish("p", "t", "later", 1, 8)
            .puback("p", 8);
        if delivered {
            b.receive("s", "t", "later", 1, false).at(10.0).done()
        } else {
            b.at(10.0).done()
        }
    };
    assert!(qos::at_least_once(&two_persistent(), &after(true)).is_ok());
    assert!(qos::at_least_once(&two_persistent(), &after(false)).is_err());
    assert!(qos::at_least_once(&two(), &after(false)).is_ok());
}

/// MQTT 3.1 has no session-present flag: a clean-session-0 CONNECT resumes the session before
/// only if that one outlived its connection. A takeover of a clean session starts afresh, and
/// the subscription of the session taken over is not owed anything (explorer seed 729863).
#[test]
fn a_v31_takeover_resumes_only_a_session_that_outlived_its_connection() {
    let sc = scenario("  c1: { version: \"3.1\" }\n  c3: { version: \"3.1\", id: c1 }\n");
    let run = |first_clean: bool| {
        Build::default()
            .connect("c1", ProtocolVersion::V3_1, first_clean, None)
            .connack("c1", false)
            .subscribe("c1", 1, "a/#", 1)
            .connect("c3", ProtocolVersion::V3_1, false, None)
            .connack("c3", false)
            .closed("c1", false)
            .publish("c3", "a/c", "m3", 1, 1)
            .puback("c3", 1)
            .at(10.0)
            .done()
    };
    assert!(qos::at_least_once(&sc, &run(true)).is_ok());
    let err = qos::at_least_once(&sc, &run(false)).unwrap_err();
    assert!(err.0.contains("never got a/c"), "{}", err.0);
}

#[test]
fn with_persistence_an_acknowledged_retained_message_lost_in_a_crash_is_caught() {
    let t = |served: &'static str| {
        Build::default()
            .online("p")
            .publish_retained("p", "t", "v1", 1, 1)
            .puback("p", 1)
            .publish_retained("p", "t", "v2", 1, 2)
            .puback("p", 2)
            .fault("crash broker")
            .closed("p", false)
            .fault("restart broker")
            .at(1.0)
            .online("s")
            .subscribe("s", 1, "t", 1)
            .receive("s", "t", served, 1, true)
            .at(10.0)
            .done()
    };
    assert!(retained::never_stale(&two_persistent(), &t("v2")).is_ok());
    assert!(retained::never_stale(&two_persistent(), &t("v1")).is_err());
    assert!(retained::converges(&two_persistent(), &t("v2")).is_ok());
    // Without a store the broker may come back with nothing, so neither checker judges.
    assert!(retained::never_stale(&two(), &t("v1")).is_ok());
}

fn with_will() -> Scenario {
    scenario(
        "  s: { version: 3.1.1 }\n  d: { version: 3.1.1, will: { topic: w, payload: gone } }\n",
    )
}

#[test]
fn a_will_delivered_twice_is_caught() {
    let once = Build::default()
        .online("s")
        .subscribe("s", 1, "w", 0)
        .online("d")
        .closed("d", true)
        .receive("s", "w", "gone", 0, false);
    assert!(will::never_twice(&with_will(), &once.trace).is_ok());
    // A resend (DUP) of a QoS 1 will not yet acknowledged is the same copy.
    let mut resent = Build::message("w", "gone", 1, 1, false);
    resent.dup = true;
    let with_resend = Build {
        trace: once.trace.clone(),
        at: Duration::ZERO,
    }
    .receive_with("s", resent);
    assert!(will::never_twice(&with_will(), &with_resend.trace).is_ok());
    let twice = once.receive("s", "w", "gone", 0, false).done();
    let err = will::never_twice(&with_will(), &twice).unwrap_err();
    assert!(err.0.contains("2 times"), "{}", err.0);
}

/// A DISCONNECT the broker received deletes the will; one sent while the link was held may
/// arrive only after the broker ended the connection another way (a takeover: explorer seed
/// 719304), and then the will is due.
#[test]
fn a_will_after_a_normal_disconnect_is_caught_unless_the_link_was_blocked() {
    let build = |faults: &[&str]| {
        let mut b = Build::default()
            .online("s")
            .subscribe("s", 1, "w", 0)
            .online("d");
        for f in faults {
            b = b.fault(f);
        }
        b.push("d", Event::Sent(Packet::Disconnect(Disconnect::normal())))
            .closed("d", true)
            .receive("s", "w", "gone", 0, false)
            .done()
    };
    let err = will::never_twice(&with_will(), &build(&[])).unwrap_err();
    assert!(err.0.contains("at most 0 times"), "{}", err.0);
    assert!(will::never_twice(&with_will(), &build(&["hold d <-> broker"])).is_ok());
    assert!(will::never_twice(&with_will(), &build(&["partition d <-> broker"])).is_ok());
    // Released before the DISCONNECT: it reached the broker.
    let released = build(&["hold d <-> broker", "release d <-> broker"]);
    assert!(will::never_twice(&with_will(), &released).is_err());
    // Another host's link held does not excuse it.
    let other = build(&["hold s <-> broker"]);
    assert!(will::never_twice(&with_will(), &other).is_err());
}

#[test]
fn a_will_missing_after_an_abnormal_end_is_caught() {
    let build = |delivered: bool, fault: Option<&str>| {
        let mut b = Build::default()
            .online("s")
            .subscribe("s", 1, "w", 0)
            .online("d");
        if let Some(f) = fault {
            b = b.fault(f);
        }
        b = b.at(1.0).closed("d", true);
        if delivered {
            b = b.receive("s", "w", "gone", 0, false);
        }
        b.at(3.0).fault("end").done()
    };
    assert!(will::on_abnormal_end(&with_will(), &build(true, None)).is_ok());
    assert!(will::on_abnormal_end(&with_will(), &build(false, None)).is_err());
    // The owner's link partitioned: the broker could not see the end.
    let partitioned = build(false, Some("partition d <-> broker"));
    assert!(will::on_abnormal_end(&with_will(), &partitioned).is_ok());
    // A partition of a host whose name merely contains the owner's does not excuse it.
    let other = build(false, Some("partition dd <-> broker"));
    assert!(will::on_abnormal_end(&with_will(), &other).is_err());
}

#[test]
fn a_delivery_the_counters_cannot_place_is_caught() {
    let mut sample = tern::core::Sample::default();
    sample.stats.deliveries = 3;
    sample.stats.messages_sent.count(QoS::AtLeastOnce);
    sample.stats.qos0_dropped_offline = 1;
    sample.queued_messages = 1;
    let mut trace = Trace {
        broker_counters: BrokerCounters::Read(Box::new(sample.clone())),
        ..Trace::default()
    };
    assert!(counters::deliveries_accounted(&two(), &trace).is_ok());
    // One lost without a count.
    sample.queued_messages = 0;
    trace.broker_counters = BrokerCounters::Read(Box::new(sample.clone()));
    let (message, _) = counters::deliveries_accounted(&two(), &trace).unwrap_err();
    assert!(message.contains("1 deliveries unaccounted"), "{message}");
    // One counted twice.
    sample.queued_messages = 2;
    trace.broker_counters = BrokerCounters::Read(Box::new(sample));
    assert!(counters::deliveries_accounted(&two(), &trace).is_err());
    // A broker that was down at the end has nothing to judge; one that was up must answer.
    trace.broker_counters = BrokerCounters::BrokerDown;
    assert!(counters::deliveries_accounted(&two(), &trace).is_ok());
    trace.broker_counters = BrokerCounters::Unanswered;
    assert!(counters::deliveries_accounted(&two(), &trace).is_err());
}
