//! Logins and access control: each listener's policy, the driver's password verdicts, client
//! certificate identities, the delay before a failed login is answered, and the ACL on
//! SUBSCRIBE, PUBLISH, wills and deliveries (Mosquitto's behaviour where MQTT says nothing).

use std::sync::Arc;

use super::*;
use crate::auth::acl::Acl;
use bytes::BytesMut;

fn login(version: ProtocolVersion, id: &str, user: &str, password: &str) -> Connect {
    let mut c = connect(version, id, true);
    c.username = Some(s(user));
    c.password = Some(Bytes::from(password.to_owned()));
    c
}

fn with_acl(rules: &str) -> Harness {
    let mut h = Harness::new();
    h.broker
        .set_acl(0, Some(Arc::new(Acl::parse(rules).unwrap())));
    h
}

fn suback_codes(packets: &[Packet]) -> Vec<ReasonCode> {
    match packets {
        [Packet::SubAck(ack)] => ack.reason_codes.clone(),
        other => panic!("expected one SUBACK, got {other:?}"),
    }
}

fn password_file_listener() -> Config {
    Config {
        listeners: vec![ListenerAccess {
            allow_anonymous: false,
            password_file: true,
            use_identity_as_username: false,
        }],
        ..Config::default()
    }
}

#[test]
fn a_failed_login_is_answered_after_the_fixed_delay_and_ignores_what_follows() {
    let mut h = Harness::with(password_file_listener());
    let conn = h.open();
    h.broker.credentials_checked(conn, false);
    h.send(
        conn,
        Packet::Connect(Box::new(login(V5, "a", "alice", "wrong"))),
    );
    // Pipelined packets wait with the login and are never acted on.
    h.send(conn, publish("t", "x", QoS::AtMostOnce, 0));
    h.advance(LOGIN_FAILURE_DELAY - Duration::from_millis(1));
    assert!(h.take(conn).is_empty(), "answered before the delay");
    assert!(!h.is_closed(conn));
    h.advance(Duration::from_millis(1));
    match &h.take(conn)[..] {
        [Packet::ConnAck(ack)] => assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(h.is_closed(conn));
    assert_eq!(h.broker.stats().logins_failed, 1);
    assert_eq!(h.broker.stats().messages_received.total(), 0);
}

#[test]
fn a_login_that_outlasts_the_connect_timeout_still_gets_its_answer() {
    let mut config = password_file_listener();
    config.limits.connect_timeout = Duration::from_millis(500);
    let mut h = Harness::with(config);
    let conn = h.open();
    h.advance(Duration::from_millis(400));
    h.broker.credentials_checked(conn, false);
    h.send(conn, Packet::Connect(Box::new(login(V3, "a", "u", "p"))));
    h.advance(LOGIN_FAILURE_DELAY);
    match &h.take(conn)[..] {
        // 3.1.1 return code 4: bad user name or password.
        [Packet::ConnAck(ack)] => assert_eq!(ack.reason_code.to_v3_connack(), 4),
        other => panic!("expected the refusal, got {other:?}"),
    }
}

#[test]
fn a_password_file_listener_takes_only_the_drivers_good_verdict() {
    let mut h = Harness::with(password_file_listener());
    let conn = h.open();
    h.broker.credentials_checked(conn, true);
    let (_, ack) = h.connect_on(conn, login(V5, "a", "alice", "right"));
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // No verdict (the driver did not check): refused, never trusted.
    let (_, ack) = h.connect(login(V5, "b", "alice", "right"));
    assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
    // No user name on a listener without anonymous access: 0x87 / 3.1.1 code 5.
    let (_, ack) = h.connect(connect(V5, "c", true));
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    let (_, ack) = h.connect(connect(V3, "d", true));
    assert_eq!(ack.reason_code.to_v3_connack(), 5);
    assert_eq!(h.broker.stats().logins_failed, 3);
}

#[test]
fn each_listener_has_its_own_policy() {
    let config = Config {
        listeners: vec![
            ListenerAccess {
                allow_anonymous: true,
                password_file: false,
                use_identity_as_username: false,
            },
            ListenerAccess {
                allow_anonymous: false,
                password_file: false,
                use_identity_as_username: true,
            },
        ],
        ..Config::default()
    };
    let mut h = Harness::with(config);
    let (_, ack) = h.connect(connect(V5, "open", true));
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let on_tls = |identity: Option<&str>| Origin {
        listener: 1,
        identity: identity.map(str::to_owned),
        ..Origin::default()
    };
    let conn = h.open_on(on_tls(None));
    let (_, ack) = h.connect_on(conn, connect(V5, "no-cert", true));
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    // The certificate's identity is the user name the ACL sees, whatever CONNECT says.
    h.broker.set_acl(
        1,
        Some(Arc::new(
            Acl::parse("pattern readwrite devices/%u/#").unwrap(),
        )),
    );
    let conn = h.open_on(on_tls(Some("sensor-7")));
    let (conn, ack) = h.connect_on(conn, login(V5, "dev", "somebody-else", "x"));
    assert_eq!(ack.reason_code, ReasonCode::Success);
    h.send(conn, subscribe(1, "devices/sensor-7/#", QoS::AtMostOnce));
    assert_eq!(suback_codes(&h.take(conn)), [ReasonCode::Success]);
    h.send(
        conn,
        subscribe(2, "devices/somebody-else/#", QoS::AtMostOnce),
    );
    assert_eq!(suback_codes(&h.take(conn)), [ReasonCode::NotAuthorized]);
}

#[test]
fn denied_subscriptions_get_0x87_or_0x80() {
    let mut h = with_acl("topic read public/#\n");
    let v5 = h.client(connect(V5, "five", true));
    h.send(
        v5,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Properties::new(),
            filters: vec![
                (s("public/+"), SubscriptionOptions::new(QoS::AtMostOnce)),
                (s("#"), SubscriptionOptions::new(QoS::AtMostOnce)),
                (
                    s("$share/g/secret"),
                    SubscriptionOptions::new(QoS::AtMostOnce),
                ),
                (
                    s("$share/g/public/x"),
                    SubscriptionOptions::new(QoS::AtMostOnce),
                ),
            ],
        }),
    );
    assert_eq!(
        suback_codes(&h.take(v5)),
        [
            ReasonCode::Success,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::Success
        ]
    );
    let v3 = h.client(connect(V3, "three", true));
    h.send(v3, subscribe(1, "private", QoS::AtLeastOnce));
    let codes = suback_codes(&h.take(v3));
    // 3.1.1 has one failure code.
    let mut out = BytesMut::new();
    encode(
        &Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: Properties::new(),
            reason_codes: codes,
        }),
        V3,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.last(), Some(&0x80));
    assert_eq!(h.broker.stats().subscriptions_denied, 3);
}

// spec: [MQTT-3.3.5-2] (v3.1.1: an unauthorized PUBLISH is acknowledged as usual, not routed)
#[test]
fn denied_publishes_are_refused_in_v5_and_acknowledged_and_dropped_in_v3() {
    let mut h = with_acl("topic read #\ntopic write allowed\n");
    let watcher = h.client(connect(V5, "w", true));
    h.subscribe(watcher, "#", QoS::ExactlyOnce);
    let v5 = h.client(connect(V5, "five", true));
    h.send(v5, publish("denied", "a", QoS::AtLeastOnce, 1));
    h.send(v5, publish("denied", "b", QoS::ExactlyOnce, 2));
    h.send(v5, publish("denied", "c", QoS::AtMostOnce, 0));
    let acks: Vec<(PacketType, ReasonCode)> = h
        .take(v5)
        .iter()
        .map(|p| match p {
            Packet::PubAck(a) => (PacketType::PubAck, a.reason_code),
            Packet::PubRec(a) => (PacketType::PubRec, a.reason_code),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        acks,
        [
            (PacketType::PubAck, ReasonCode::NotAuthorized),
            (PacketType::PubRec, ReasonCode::NotAuthorized)
        ]
    );
    let v3 = h.client(connect(V3, "three", true));
    h.send(v3, publish("denied", "d", QoS::AtLeastOnce, 1));
    h.send(v3, publish("denied", "e", QoS::ExactlyOnce, 2));
    h.send(v3, Packet::PubRel(Ack::new(pid(2))));
    let replies = h.take(v3);
    assert!(
        matches!(&replies[..], [Packet::PubAck(a), Packet::PubRec(b), Packet::PubComp(c)]
            if a.reason_code == ReasonCode::Success && b.reason_code == ReasonCode::Success
                && c.reason_code == ReasonCode::Success),
        "{replies:?}"
    );
    assert!(
        payloads(&h.take(watcher)).is_empty(),
        "a denied message was routed"
    );
    assert_eq!(h.broker.stats().publishes_denied, 5);
    h.send(v3, publish("allowed", "ok", QoS::AtMostOnce, 0));
    assert_eq!(payloads(&h.take(watcher)), ["ok"]);
}

#[test]
fn nobody_publishes_to_sys_or_share_topics_even_without_an_acl() {
    let mut h = Harness::new();
    let watcher = h.client(connect(V5, "w", true));
    h.subscribe(watcher, "$SYS/#", QoS::AtMostOnce);
    let c = h.client(connect(V5, "c", true));
    h.send(
        c,
        publish("$SYS/broker/uptime", "fake", QoS::AtLeastOnce, 1),
    );
    h.send(c, publish("$share/g/t", "fake", QoS::AtLeastOnce, 2));
    let acks: Vec<ReasonCode> = h
        .take(c)
        .iter()
        .map(|p| match p {
            Packet::PubAck(a) => a.reason_code,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(acks, [ReasonCode::NotAuthorized, ReasonCode::NotAuthorized]);
    assert_eq!(h.broker.stats().publishes_denied, 2);
    assert!(h.take(watcher).is_empty());
    // A will on such a topic is refused at CONNECT.
    let mut w = connect(V5, "w2", true);
    w.will = Some(will("$SYS/broker/fake", "x", QoS::AtMostOnce, false));
    assert_eq!(h.connect(w).1.reason_code, ReasonCode::NotAuthorized);
}

#[test]
fn a_will_needs_write_access_to_its_topic() {
    let mut h = with_acl("topic write status/ok\ntopic read #\n");
    let mut c = connect(V3, "c", true);
    c.will = Some(will("status/other", "gone", QoS::AtMostOnce, false));
    assert_eq!(h.connect(c.clone()).1.reason_code.to_v3_connack(), 5);
    c.will = Some(will("status/ok", "gone", QoS::AtMostOnce, false));
    assert_eq!(h.connect(c).1.reason_code, ReasonCode::Success);
}

#[test]
fn deliveries_are_checked_against_the_subscribers_read_rights() {
    // The filter a/# passes (a read rule matches it taken literally), but a/b/c is not
    // readable: the check at delivery holds the line.
    let mut h = with_acl("topic read a/#\ntopic deny a/secret/#\nuser pub\ntopic write #\n");
    let sub = h.client(connect(V5, "sub", true));
    h.subscribe(sub, "a/#", QoS::AtLeastOnce);
    let p = h.client(login(V5, "p", "pub", "x"));
    h.send(p, publish("a/open", "1", QoS::AtMostOnce, 0));
    h.send(p, publish("a/secret/x", "2", QoS::AtMostOnce, 0));
    h.send(p, publish("a/open/deeper", "3", QoS::AtLeastOnce, 1));
    assert_eq!(payloads(&h.take(sub)), ["1", "3"]);
    assert_eq!(h.broker.stats().deliveries_denied, 1);
    // Retained messages at SUBSCRIBE are checked too.
    h.send(p, retained("a/secret/r", "hidden", QoS::AtMostOnce, 0));
    h.send(p, retained("a/open/r", "shown", QoS::AtMostOnce, 0));
    let late = h.client(connect(V5, "late", true));
    assert_eq!(h.broker.stats().publishes_denied, 0);
    h.send(late, subscribe(1, "a/#", QoS::AtMostOnce));
    assert_eq!(payloads(&h.take(late)), ["shown"]);
}

#[test]
fn a_shared_group_member_that_may_not_read_is_never_chosen() {
    let mut h =
        with_acl("user reader\ntopic read #\nuser other\ntopic read t/public\ntopic write #\n");
    let reader = h.client(login(V5, "r", "reader", "x"));
    let other = h.client(login(V5, "o", "other", "x"));
    h.subscribe(reader, "$share/g/t/+", QoS::AtMostOnce);
    h.subscribe(other, "$share/g/t/+", QoS::AtMostOnce);
    let p = h.client(login(V5, "p", "other", "x"));
    for i in 0..4 {
        h.send(p, publish("t/private", &i.to_string(), QoS::AtMostOnce, 0));
    }
    assert_eq!(payloads(&h.take(reader)), ["0", "1", "2", "3"]);
    assert!(payloads(&h.take(other)).is_empty());
}

#[test]
fn patterns_and_a_reload_take_effect_for_the_next_check() {
    let mut h = with_acl("pattern readwrite clients/%c/#\n");
    let c = h.client(connect(V3, "dev1", true));
    h.subscribe(c, "clients/dev1/#", QoS::AtMostOnce);
    h.send(c, publish("clients/dev1/x", "mine", QoS::AtMostOnce, 0));
    assert_eq!(payloads(&h.take(c)), ["mine"]);
    // The operator removes the rule: the subscription stays, its deliveries stop.
    h.broker
        .set_acl(0, Some(Arc::new(Acl::parse("topic write #\n").unwrap())));
    h.send(c, publish("clients/dev1/x", "later", QoS::AtMostOnce, 0));
    assert!(payloads(&h.take(c)).is_empty());
    h.broker.set_acl(0, None);
    h.send(c, publish("clients/dev1/x", "open", QoS::AtMostOnce, 0));
    assert_eq!(payloads(&h.take(c)), ["open"]);
}

#[test]
fn a_will_is_judged_by_the_user_enhanced_authentication_names() {
    use crate::auth::scram::{ScramClient, METHOD};
    // Mallory may log in (SCRAM) but not write cmd/#; admin may.
    let mut config = Config {
        allow_anonymous: false,
        ..Config::default()
    };
    config.scram.users.insert("mallory".into(), "pw".into());
    config.scram.iterations = 64;
    let mut h = Harness::with(config);
    let rules = "user admin\ntopic write cmd/#\nuser mallory\ntopic read #\n";
    h.broker
        .set_acl(0, Some(Arc::new(Acl::parse(rules).unwrap())));
    let mut client = ScramClient::new("mallory", "pw", "n");
    // She claims to be admin in CONNECT and sets a will on admin's topic.
    let mut c = connect(V5, "m", true);
    c.username = Some(s("admin"));
    c.will = Some(will("cmd/shutdown", "now", QoS::AtMostOnce, false));
    c.properties.push(Property::AuthenticationMethod(s(METHOD)));
    c.properties.push(Property::AuthenticationData(Bytes::from(
        client.client_first(),
    )));
    let conn = h.open();
    h.send(conn, Packet::Connect(Box::new(c)));
    let Packet::Auth(challenge) = h.take(conn).remove(0) else {
        panic!("expected the SCRAM challenge")
    };
    let server_first = challenge.properties.authentication_data().unwrap().to_vec();
    let final_message = client.client_final(&server_first).unwrap();
    let mut properties = Properties::new();
    properties.push(Property::AuthenticationMethod(s(METHOD)));
    properties.push(Property::AuthenticationData(Bytes::from(final_message)));
    h.send(
        conn,
        Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties,
        }),
    );
    match &h.take(conn)[..] {
        [Packet::ConnAck(ack)] => assert_eq!(ack.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(h.broker.stats().publishes_denied, 1, "refused for the will");
}

#[test]
fn a_scram_users_name_is_not_taken_without_its_proof() {
    let mut config = Config::default();
    config.scram.users.insert("admin".into(), "pw".into());
    config.scram.iterations = 64;
    let mut h = Harness::with(config);
    let (_, ack) = h.connect(login(V5, "x", "admin", "anything"));
    assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
    // Other names are taken as given where anonymous access is on (Mosquitto's rule).
    let (_, ack) = h.connect(login(V5, "y", "guest", "anything"));
    assert_eq!(ack.reason_code, ReasonCode::Success);
}

#[test]
fn a_client_id_held_by_another_login_is_refused_and_its_session_kept() {
    let mut h = Harness::new();
    let mut persistent = login(V3, "phone", "alice", "x");
    persistent.clean_start = false;
    let alice = h.client(persistent.clone());
    h.subscribe(alice, "alice/inbox", QoS::AtLeastOnce);
    h.send(alice, Packet::Disconnect(Disconnect::normal()));
    let p = h.client(connect(V3, "p", true));
    h.send(p, publish("alice/inbox", "secret", QoS::AtLeastOnce, 1));
    // Someone else (no user name, then another user name) takes the client id, resuming or
    // starting clean: refused, and alice's session is untouched.
    for mut thief in [
        connect(V3, "phone", false),
        login(V3, "phone", "mallory", "x"),
    ] {
        for clean in [false, true] {
            thief.clean_start = clean;
            let (conn, ack) = h.connect(thief.clone());
            assert_eq!(ack.reason_code.to_v3_connack(), 5, "clean {clean}");
            assert!(h.is_closed(conn));
        }
    }
    // The same name on another listener (where it may not be verified) is another login.
    let elsewhere = h.open_on(Origin {
        listener: 1,
        identity: None,
        ..Origin::default()
    });
    let (_, ack) = h.connect_on(elsewhere, persistent.clone());
    assert_eq!(ack.reason_code.to_v3_connack(), 5);
    // While alice is connected, a thief cannot take her connection over either.
    let (alice, ack) = h.connect(persistent.clone());
    assert!(ack.session_present);
    assert_eq!(payloads(&h.take(alice)), ["secret"]);
    let (_, ack) = h.connect(connect(V3, "phone", true));
    assert_eq!(ack.reason_code.to_v3_connack(), 5);
    assert!(
        !h.is_closed(alice),
        "the thief took alice's connection over"
    );
}

#[test]
fn a_malformed_packet_behind_a_failed_login_does_not_hurry_the_refusal() {
    let mut h = Harness::with(password_file_listener());
    let conn = h.open();
    h.broker.credentials_checked(conn, false);
    h.send(
        conn,
        Packet::Connect(Box::new(login(V5, "a", "alice", "bad"))),
    );
    let error = DecodeError::UnsupportedProtocolLevel {
        name: "MQTT".into(),
        level: 9,
    };
    h.broker.decode_failed(conn, &error, h.now);
    h.settle();
    assert!(
        h.take(conn).is_empty() && !h.is_closed(conn),
        "answered early"
    );
    h.advance(LOGIN_FAILURE_DELAY);
    assert!(
        matches!(&h.take(conn)[..], [Packet::ConnAck(a)] if a.reason_code == ReasonCode::BadUserNameOrPassword)
    );
}

#[test]
fn enhanced_authentication_is_refused_where_the_certificate_names_the_user() {
    let mut config = Config::default();
    config.scram.users.insert("alice".into(), "pw".into());
    config.scram.iterations = 64;
    config.listeners = vec![ListenerAccess {
        allow_anonymous: false,
        password_file: false,
        use_identity_as_username: true,
    }];
    let mut h = Harness::with(config);
    let conn = h.open_on(Origin {
        listener: 0,
        identity: Some("device-1".into()),
        ..Origin::default()
    });
    let mut c = connect(V5, "x", true);
    c.properties.push(Property::AuthenticationMethod(s(
        crate::auth::scram::METHOD,
    )));
    let (_, ack) = h.connect_on(conn, c);
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
}

#[test]
fn a_login_on_a_listener_that_is_gone_fails_closed() {
    let mut h = with_acl("topic readwrite #\n");
    // A session stored when the broker had a second listener, judged now with one.
    let conn = h.open_on(Origin {
        listener: 1,
        identity: None,
        ..Origin::default()
    });
    let (conn, _) = h.connect_on(conn, connect(V5, "old", true));
    h.send(conn, subscribe(1, "t", QoS::AtMostOnce));
    assert_eq!(suback_codes(&h.take(conn)), [ReasonCode::NotAuthorized]);
    // Without any ACL nothing is judged.
    h.broker.set_acl(0, None);
    h.send(conn, subscribe(2, "t", QoS::AtMostOnce));
    assert_eq!(suback_codes(&h.take(conn)), [ReasonCode::Success]);
}

/// `$SYS` is readable by anyone without an ACL ([MQTT-4.7.2-1] keeps it from `#`); with one,
/// only by those it names (wildcard rules do not reach `$` topics).
#[test]
fn sys_values_reach_those_the_acl_lets_read_them_and_never_hash() {
    let mut open = Harness::new();
    let all = open.client(connect(V5, "all", true));
    open.subscribe(all, "#", QoS::AtMostOnce);
    let sys = open.client(connect(V5, "sys", true));
    open.subscribe(sys, "$SYS/#", QoS::AtMostOnce);
    open.broker
        .publish_system("$SYS/broker/version", Bytes::from_static(b"v"), open.now);
    open.settle();
    assert!(open.take(all).is_empty(), "# matched a $SYS topic");
    assert_eq!(payloads(&open.take(sys)), ["v"]);

    let mut h =
        with_acl("user ops\ntopic read $SYS/#\ntopic readwrite #\nuser dev\ntopic readwrite #\n");
    let ops = h.client(login(V5, "ops", "ops", "x"));
    let dev = h.client(login(V5, "dev", "dev", "x"));
    h.send(ops, subscribe(1, "$SYS/#", QoS::AtMostOnce));
    assert_eq!(suback_codes(&h.take(ops)), [ReasonCode::Success]);
    h.send(dev, subscribe(1, "$SYS/#", QoS::AtMostOnce));
    assert_eq!(suback_codes(&h.take(dev)), [ReasonCode::NotAuthorized]);
    h.broker
        .publish_system("$SYS/broker/version", Bytes::from_static(b"v"), h.now);
    h.settle();
    assert_eq!(payloads(&h.take(ops)), ["v"]);
    assert!(h.take(dev).is_empty());
}

/// A member's shared messages that no other member may read stay with it when it goes away:
/// resent when it is back, never handed to a member that would drop them.
#[test]
fn shared_messages_nobody_else_may_read_stay_with_their_member() {
    // `other` may subscribe to t/+ but not read t/private.
    let mut h = with_acl(
        "user reader\ntopic read #\nuser other\ntopic read t/+\ntopic deny t/private\nuser pub\ntopic write #\n",
    );
    let mut persistent = login(V5, "r", "reader", "x");
    persistent.clean_start = false;
    persistent
        .properties
        .push(Property::SessionExpiryInterval(60));
    let reader = h.client(persistent.clone());
    let other = h.client(login(V5, "o", "other", "x"));
    h.subscribe(reader, "$share/g/t/+", QoS::AtLeastOnce);
    h.send(other, subscribe(1, "$share/g/t/+", QoS::AtLeastOnce));
    assert_eq!(suback_codes(&h.take(other)), [ReasonCode::GrantedQoS1]);
    let p = h.client(login(V5, "p", "pub", "x"));
    h.send(p, publish("t/private", "in flight", QoS::AtLeastOnce, 1));
    assert_eq!(payloads(&h.take(reader)), ["in flight"]);
    // Gone without acknowledging: the connected `other` may not read it, so it stays.
    h.lose(reader);
    h.send(p, publish("t/private", "queued", QoS::AtLeastOnce, 2));
    assert!(h.take(other).is_empty());
    let (reader, ack) = h.connect(persistent);
    assert!(ack.session_present);
    assert_eq!(payloads(&h.take(reader)), ["in flight", "queued"]);
    let stats = h.broker.stats();
    assert_eq!(stats.deliveries_moved, 0, "{stats:#?}");
    assert_eq!(stats.shared_dropped_no_member, 0);
    assert_eq!(stats.shared_unclaimed, 0);
    assert_eq!(h.broker.sample().unaccounted_deliveries(), 0);
}
