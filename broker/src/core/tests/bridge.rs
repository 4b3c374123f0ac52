//! Bridges from other brokers (the 3.x bridge bit, Mosquitto's `try_private`): loop
//! prevention and retained flags as Mosquitto and EMQX treat them. MQTT has no normative
//! statement for bridges; this follows Mosquitto's behaviour.

use super::*;

fn bridge(version: ProtocolVersion, id: &str) -> Connect {
    let mut c = connect(version, id, false);
    c.bridge = true;
    c
}

#[test]
fn a_bridge_is_not_sent_back_what_it_published() {
    for version in [V3, ProtocolVersion::V3_1] {
        let mut h = Harness::new();
        let edge = h.client(bridge(version, "edge"));
        h.subscribe(edge, "#", QoS::AtLeastOnce);
        let local = h.client(connect(V3, "local", true));
        h.subscribe(local, "#", QoS::AtLeastOnce);
        h.send(edge, publish("from-edge", "e", QoS::AtLeastOnce, 1));
        assert!(
            payloads(&h.take(edge)).is_empty(),
            "{version:?}: looped back"
        );
        assert_eq!(payloads(&h.take(local)), ["e"]);
        // What others publish does reach it.
        h.send(local, publish("from-local", "l", QoS::AtLeastOnce, 1));
        assert_eq!(payloads(&h.take(edge)), ["l"]);
        assert_eq!(h.broker.stats().bridge_connections_accepted, 1);
    }
}

#[test]
fn a_plain_client_still_gets_its_own_messages() {
    let mut h = Harness::new();
    let plain = h.client(connect(V3, "plain", true));
    h.subscribe(plain, "#", QoS::AtLeastOnce);
    h.send(plain, publish("t", "mine", QoS::AtLeastOnce, 1));
    assert_eq!(payloads(&h.take(plain)), ["mine"]);
    assert_eq!(h.broker.stats().bridge_connections_accepted, 0);
}

// A bridge gets the RETAIN flag as published, so retained state reaches the other broker;
// a plain 3.1.1 client gets it cleared on an established subscription ([MQTT-3.3.1-9]).
#[test]
fn a_bridge_gets_the_retain_flag_as_published() {
    let mut h = Harness::new();
    let edge = h.client(bridge(V3, "edge"));
    h.subscribe(edge, "#", QoS::AtLeastOnce);
    let plain = h.client(connect(V3, "plain", true));
    h.subscribe(plain, "#", QoS::AtLeastOnce);
    let p = h.client(connect(V3, "pub", true));
    h.send(p, retained("state", "on", QoS::AtLeastOnce, 1));
    let to_edge = publishes(&h.take(edge));
    assert!(to_edge.len() == 1 && to_edge[0].retain);
    let to_plain = publishes(&h.take(plain));
    assert!(to_plain.len() == 1 && !to_plain[0].retain);
}

// The bit is the 3.x levels' only: MQTT 5 bridges say No Local and Retain As Published.
#[test]
fn v5_bridges_use_no_local_and_retain_as_published() {
    let mut h = Harness::new();
    let edge = h.client(connect(V5, "edge5", false));
    let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
    options.no_local = true;
    options.retain_as_published = true;
    h.send(edge, subscribe_with(1, "#", options, Properties::new()));
    h.take(edge);
    h.send(edge, retained("from-edge", "e", QoS::AtLeastOnce, 1));
    assert!(
        payloads(&h.take(edge)).iter().all(|p| p != "e"),
        "looped back"
    );
    let p = h.client(connect(V5, "pub", true));
    h.send(p, retained("state", "on", QoS::AtLeastOnce, 1));
    let got = publishes(&h.take(edge));
    assert!(got.len() == 1 && got[0].retain);
}

// Through a shared subscription too: the group's other member gets it, the bridge never.
#[test]
fn a_bridge_in_a_shared_group_is_not_chosen_for_its_own_message() {
    let mut h = Harness::new();
    let edge = h.client(bridge(V3, "edge"));
    h.subscribe(edge, "$share/g/t", QoS::AtLeastOnce);
    let other = h.client(connect(V3, "other", true));
    h.subscribe(other, "$share/g/t", QoS::AtLeastOnce);
    for n in 1..=4 {
        h.send(edge, publish("t", &format!("m{n}"), QoS::AtLeastOnce, n));
    }
    assert!(payloads(&h.take(edge)).is_empty(), "looped back");
    assert_eq!(payloads(&h.take(other)), ["m1", "m2", "m3", "m4"]);
}

// The bridge's treatment lives in its subscriptions' options, which the store keeps: after a
// restart, before the bridge is back, what is queued for it keeps RETAIN.
#[test]
fn a_bridge_keeps_its_treatment_over_a_restart() {
    let mut h = Harness::persistent(Config::default());
    let edge = h.client(bridge(V3, "edge"));
    h.subscribe(edge, "state/#", QoS::AtLeastOnce);
    h.lose(edge);
    h.restart(secs(1));
    let p = h.client(connect(V3, "pub", true));
    h.send(p, retained("state/lamp", "on", QoS::AtLeastOnce, 1));
    let edge = h.client(bridge(V3, "edge"));
    let got = publishes(&h.take(edge));
    assert!(got.len() == 1 && got[0].retain, "{got:?}");
    h.send(edge, publish("state/x", "own", QoS::AtLeastOnce, 1));
    assert!(payloads(&h.take(edge)).is_empty(), "looped back");
}

// A plain 3.1.1 client that resumes a bridge's session does not inherit what the bridge's
// subscriptions had: it gets RETAIN cleared ([MQTT-3.3.1-9]) and its own messages.
#[test]
fn a_plain_client_resuming_a_bridges_session_is_treated_as_plain() {
    let mut h = Harness::new();
    let edge = h.client(bridge(V3, "edge"));
    h.subscribe(edge, "t", QoS::AtLeastOnce);
    h.lose(edge);
    let plain = h.client(connect(V3, "edge", false));
    h.send(plain, retained("t", "mine", QoS::AtLeastOnce, 1));
    let got = publishes(&h.take(plain));
    assert!(got.len() == 1 && !got[0].retain, "{got:?}");
}
