//! Codec benchmarks: decode and encode of the packets a broker handles most.
//!
//! Decoding is measured the way the driver uses it: many packets back to back in one read
//! buffer, so the one-time cost of sharing the buffer is spread as it is in production.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tern::codec::*;
use tern::types::{PacketId, QoS};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn publish(qos: QoS, payload_bytes: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        content: Content::new(
            ByteStr::from_static("sensors/building-7/floor-3/temperature"),
            Bytes::from(vec![0x5A; payload_bytes]),
        ),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(42).unwrap()),
        properties: Properties::new(),
    })
}

fn connect_with_will() -> Packet {
    let s = ByteStr::from_static;
    Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: false,
        keep_alive: 60,
        properties: vec![
            Property::SessionExpiryInterval(3600),
            Property::ReceiveMaximum(100),
            Property::TopicAliasMaximum(10),
            Property::UserProperty(s("site"), s("berlin")),
        ]
        .into(),
        client_id: s("device-0042"),
        will: Some(Will {
            topic: s("devices/device-0042/status"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: vec![
                Property::WillDelayInterval(5),
                Property::ContentType(s("text/plain")),
            ]
            .into(),
        }),
        username: Some(s("device")),
        password: Some(Bytes::from_static(b"secret")),
        bridge: false,
    }))
}

fn subscribe_10() -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(7).unwrap(),
        properties: Properties::new(),
        filters: (0..10)
            .map(|i| {
                (
                    ByteStr::new(&format!("sensors/+/zone-{i}/#")).unwrap(),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                )
            })
            .collect(),
    })
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).unwrap();
    buf.to_vec()
}

/// Time to decode `iters` packets, fed in read buffers of 1000 packets each.
// Benchmarks measure wall time by definition; the determinism ban does not apply here.
#[allow(clippy::disallowed_methods)]
fn decode_many(bytes: &[u8], version: ProtocolVersion, iters: u64) -> Duration {
    const CHUNK: u64 = 1000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let mut buf = BytesMut::with_capacity(bytes.len() * n as usize);
        for _ in 0..n {
            buf.extend_from_slice(bytes);
        }
        let start = Instant::now();
        for _ in 0..n {
            black_box(
                decode(&mut buf, version, PACKET_BYTES_MAX)
                    .unwrap()
                    .unwrap(),
            );
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn cases() -> Vec<(String, Packet, ProtocolVersion)> {
    let mut cases = Vec::new();
    for (qos, name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
        for size in [16, 64, 256, 4096] {
            cases.push((
                format!("publish_{name}_{size}B_v311"),
                publish(qos, size),
                V3,
            ));
            cases.push((format!("publish_{name}_{size}B_v5"), publish(qos, size), V5));
        }
    }
    cases.push(("connect_will_properties_v5".into(), connect_with_will(), V5));
    cases.push(("subscribe_10_filters_v311".into(), subscribe_10(), V3));
    cases
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, packet, version) in cases() {
        let bytes = encoded(&packet, version);
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_custom(|iters| decode_many(&bytes, version, iters))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("encode");
    for (name, packet, version) in cases() {
        let mut buf = BytesMut::with_capacity(8192);
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                buf.clear();
                encode(black_box(&packet), version, &mut buf).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
