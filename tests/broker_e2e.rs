//! End-to-end tests: the real broker on 127.0.0.1:0, real TCP, a raw codec client.
//! Includes the walkthrough every MQTT newcomer does, in 3.1.1 and in 5.0.

use std::net::SocketAddr;
use std::time::Duration;

use tern::codec::*;
use tern::core::Config;
use tern::net::Server;
use tern::types::QoS;
use tern_conformance::raw::{connect_packet, publish, s, RawClient};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

async fn start(config: Config) -> (Server, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(vec![listener], config).unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

async fn walkthrough_wildcards(addr: SocketAddr, version: ProtocolVersion) {
    let tag = format!("{version:?}");
    let mut sub =
        RawClient::connected(addr, connect_packet(version, &format!("sub-{tag}"), true)).await;
    sub.subscribe(&format!("{tag}/sensor/+/temperature"), QoS::AtMostOnce)
        .await;
    for (id, reading) in [("1", r#"{"msg": "17.2"}"#), ("2", r#"{"msg": "18.2"}"#)] {
        let mut p = RawClient::connected(
            addr,
            connect_packet(version, &format!("pub{id}-{tag}"), true),
        )
        .await;
        p.send(publish(
            &format!("{tag}/sensor/{id}/temperature"),
            reading.as_bytes(),
            QoS::AtMostOnce,
            0,
            false,
        ))
        .await;
        p.disconnect().await;
    }
    // Two publishers: MQTT orders messages per publisher, not across publishers.
    let mut got = [
        sub.expect_publish().await.content.to_payload(),
        sub.expect_publish().await.content.to_payload(),
    ];
    got.sort();
    assert_eq!(&got[0][..], br#"{"msg": "17.2"}"#);
    assert_eq!(&got[1][..], br#"{"msg": "18.2"}"#);
}

// spec: [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] (v3.1.1)
async fn walkthrough_retained(addr: SocketAddr, version: ProtocolVersion) {
    let topic = format!("retained_message/{version:?}");
    let mut p = RawClient::connected(
        addr,
        connect_packet(version, &format!("rp-{version:?}"), true),
    )
    .await;
    for text in ["first", "second"] {
        p.send(publish(&topic, text.as_bytes(), QoS::AtLeastOnce, 1, true))
            .await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    let mut late = RawClient::connected(
        addr,
        connect_packet(version, &format!("rl-{version:?}"), true),
    )
    .await;
    late.send(Packet::Subscribe(Subscribe {
        packet_id: tern::types::PacketId::new(1).unwrap(),
        properties: Properties::new(),
        filters: vec![(s(&topic), SubscriptionOptions::new(QoS::AtLeastOnce))],
    }))
    .await;
    assert!(matches!(late.recv().await, Some(Packet::SubAck(_))));
    let got = late.expect_publish().await;
    assert_eq!(got.payload(), b"second");
    assert!(got.retain);
    late.expect_silence(Duration::from_millis(200)).await;
}

// spec: [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] (v3.1.1)
async fn walkthrough_clean_session_false(addr: SocketAddr, version: ProtocolVersion) {
    let id = format!("csf-{version:?}");
    let topic = format!("clean_session_false/{version:?}");
    let persistent = || {
        let mut c = connect_packet(version, &id, false);
        if version.is_v5() {
            c.properties.push(Property::SessionExpiryInterval(300));
        }
        c
    };
    let mut sub = RawClient::connected(addr, persistent()).await;
    sub.subscribe(&topic, QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut p = RawClient::connected(
        addr,
        connect_packet(version, &format!("csf-pub-{version:?}"), true),
    )
    .await;
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        p.send(publish(
            &topic,
            text.as_bytes(),
            QoS::AtLeastOnce,
            i as u16 + 1,
            false,
        ))
        .await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    let (mut sub, ack) = RawClient::connect(addr, persistent()).await;
    assert!(ack.session_present);
    for text in ["one", "two", "three"] {
        assert_eq!(sub.expect_publish().await.payload(), text.as_bytes());
    }
}

// spec: [MQTT-3.1.2-8] [MQTT-3.1.2-17] [MQTT-3.1.2-24] (v3.1.1); [MQTT-3.1.2-15] [MQTT-3.1.2-22] (v5)
async fn walkthrough_will(addr: SocketAddr, version: ProtocolVersion) {
    let topic = format!("last_will/{version:?}");
    let mut watcher = RawClient::connected(
        addr,
        connect_packet(version, &format!("watch-{version:?}"), true),
    )
    .await;
    watcher.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut c = connect_packet(version, &format!("device-{version:?}"), true);
    c.keep_alive = 5;
    c.will = Some(Will {
        topic: s(&topic),
        payload: bytes::Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::new(),
    });
    // The device's network "disappears": it stays connected but never sends another byte.
    let _silent_device = RawClient::connected(addr, c).await;
    // Within 1.5x the keep alive (7.5 s), with a margin for a loaded machine.
    let got = watcher.expect_publish_within(Duration::from_secs(10)).await;
    assert_eq!(got.payload(), b"offline");
    let mut late = RawClient::connected(
        addr,
        connect_packet(version, &format!("late-{version:?}"), true),
    )
    .await;
    late.subscribe(&topic, QoS::AtLeastOnce).await;
    let retained = late.expect_publish().await;
    assert!(retained.retain);
    assert_eq!(retained.payload(), b"offline");
}

// spec: [MQTT-4.2.0-1] (v5) [MQTT-7.1.1-1] (v3.1.1): MQTT over TCP, an ordered, lossless byte
// stream both ways (every message arrives, in order, in both versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_walkthrough_v311_and_v5() {
    let (server, addr) = start(Config::default()).await;
    for version in [V3, V5] {
        walkthrough_wildcards(addr, version).await;
        walkthrough_retained(addr, version).await;
        walkthrough_clean_session_false(addr, version).await;
    }
    // The two will flows wait on keep alive; run them side by side.
    tokio::join!(walkthrough_will(addr, V3), walkthrough_will(addr, V5));
    server.shutdown().await;
}

#[tokio::test]
async fn qos2_round_trip_over_tcp() {
    let (server, addr) = start(Config::default()).await;
    let mut sub = RawClient::connected(addr, connect_packet(V5, "q2-sub", true)).await;
    sub.subscribe("q2", QoS::ExactlyOnce).await;
    let mut p = RawClient::connected(addr, connect_packet(V5, "q2-pub", true)).await;
    p.send(publish("q2", &[7u8; 100_000], QoS::ExactlyOnce, 9, false))
        .await;
    let id = tern::types::PacketId::new(9).unwrap();
    assert_eq!(p.recv().await, Some(Packet::PubRec(Ack::new(id))));
    p.send(Packet::PubRel(Ack::new(id))).await;
    assert_eq!(p.recv().await, Some(Packet::PubComp(Ack::new(id))));
    let Some(Packet::Publish(got)) = sub.recv().await else {
        panic!("publish expected")
    };
    assert_eq!(got.qos, QoS::ExactlyOnce);
    assert_eq!(got.payload().len(), 100_000);
    let out_id = got.packet_id.unwrap();
    sub.send(Packet::PubRec(Ack::new(out_id))).await;
    assert_eq!(sub.recv().await, Some(Packet::PubRel(Ack::new(out_id))));
    sub.send(Packet::PubComp(Ack::new(out_id))).await;
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let (server, addr) = start(Config::default()).await;
    let mut good = RawClient::connected(addr, connect_packet(V5, "good", true)).await;
    good.subscribe("t", QoS::AtMostOnce).await;
    let mut bad = RawClient::connected(addr, connect_packet(V5, "bad", true)).await;
    // PUBLISH with QoS 3.
    bad.send_raw(&[0x36, 0x04, 0x00, 0x01, b't', 0x00]).await;
    match bad.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::MalformedPacket),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(bad.recv().await, None, "then the connection is closed");
    // A header claiming 256 MB is refused at once.
    let mut huge = RawClient::connected(addr, connect_packet(V5, "huge", true)).await;
    huge.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    match huge.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::PacketTooLarge),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let mut p = RawClient::connected(addr, connect_packet(V3, "p", true)).await;
    p.send(publish("t", b"still fine", QoS::AtMostOnce, 0, false))
        .await;
    assert_eq!(good.expect_publish().await.payload(), b"still fine");
    server.shutdown().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01() {
    let (server, addr) = start(Config::default()).await;
    let mut c = RawClient::open(addr, V3).await;
    // CONNECT "MQTT" level 9.
    c.send_raw(&[
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x3C, 0x00, 0x01, b'x',
    ])
    .await;
    match c.recv().await {
        // spec: [MQTT-3.1.2-2] (v3.1.1)
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code.to_v3_connack(), 1),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
    server.shutdown().await;
}

#[tokio::test]
async fn slowloris_connect_is_closed_after_the_connect_timeout() {
    let mut config = Config::default();
    config.limits.connect_timeout = Duration::from_millis(300);
    let (server, addr) = start(config).await;
    let mut c = RawClient::open(addr, V3).await;
    // Half a CONNECT, then nothing.
    c.send_raw(&[0x10, 0x0D, 0x00, 0x04, b'M']).await;
    assert_eq!(c.recv().await, None, "closed without CONNACK");
    let ok = RawClient::connected(addr, connect_packet(V3, "after", true)).await;
    ok.disconnect().await;
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_server_shutting_down_to_v5_clients() {
    let (server, addr) = start(Config::default()).await;
    let mut c = RawClient::connected(addr, connect_packet(V5, "v5", true)).await;
    let stats = server.shutdown().await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(stats.connections_accepted, 1);
}
