//! Core benchmarks, no IO: subscription matching against 100k filters, and routing one PUBLISH
//! through the broker state machine to 1 and to 1000 subscribers.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tern::codec::*;
use tern::core::subscriptions::{Subscription, SubscriptionTree};
use tern::core::{Broker, Config, ConnId, Instant, SessionId};
use tern::types::QoS;

/// 100k filters: exact topics, single-level and multi-level wildcards, in several shapes.
fn tree_100k() -> SubscriptionTree {
    let mut tree = SubscriptionTree::new();
    let sub = Subscription {
        options: SubscriptionOptions::new(QoS::AtLeastOnce),
        id: None,
    };
    for i in 0..100_000u64 {
        let filter = match i % 5 {
            0 => format!("site/{}/device/{}/temperature", i % 100, i),
            1 => format!("site/{}/device/+/humidity", i % 1000),
            2 => format!("site/{}/#", i),
            3 => format!("+/{}/device/{}/+", i % 100, i),
            _ => format!("fleet/{}/truck/{}/gps", i % 50, i),
        };
        tree.insert(&filter, SessionId(i), sub);
    }
    tree
}

fn matching(c: &mut Criterion) {
    let tree = tree_100k();
    let mut group = c.benchmark_group("match_100k_filters");
    for (name, topic) in [
        ("hit_exact_and_wildcards", "site/42/device/4242/temperature"),
        ("hit_single_wildcard", "site/7/device/abc/humidity"),
        ("miss", "unknown/topic/with/four/levels"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut hits = 0u32;
                tree.for_each_match(black_box(topic), |_, _| hits += 1);
                hits
            })
        });
    }
    group.finish();
}

fn connect(id: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::new(),
        client_id: ByteStr::new(id).unwrap(),
        will: None,
        username: None,
        password: None,
    }))
}

/// A broker with `subscribers` clients on "bench/topic" and one publisher, outputs drained.
fn broker_with(subscribers: u64) -> (Broker, ConnId) {
    let mut config = Config::default();
    config.limits.outbound_queue_packets_max = usize::MAX;
    let mut broker = Broker::new(config);
    let now = Instant::ZERO;
    for i in 0..subscribers {
        let conn = ConnId(i);
        broker.connection_opened(conn, now);
        broker.packet_received(conn, connect(&format!("sub-{i}")), now);
        let subscribe = Subscribe {
            packet_id: tern::types::PacketId::new(1).unwrap(),
            properties: Properties::new(),
            filters: vec![(
                ByteStr::from_static("bench/topic"),
                SubscriptionOptions::new(QoS::AtMostOnce),
            )],
        };
        broker.packet_received(conn, Packet::Subscribe(subscribe), now);
    }
    let publisher = ConnId(u64::MAX);
    broker.connection_opened(publisher, now);
    broker.packet_received(publisher, connect("publisher"), now);
    while broker.poll_output().is_some() {}
    (broker, publisher)
}

fn routing(c: &mut Criterion) {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteStr::from_static("bench/topic"),
        packet_id: None,
        properties: Properties::new(),
        payload: Bytes::from_static(&[0x42; 64]),
    });
    let mut group = c.benchmark_group("core_route_qos0_64B");
    for subscribers in [1u64, 1000] {
        let (mut broker, publisher) = broker_with(subscribers);
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(format!("to_{subscribers}_subscribers"), |b| {
            b.iter(|| {
                broker.packet_received(publisher, publish.clone(), Instant::ZERO);
                let mut delivered = 0u64;
                while let Some(output) = broker.poll_output() {
                    black_box(&output);
                    delivered += 1;
                }
                assert_eq!(delivered, subscribers);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = matching, routing
}
criterion_main!(benches);
