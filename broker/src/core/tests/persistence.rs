//! Persistence in the core: what is journalled, what waits for it, and what a restart from
//! the store brings back (see `durable.rs`, `restore.rs`). The store is the in-memory
//! reference store; `Harness::restart` is a crash: uncommitted batches are lost.

use super::*;

fn persistent_v3(id: &str) -> Connect {
    connect(V3, id, false)
}

fn persistent_v5(id: &str, expiry: u32) -> Connect {
    let mut c = connect(V5, id, false);
    c.properties.push(Property::SessionExpiryInterval(expiry));
    c
}

/// A persistent subscriber to `t` at `qos`, disconnected.
fn away_subscriber(h: &mut Harness, qos: QoS) -> Connect {
    let c = persistent_v3("sub");
    let sub = h.client(c.clone());
    h.subscribe(sub, "t", qos);
    h.lose(sub);
    c
}

// spec: [MQTT-3.1.2-4] [MQTT-3.1.2-5] 3.1.1: the session, its subscriptions and the QoS 1/2
// messages that arrived while its client was away outlive the broker process.
#[test]
fn a_persistent_session_and_its_queued_messages_survive_a_restart() {
    let mut h = Harness::persistent(Config::default());
    let c = away_subscriber(&mut h, QoS::AtLeastOnce);
    let p = h.client(connect(V3, "pub", true));
    h.send(p, publish("t", "m1", QoS::AtLeastOnce, 1));
    h.send(p, publish("t", "m2", QoS::AtLeastOnce, 2));
    h.send(p, publish("t", "dropped", QoS::AtMostOnce, 0));
    assert_eq!(h.take(p).len(), 2, "both PUBACKs, once durable");
    h.restart(secs(5));
    let (sub, ack) = h.connect(c);
    assert!(ack.session_present);
    assert_eq!(payloads(&h.take(sub)), ["m1", "m2"]);
    // The subscription came back too.
    let p = h.client(connect(V3, "pub", true));
    h.send(p, publish("t", "m3", QoS::AtLeastOnce, 3));
    assert_eq!(payloads(&h.take(sub)), ["m3"]);
}

// The write-ahead rule: no acknowledgement, and no QoS 2 delivery to a stored session,
// before the batch is durable; QoS 1 deliveries (a crash can only duplicate them) and clean
// sessions do not wait.
#[test]
fn acknowledgements_and_stored_qos2_deliveries_wait_for_the_commit() {
    let mut h = Harness::persistent(Config::default());
    let stored = h.client(persistent_v5("stored", 600));
    let stored1 = h.client(persistent_v5("stored1", 600));
    h.subscribe(stored1, "t", QoS::AtLeastOnce);
    h.commit_at_once = false;
    h.send(stored, subscribe(1, "t", QoS::ExactlyOnce));
    assert!(
        h.take(stored).is_empty(),
        "SUBACK waits for the session record"
    );
    h.commit();
    assert!(matches!(&h.take(stored)[..], [Packet::SubAck(_)]));
    let clean = h.client(connect(V5, "clean", true));
    h.subscribe(clean, "t", QoS::AtLeastOnce);
    let p = h.client(connect(V5, "pub", true));
    h.send(p, publish("t", "m", QoS::ExactlyOnce, 1));
    assert!(h.take(p).is_empty(), "no PUBREC before the commit");
    assert!(
        h.take(stored).is_empty(),
        "no QoS 2 delivery to the stored session before it"
    );
    assert_eq!(payloads(&h.take(stored1)), ["m"], "QoS 1 does not wait");
    assert_eq!(
        payloads(&h.take(clean)),
        ["m"],
        "the clean session does not wait"
    );
    // A PINGREQ after it changes nothing durable, but must not overtake the PUBREC.
    h.send(p, Packet::PingReq);
    assert!(h.take(p).is_empty());
    h.commit();
    assert!(matches!(
        &h.take(p)[..],
        [Packet::PubRec(_), Packet::PingResp]
    ));
    let to_stored = publishes(&h.take(stored));
    assert_eq!(to_stored.len(), 1);
    // Its PUBREL waits until the store says released.
    h.send(
        stored,
        Packet::PubRec(Ack::new(to_stored[0].packet_id.unwrap())),
    );
    assert!(h.take(stored).is_empty());
    h.commit();
    assert!(matches!(&h.take(stored)[..], [Packet::PubRel(_)]));
}

// A crash before the commit: the publisher never got its PUBACK, so the message is its to
// resend, and the store does not have it.
#[test]
fn a_crash_before_the_commit_loses_only_what_was_not_acknowledged() {
    let mut h = Harness::persistent(Config::default());
    let c = away_subscriber(&mut h, QoS::AtLeastOnce);
    let p = h.client(connect(V3, "pub", true));
    h.send(p, publish("t", "acked", QoS::AtLeastOnce, 1));
    assert_eq!(h.take(p).len(), 1);
    h.commit_at_once = false;
    h.send(p, publish("t", "not acked", QoS::AtLeastOnce, 2));
    assert!(h.take(p).is_empty());
    h.restart(secs(1));
    h.commit_at_once = true;
    let sub = h.client(c);
    assert_eq!(payloads(&h.take(sub)), ["acked"]);
}

// spec: [MQTT-4.4.0-1]: after a restart, unacknowledged messages are resent with DUP and their
// packet ids, and a released QoS 2 message gets its PUBREL again.
#[test]
fn in_flight_messages_are_resent_after_a_restart_with_their_ids() {
    let mut h = Harness::persistent(Config::default());
    let c = persistent_v5("sub", 600);
    let sub = h.client(c.clone());
    h.subscribe(sub, "t", QoS::ExactlyOnce);
    let p = h.client(connect(V5, "pub", true));
    h.send(p, publish("t", "one", QoS::ExactlyOnce, 1));
    h.send(p, publish("t", "two", QoS::ExactlyOnce, 2));
    let sent = publishes(&h.take(sub));
    assert_eq!(sent.len(), 2);
    h.send(sub, Packet::PubRec(Ack::new(sent[0].packet_id.unwrap())));
    assert!(matches!(&h.take(sub)[..], [Packet::PubRel(_)]));
    h.restart(secs(1));
    let (sub, ack) = h.connect(c);
    assert!(ack.session_present);
    match &h.take(sub)[..] {
        [Packet::PubRel(rel), Packet::Publish(two)] => {
            assert_eq!(Some(rel.packet_id), sent[0].packet_id);
            assert!(two.dup);
            assert_eq!(two.packet_id, sent[1].packet_id);
            assert_eq!(two.payload(), b"two");
        }
        other => panic!("{other:?}"),
    }
}

// spec: [MQTT-4.3.3-2]: a QoS 2 message taken before the restart is not routed again when its
// publisher resends it after the restart.
#[test]
fn a_qos2_message_taken_before_a_restart_is_not_routed_twice() {
    let mut h = Harness::persistent(Config::default());
    let c = away_subscriber(&mut h, QoS::ExactlyOnce);
    let pc = persistent_v3("pub");
    let p = h.client(pc.clone());
    h.send(p, publish("t", "once", QoS::ExactlyOnce, 7));
    assert!(matches!(&h.take(p)[..], [Packet::PubRec(_)]));
    h.restart(secs(1));
    let p = h.client(pc);
    let Packet::Publish(mut again) = publish("t", "once", QoS::ExactlyOnce, 7) else {
        unreachable!()
    };
    again.dup = true;
    h.send(p, Packet::Publish(again));
    assert!(matches!(&h.take(p)[..], [Packet::PubRec(_)]));
    h.send(p, Packet::PubRel(Ack::new(pid(7))));
    assert!(matches!(&h.take(p)[..], [Packet::PubComp(c)] if c.reason_code == ReasonCode::Success));
    let sub = h.client(c);
    assert_eq!(payloads(&h.take(sub)), ["once"]);
}

#[test]
fn retained_messages_survive_a_restart_and_deletes_do_too() {
    let mut h = Harness::persistent(Config::default());
    let p = h.client(connect(V5, "pub", true));
    h.commit_at_once = false;
    h.send(p, retained("a", "qos0", QoS::AtMostOnce, 0));
    h.send(p, retained("b", "qos1", QoS::AtLeastOnce, 1));
    h.send(p, retained("c", "gone", QoS::AtLeastOnce, 2));
    h.send(p, retained("c", "", QoS::AtLeastOnce, 3));
    assert!(h.take(p).is_empty());
    h.commit();
    assert_eq!(h.take(p).len(), 3, "the PUBACKs, after the commit");
    h.restart(secs(1));
    h.commit_at_once = true;
    let sub = h.client(connect(V5, "sub", true));
    h.send(sub, subscribe(1, "#", QoS::AtLeastOnce));
    assert_eq!(payloads(&h.take(sub)), ["qos0", "qos1"]);
}

// A retained QoS 0 message is stored with the next batch but nobody waits for it.
#[test]
fn a_retained_qos0_message_is_stored_lazily() {
    let mut h = Harness::persistent(Config::default());
    h.commit_at_once = false;
    let sub = h.client(connect(V5, "sub", true));
    h.subscribe(sub, "t", QoS::AtMostOnce);
    let p = h.client(connect(V5, "pub", true));
    h.send(p, retained("t", "now", QoS::AtMostOnce, 0));
    assert_eq!(payloads(&h.take(sub)), ["now"]);
    assert_eq!(
        h.uncommitted.len(),
        1,
        "the retained message is on its way to the store"
    );
}

// spec: [MQTT-3.1.2-23] (v5): the expiry is a deadline on the wall clock; time the broker was
// down counts.
#[test]
fn session_expiry_counts_the_time_the_broker_was_down() {
    let mut h = Harness::persistent(Config::default());
    for (down, present) in [(5, true), (20, false)] {
        let c = persistent_v5(&format!("s{down}"), 10);
        let s1 = h.client(c.clone());
        h.subscribe(s1, "t", QoS::AtLeastOnce);
        h.lose(s1);
        h.advance(secs(2));
        h.restart(secs(down));
        h.advance(secs(1));
        let (_, ack) = h.connect(c);
        assert_eq!(ack.session_present, present, "down {down} s");
    }
}

// A session whose client was connected at the crash gets its whole expiry from the restart.
#[test]
fn a_session_connected_at_the_crash_expires_its_interval_after_the_restart() {
    let mut h = Harness::persistent(Config::default());
    let c = persistent_v5("s", 10);
    h.client(c.clone());
    h.restart(secs(100));
    h.advance(secs(9));
    let (_, ack) = h.connect(c.clone());
    assert!(ack.session_present);
    let mut h = Harness::persistent(Config::default());
    h.client(c.clone());
    h.restart(secs(100));
    h.advance(secs(11));
    let (_, ack) = h.connect(c);
    assert!(!ack.session_present);
}

// spec: [MQTT-3.1.3-9] (v5): a delayed will still waits for its delay after a restart.
#[test]
fn a_delayed_will_is_published_after_a_restart_when_its_delay_passes() {
    let mut h = Harness::persistent(Config::default());
    let watcher_c = persistent_v5("watcher", 600);
    let watcher = h.client(watcher_c.clone());
    h.subscribe(watcher, "will", QoS::AtLeastOnce);
    let mut c = persistent_v5("dying", 600);
    let mut w = will("will", "gone", QoS::AtLeastOnce, false);
    w.properties.push(Property::WillDelayInterval(30));
    c.will = Some(w);
    let dying = h.client(c);
    h.lose(dying);
    h.restart(secs(10));
    let watcher = h.client(watcher_c);
    h.advance(secs(15));
    assert!(h.take(watcher).is_empty(), "20 s of 30 have passed");
    h.advance(secs(6));
    assert_eq!(payloads(&h.take(watcher)), ["gone"]);
}

// A clean session never reaches the store; a v5 session reconnecting with expiry 0 leaves it.
#[test]
fn clean_sessions_are_never_stored_and_a_session_made_clean_leaves_the_store() {
    let mut h = Harness::persistent(Config::default());
    let clean = h.client(connect(V5, "clean", true));
    h.subscribe(clean, "t", QoS::AtLeastOnce);
    assert!(h.store.as_ref().unwrap().snapshot().sessions.is_empty());
    let s1 = h.client(persistent_v5("s", 600));
    h.subscribe(s1, "t", QoS::AtLeastOnce);
    assert_eq!(h.store.as_ref().unwrap().snapshot().sessions.len(), 1);
    h.lose(s1);
    h.client(persistent_v5("s", 0));
    assert!(h.store.as_ref().unwrap().snapshot().sessions.is_empty());
}

// Acknowledged entries leave the store: a steady flow does not grow it.
#[test]
fn delivered_messages_leave_the_store() {
    let mut h = Harness::persistent(Config::default());
    let sub = h.client(persistent_v5("sub", 600));
    h.subscribe(sub, "t", QoS::ExactlyOnce);
    let p = h.client(connect(V5, "pub", true));
    for n in 1..=20u16 {
        h.send(p, publish("t", "m", QoS::AtLeastOnce, n));
        h.take(p);
        for packet in h.take(sub) {
            if let Packet::Publish(m) = packet {
                h.send(sub, Packet::PubAck(Ack::new(m.packet_id.unwrap())));
            }
        }
    }
    let store = h.store.as_ref().unwrap();
    assert_eq!(store.entries_in(|_| true), 0);
    assert_eq!(h.broker.stats().inflight_bytes, 0);
}

// What the queue drops (full, too old) leaves the store too: a restart must not bring back a
// message the limits had already thrown away.
#[test]
fn messages_the_queue_drops_leave_the_store() {
    let mut config = Config::default();
    config.limits.queued_messages_max = 2;
    let mut h = Harness::persistent(config);
    let c = away_subscriber(&mut h, QoS::AtLeastOnce);
    let p = h.client(connect(V3, "pub", true));
    for n in 1..=3 {
        h.send(p, publish("t", &format!("m{n}"), QoS::AtLeastOnce, n));
    }
    assert_eq!(h.store.as_ref().unwrap().entries_in(|_| true), 2);
    h.restart(secs(1));
    let sub = h.client(c);
    assert_eq!(payloads(&h.take(sub)), ["m2", "m3"]);
}

// A full disk: new persistent work is refused with codes that say so, the rest goes on.
#[test]
fn with_the_store_full_persistent_work_is_refused_and_the_rest_goes_on() {
    let mut h = Harness::persistent(Config::default());
    let stored = h.client(persistent_v5("stored", 600));
    h.subscribe(stored, "t", QoS::AtLeastOnce);
    let clean = h.client(connect(V5, "clean", true));
    h.subscribe(clean, "c", QoS::AtLeastOnce);
    let p = h.client(connect(V5, "pub", true));
    h.broker.store_full(true);
    // A persistent session cannot be made or resumed, in either protocol.
    let (_, ack) = h.connect(persistent_v5("new", 600));
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    let (_, ack) = h.connect(persistent_v3("new3"));
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable);
    // A stored session cannot subscribe.
    h.send(stored, subscribe(2, "more", QoS::AtLeastOnce));
    match &h.take(stored)[..] {
        [Packet::SubAck(ack)] => assert_eq!(ack.reason_codes, [ReasonCode::QuotaExceeded]),
        other => panic!("{other:?}"),
    }
    // A QoS 1 message for the stored session, or a retained one, is refused; one only for a
    // clean session is taken; QoS 0 goes everywhere.
    h.send(p, publish("t", "stored", QoS::AtLeastOnce, 1));
    h.send(p, retained("c", "retained", QoS::AtLeastOnce, 2));
    h.send(p, publish("c", "clean", QoS::AtLeastOnce, 3));
    h.send(p, publish("t", "qos0", QoS::AtMostOnce, 0));
    let codes: Vec<ReasonCode> = h
        .take(p)
        .into_iter()
        .map(|packet| match packet {
            Packet::PubAck(ack) => ack.reason_code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded,
            ReasonCode::Success
        ]
    );
    assert_eq!(payloads(&h.take(clean)), ["clean"]);
    assert_eq!(payloads(&h.take(stored)), ["qos0"]);
    assert_eq!(h.broker.stats().publishes_refused_store_full, 2);
    // Room again: everything is taken.
    h.broker.store_full(false);
    h.send(p, publish("t", "stored", QoS::AtLeastOnce, 4));
    assert!(matches!(&h.take(p)[..], [Packet::PubAck(a)] if a.reason_code == ReasonCode::Success));
    assert_eq!(payloads(&h.take(stored)), ["stored"]);
    let (_, ack) = h.connect(persistent_v3("new3"));
    assert_eq!(ack.reason_code, ReasonCode::Success);
}

// A retained message that expires leaves the store too (lazily), so it is not kept and
// reloaded for ever.
#[test]
fn an_expired_retained_message_leaves_the_store() {
    let mut h = Harness::persistent(Config::default());
    let p = h.client(connect(V5, "pub", true));
    let Packet::Publish(mut m) = retained("t", "short", QoS::AtLeastOnce, 1) else {
        unreachable!()
    };
    m.properties.push(Property::MessageExpiryInterval(1));
    h.send(p, Packet::Publish(m));
    assert_eq!(h.store.as_ref().unwrap().snapshot().retained.len(), 1);
    h.advance(secs(2));
    // The next PUBLISH purges it, and the batch after takes it out of the store.
    h.send(p, publish("other", "x", QoS::AtLeastOnce, 2));
    h.send(p, publish("other", "y", QoS::AtLeastOnce, 3));
    assert!(h.store.as_ref().unwrap().snapshot().retained.is_empty());
}

// A session stored under a longer expiry than the broker now allows gets the cap now.
#[test]
fn a_restored_session_gets_the_expiry_cap_of_the_broker_now() {
    let mut h = Harness::persistent(Config::default());
    let c = persistent_v5("s", 3600);
    let s1 = h.client(c.clone());
    h.lose(s1);
    let mut lowered = h.broker.config.clone();
    lowered.limits.session_expiry_max_secs = 10;
    h.broker.config = lowered;
    h.restart(secs(1));
    h.advance(secs(11));
    let (_, ack) = h.connect(c);
    assert!(
        !ack.session_present,
        "kept beyond the cap the broker has now"
    );
}

#[test]
fn sys_values_are_retained_but_never_stored() {
    let mut h = Harness::persistent(Config::default());
    h.broker.publish_system(
        "$SYS/broker/uptime",
        Bytes::from_static(b"5 seconds"),
        h.now,
    );
    h.settle();
    assert!(h.uncommitted.is_empty(), "a batch for a $SYS value");
    // Retained: a later subscriber gets it at once.
    let sub = h.client(connect(V3, "watcher", true));
    h.send(sub, subscribe(1, "$SYS/broker/#", QoS::AtMostOnce));
    let got = publishes(&h.take(sub));
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    assert_eq!(got[0].payload(), b"5 seconds");
    // Gone after a restart, until the new process publishes its own.
    h.commit();
    h.restart(secs(1));
    let sub = h.client(connect(V3, "watcher", true));
    h.send(sub, subscribe(1, "$SYS/broker/#", QoS::AtMostOnce));
    let packets = h.take(sub);
    assert!(matches!(packets[..], [Packet::SubAck(_)]), "{packets:?}");
}
