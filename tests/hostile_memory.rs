//! Memory under hostile input, measured as this process's resident set (the broker runs in it;
//! this file has one test so nothing else runs alongside). Bounds are ratios to the bytes sent,
//! generous enough for the allocator's slack, tight enough to catch the 16x of before.

use std::net::SocketAddr;

use bytes::BytesMut;
use tern::codec::*;
use tern::core::Config;
use tern::net::Server;
use tern::types::QoS;
use tern_conformance::broker::Broker;
use tern_conformance::raw::{connect_packet, publish, RawClient};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

async fn start() -> (Server, SocketAddr) {
    let broker = Broker::start(Config::default())
        .await
        .expect("start the broker");
    (broker.server, broker.addr)
}

/// Prints and checks the resident-set growth since `before` against `wire` bytes sent.
fn assert_grown_at_most_3x(what: &str, before: usize, wire: usize) {
    let grown = resident_bytes().saturating_sub(before);
    eprintln!(
        "{what}: {wire} bytes on the wire, resident set grew {grown} bytes ({:.2}x)",
        grown as f64 / wire as f64
    );
    assert!(grown <= 3 * wire, "{what}: {grown} > 3 x {wire}");
}

/// A retained v5 PUBLISH of about 600 KB: `count` user properties of `value_len` bytes each.
fn heavy(topic: &str, count: usize, value_len: usize) -> Packet {
    let Packet::Publish(mut p) = publish(topic, b"p", QoS::AtLeastOnce, 1, true) else {
        unreachable!()
    };
    let value = ByteStr::new(&"v".repeat(value_len)).unwrap();
    for _ in 0..count {
        p.properties
            .push(Property::UserProperty(ByteStr::default(), value.clone()));
    }
    Packet::Publish(p)
}

/// A v5 QoS 1 retained PUBLISH to "e" carrying `count` empty user properties, built as bytes
/// (building it as a `Packet` would cost this process, where the broker is measured, 70x).
fn empty_properties_flood(count: usize) -> Vec<u8> {
    let varint = |mut n: usize, out: &mut Vec<u8>| loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    };
    let properties_len = count * 5;
    let mut body = vec![0, 1, b'e', 0, 1];
    varint(properties_len, &mut body);
    for _ in 0..count {
        body.extend_from_slice(&[0x26, 0, 0, 0, 0]);
    }
    body.push(b'p');
    let mut packet = vec![0x33];
    varint(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

async fn send_and_sync(client: &mut RawClient, packet: &Packet) -> (usize, Option<Packet>) {
    let mut bytes = BytesMut::new();
    encode(packet, V5, &mut bytes).unwrap();
    client.send_raw(&bytes).await;
    (bytes.len(), client.recv().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_cost_about_their_size() {
    let (server, addr) = start().await;
    let mut client = RawClient::connected(addr, connect_packet(V5, "heavy", true)).await;
    // Warm up the allocator and the connection's buffers with one of each kind.
    send_and_sync(&mut client, &heavy("warm", 512, 1150)).await;
    send_and_sync(&mut client, &Packet::PingReq).await;
    let before = resident_bytes();

    // Eight retained messages of ~600 KB, 512 user properties each: retained, so held.
    let mut wire = 0;
    for i in 0..8 {
        let (len, reply) = send_and_sync(&mut client, &heavy(&format!("r/{i}"), 512, 1150)).await;
        assert!(matches!(reply, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success));
        wire += len;
    }
    assert_grown_at_most_3x("8 retained messages", before, wire);

    // Eight of ~600 KB of empty user properties (16x in memory before): refused while read.
    let before = resident_bytes();
    let mut wire = 0;
    for _ in 0..8 {
        let mut c = RawClient::connected(addr, connect_packet(V5, "empty-props", true)).await;
        let flood = empty_properties_flood(120_000);
        c.send_raw(&flood).await;
        let (len, reply) = (flood.len(), c.recv().await);
        assert!(
            matches!(reply, Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::ImplementationSpecificError)
        );
        wire += len;
    }
    assert_grown_at_most_3x("8 packets of empty user properties", before, wire);

    // Eight persistent sessions whose CONNECTs were padded to ~4 MB with user properties:
    // the sessions keep their client ids, which must not keep those read buffers alive.
    let before = resident_bytes();
    for i in 0..8 {
        let mut connect = connect_packet(V5, &format!("padded-{i}"), false);
        connect
            .properties
            .push(Property::SessionExpiryInterval(600));
        let value = ByteStr::new(&"v".repeat(65_000)).unwrap();
        for _ in 0..64 {
            connect
                .properties
                .push(Property::UserProperty(ByteStr::default(), value.clone()));
        }
        RawClient::connected(addr, connect).await.disconnect().await;
    }
    let grown = resident_bytes().saturating_sub(before);
    eprintln!("8 sessions from ~4 MB CONNECTs: resident set grew {grown} bytes");
    // Pinned, they would hold 8 x 4 MB; the allocator keeps some of what was freed.
    assert!(
        grown < 16 * 1024 * 1024,
        "the sessions pin their CONNECTs: {grown} bytes"
    );
    server.shutdown().await;
}
