//! The hostile-resources suite: what an anonymous client can do to the broker over real TCP
//! (deep and long topics, property floods, QoS 2 bursts, session churn, retained floods, a
//! client that never reads, a client that keeps talking after being told to go). After each,
//! the broker must still answer a control client.
//!
//! Each test names the bug class it guards; the numbers it uses are above the defaults in
//! `limits.rs`, so a limit that stops holding fails here.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tern::codec::*;
use tern::core::Config;
use tern::net::Server;
use tern::types::QoS;
use tern_conformance::broker::Broker;
use tern_conformance::raw::{connect_packet, publish, RawClient, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

async fn start(config: Config) -> (Server, SocketAddr) {
    let broker = Broker::start(config).await.expect("start the broker");
    (broker.server, broker.addr)
}

/// The broker still serves: a fresh client gets a round trip through it.
async fn assert_serving(addr: SocketAddr) {
    let mut control = RawClient::connected(addr, connect_packet(V5, "control", true)).await;
    control.subscribe("control/echo", QoS::AtLeastOnce).await;
    control
        .send(publish("control/echo", b"ping", QoS::AtLeastOnce, 7, false))
        .await;
    let mut got_ack = false;
    let mut got_publish = false;
    while !(got_ack && got_publish) {
        match control.recv().await {
            Some(Packet::PubAck(_)) => got_ack = true,
            Some(Packet::Publish(p)) => {
                assert_eq!(p.payload(), b"ping");
                control
                    .send(Packet::PubAck(Ack::new(p.packet_id.unwrap())))
                    .await;
                got_publish = true;
            }
            other => panic!("control client got {other:?}"),
        }
    }
    control.disconnect().await;
}

/// The core's count of each outbound queue's room never exceeded the real room.
fn assert_no_miscount(stats: tern::core::Stats) {
    assert_eq!(stats.outbound_count_mismatches, 0, "{stats:?}");
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).unwrap();
    out
}

/// A client still sending when the broker ends its connection must read the reason code and
/// see a clean end of stream, not a reset: the broker shuts its side and drains the socket
/// until the client closes (spec: [MQTT-4.13.2-1] v5, the DISCONNECT before closing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_reads_the_disconnect_reason() {
    let (server, addr) = start(Config::default()).await;
    let client = RawClient::connected(addr, connect_packet(V5, "talker", true)).await;
    let (stream, mut buf) = client.into_parts();
    let (mut reader, mut writer) = stream.into_split();
    let deep = "/".repeat(200);
    let writes = tokio::spawn(async move {
        writer
            .write_all(&encoded(
                &publish(&deep, b"x", QoS::AtMostOnce, 0, false),
                V5,
            ))
            .await?;
        // Keep talking for a while, as a client with a backlog of packets would.
        let chatter = encoded(&publish("t", &[0u8; 512], QoS::AtMostOnce, 0, false), V5);
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while tokio::time::Instant::now() < until {
            writer.write_all(&chatter).await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        writer.shutdown().await
    });
    let mut reasons = Vec::new();
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            while let Some(packet) = decode(&mut buf, V5, 1 << 20).unwrap() {
                if let Packet::Disconnect(d) = packet {
                    reasons.push(d.reason_code);
                }
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("the broker closes");
    assert_eq!(reasons, vec![ReasonCode::TopicNameInvalid]);
    end.expect("a clean end of stream, not a reset");
    writes
        .await
        .unwrap()
        .expect("the client's writes did not fail while the broker drained them");
    assert_serving(addr).await;
    assert_no_miscount(server.shutdown().await);
}

/// Topics are as deep as a client likes unless the broker says otherwise: 20,001 empty levels
/// used to overflow the worker's stack and abort the whole process. A 65,535-byte topic of one
/// level is valid and works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_topics() {
    let (server, addr) = start(Config::default()).await;
    let deep = "/".repeat(20_000);
    for version in [V3, V5] {
        let mut c = RawClient::connected(addr, connect_packet(version, "deep", true)).await;
        c.send(Packet::Subscribe(Subscribe {
            packet_id: tern::types::PacketId::new(1).unwrap(),
            properties: Properties::new(),
            filters: vec![(
                ByteStr::new(&deep).unwrap(),
                SubscriptionOptions::new(QoS::AtMostOnce),
            )],
        }))
        .await;
        match c.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.reason_codes.len(), 1);
                assert!(ack.reason_codes[0].is_error(), "{ack:?}");
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
        c.send(publish(&deep, b"x", QoS::AtMostOnce, 0, false))
            .await;
        let expected = version.is_v5().then_some(ReasonCode::TopicNameInvalid);
        match c.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(Some(d.reason_code), expected),
            None => assert_eq!(expected, None),
            other => panic!("expected the connection to end, got {other:?}"),
        }
        assert_serving(addr).await;
    }
    let long = "x".repeat(65_535);
    let mut c = RawClient::connected(addr, connect_packet(V5, "long", true)).await;
    c.subscribe(&long, QoS::AtMostOnce).await;
    c.send(publish(&long, b"long", QoS::AtMostOnce, 0, false))
        .await;
    assert_eq!(c.expect_publish().await.payload(), b"long");
    assert_no_miscount(server.shutdown().await);
}

fn with_user_properties(count: usize, value: &str) -> Packet {
    let Packet::Publish(mut p) = publish("props", b"p", QoS::AtLeastOnce, 1, true) else {
        unreachable!()
    };
    for _ in 0..count {
        p.properties.push(Property::UserProperty(
            ByteStr::default(),
            ByteStr::new(value).unwrap(),
        ));
    }
    Packet::Publish(p)
}

/// One packet of empty user properties multiplies in memory (5 bytes on the wire, ~70 held):
/// more than `USER_PROPERTIES_PER_PACKET_MAX` ends the connection with 0x83 while it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_floods_are_refused_while_read() {
    let (server, addr) = start(Config::default()).await;
    let max = tern::limits::USER_PROPERTIES_PER_PACKET_MAX;
    let mut c = RawClient::connected(addr, connect_packet(V5, "props", true)).await;
    c.send(with_user_properties(max, "")).await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    c.send(with_user_properties(120_000, "")).await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, ReasonCode::ImplementationSpecificError)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_serving(addr).await;
    assert_no_miscount(server.shutdown().await);
}

/// MQTT.js and Paho C publish QoS 2 without waiting, limited only by packet ids: 500 at once
/// are all received and acknowledged, in 3.1.1 and 5.0 (the 65th used to be cut off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_bursts_are_accepted() {
    let (server, addr) = start(Config::default()).await;
    for version in [V3, V5] {
        let mut c = RawClient::connected(addr, connect_packet(version, "burst", true)).await;
        let mut bytes = BytesMut::new();
        for id in 1..=500 {
            let packet = publish("burst", b"x", QoS::ExactlyOnce, id, false);
            encode(&packet, version, &mut bytes).unwrap();
        }
        c.send_raw(&bytes).await;
        for _ in 0..500 {
            assert!(matches!(c.recv().await, Some(Packet::PubRec(_))));
        }
        c.disconnect().await;
    }
    assert_serving(addr).await;
    assert_no_miscount(server.shutdown().await);
}

/// 20,000 retained messages and a `#` subscriber over real TCP: every one arrives (1,023 did),
/// at QoS 0 and QoS 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_floods_reach_a_wildcard_subscriber_whole() {
    let (server, addr) = start(Config::default()).await;
    let mut p = RawClient::connected(addr, connect_packet(V3, "retainer", true)).await;
    // Stored at QoS 1 (so a QoS 1 subscription is paced by its window), 100 in flight.
    for chunk in 0..200u16 {
        let mut bytes = BytesMut::new();
        for i in 0..100u16 {
            let topic = format!("rc/{}", chunk * 100 + i);
            let packet = publish(&topic, b"state", QoS::AtLeastOnce, i + 1, true);
            encode(&packet, V3, &mut bytes).unwrap();
        }
        p.send_raw(&bytes).await;
        for _ in 0..100 {
            assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
        }
    }
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut sub = RawClient::connected(addr, connect_packet(V5, "mirror", true)).await;
        sub.subscribe("rc/#", qos).await;
        let mut topics = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let publish = sub.expect_publish().await;
            assert!(publish.retain);
            assert_eq!(publish.qos, qos);
            topics.insert(publish.topic().to_string());
        }
        assert_eq!(topics.len(), 20_000, "{qos:?}");
        sub.expect_silence(Duration::from_millis(200)).await;
        sub.disconnect().await;
    }
    assert_serving(addr).await;
    assert_no_miscount(server.shutdown().await);
}

/// A subscriber that never reads while a publisher floods it: the publisher and everyone else
/// go on; the stuck client costs its outbound queue and the socket buffers, nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_costs_only_its_queue() {
    let (server, addr) = start(Config::default()).await;
    let mut deaf = RawClient::connected(addr, connect_packet(V5, "deaf", true)).await;
    deaf.subscribe("flood/#", QoS::AtMostOnce).await;
    let mut p = RawClient::connected(addr, connect_packet(V3, "flooder", true)).await;
    let payload = vec![7u8; 16 * 1024];
    for round in 0..40 {
        let mut bytes = BytesMut::new();
        for i in 0..64 {
            let packet = publish(&format!("flood/{i}"), &payload, QoS::AtMostOnce, 0, false);
            encode(&packet, V3, &mut bytes).unwrap();
        }
        p.send_raw(&bytes).await;
        if round % 10 == 0 {
            assert_serving(addr).await;
        }
    }
    p.send(Packet::PingReq).await;
    assert_eq!(
        p.recv().await,
        Some(Packet::PingResp),
        "the publisher is not held up"
    );
    assert_serving(addr).await;
    drop(deaf);
    let stats = server.shutdown().await;
    assert!(stats.qos0_dropped_slow_consumer > 0, "{stats:?}");
    assert_no_miscount(stats);
}

/// Reconnect churn of a persistent session: the broker keeps answering and its state stays
/// one session (the timer leak this found is checked in the core's tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_churn() {
    let (server, addr) = start(Config::default()).await;
    for _ in 0..500 {
        let mut connect = connect_packet(V5, "churn", false);
        connect
            .properties
            .push(Property::SessionExpiryInterval(86_400));
        let c = RawClient::connected(addr, connect).await;
        drop(c);
    }
    assert_serving(addr).await;
    let stats = server.shutdown().await;
    assert_eq!(stats.connections_refused, 0);
    assert_no_miscount(stats);
}

/// A publisher that reads its acknowledgements is never taken for a slow consumer: 20,000
/// QoS 1 messages, 100 in flight (replies used to wear down the core's count of the room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_publisher_that_reads_is_never_cut_off() {
    let (server, addr) = start(Config::default()).await;
    for version in [V3, V5] {
        let mut p = RawClient::connected(addr, connect_packet(version, "busy", true)).await;
        for _ in 0..200 {
            let mut bytes = BytesMut::new();
            for id in 1..=100 {
                let packet = publish("busy", b"x", QoS::AtLeastOnce, id, false);
                encode(&packet, version, &mut bytes).unwrap();
            }
            p.send_raw(&bytes).await;
            for _ in 0..100 {
                assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
            }
        }
        p.disconnect().await;
    }
    let stats = server.shutdown().await;
    assert_eq!(stats.slow_consumers_disconnected, 0);
    assert_no_miscount(stats);
}

/// One read can hold thousands of packets (the read buffer grows for a large packet and stays
/// grown): their replies are written while the read is being forwarded, so a client that reads
/// is never cut off for the replies to its own burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_a_long_burst_in_one_read_all_arrive() {
    let (server, addr) = start(Config::default()).await;
    let client = RawClient::connected(addr, connect_packet(V3, "burster", true)).await;
    let (stream, mut buf) = client.into_parts();
    let (mut reader, mut writer) = stream.into_split();
    const PINGS: usize = 100_000;
    let writes = tokio::spawn(async move {
        let big = publish("big", &vec![0u8; 512 * 1024], QoS::AtMostOnce, 0, false);
        writer.write_all(&encoded(&big, V3)).await?;
        let pings: Vec<u8> = std::iter::repeat_n([0xC0u8, 0x00], PINGS)
            .flatten()
            .collect();
        writer.write_all(&pings).await?;
        Ok::<_, std::io::Error>(writer)
    });
    let mut pongs = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while pongs < PINGS {
            while let Some(packet) = decode(&mut buf, V3, 1 << 20).unwrap() {
                assert_eq!(packet, Packet::PingResp);
                pongs += 1;
            }
            if pongs < PINGS {
                let read = reader.read_buf(&mut buf).await.unwrap();
                assert!(read > 0, "closed after {pongs} PINGRESPs");
            }
        }
    })
    .await
    .expect("every PINGRESP in time");
    drop(writes.await.unwrap().unwrap());
    let stats = server.shutdown().await;
    assert_eq!(stats.slow_consumers_disconnected, 0);
    assert_no_miscount(stats);
}
