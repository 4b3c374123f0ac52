//! Core benchmarks, no IO: subscription matching against 100k filters, and routing one PUBLISH
//! through the broker state machine to 1 and to 1000 subscribers.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tern::codec::*;
use tern::core::subscription_tree::{Subscription, SubscriptionTree};
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
        bridge: false,
    }))
}

/// A broker with `subscribers` clients on "bench/topic" and one publisher, outputs drained.
fn broker_with(subscribers: u64) -> (Broker, ConnId) {
    broker_with_filter(subscribers, "bench/topic")
}

/// A broker with `subscribers` clients on `filter` and one publisher, outputs drained.
fn broker_with_filter(subscribers: u64, filter: &'static str) -> (Broker, ConnId) {
    let mut config = Config::default();
    config.limits.outbound_queue_packets_max = usize::MAX;
    let mut broker = Broker::new(config);
    let now = Instant::ZERO;
    for i in 0..subscribers {
        let conn = ConnId(i);
        broker.connection_opened(conn, tern::core::Origin::default(), now);
        broker.packet_received(conn, connect(&format!("sub-{i}")), now);
        let subscribe = Subscribe {
            packet_id: tern::types::PacketId::new(1).unwrap(),
            properties: Properties::new(),
            filters: vec![(
                ByteStr::from_static(filter),
                SubscriptionOptions::new(QoS::AtMostOnce),
            )],
        };
        broker.packet_received(conn, Packet::Subscribe(subscribe), now);
    }
    let publisher = ConnId(u64::MAX);
    broker.connection_opened(publisher, tern::core::Origin::default(), now);
    broker.packet_received(publisher, connect("publisher"), now);
    while broker.poll_output().is_some() {}
    (broker, publisher)
}

/// A QoS 0 PUBLISH on "bench/topic" with a 64-byte payload.
fn publish_64b() -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        content: Content::new(
            ByteStr::from_static("bench/topic"),
            Bytes::from_static(&[0x42; 64]),
        ),
        packet_id: None,
        properties: Properties::new(),
    })
}

/// Feeds `publish` to the broker and takes every output; returns how many there were.
fn publish_and_drain(broker: &mut Broker, publisher: ConnId, publish: &Packet) -> u64 {
    broker.packet_received(publisher, publish.clone(), Instant::ZERO);
    let mut outputs = 0u64;
    while let Some(output) = broker.poll_output() {
        black_box(&output);
        outputs += 1;
    }
    outputs
}

fn routing(c: &mut Criterion) {
    let publish = publish_64b();
    let mut group = c.benchmark_group("core_route_qos0_64B");
    for subscribers in [1u64, 1000] {
        let (mut broker, publisher) = broker_with(subscribers);
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(format!("to_{subscribers}_subscribers"), |b| {
            b.iter(|| {
                let delivered = publish_and_drain(&mut broker, publisher, &publish);
                assert_eq!(delivered, subscribers);
            })
        });
    }
    group.finish();
}

/// One QoS 0 PUBLISH to a shared subscription group of 1000 members: one delivery, to the
/// next member in turn.
fn shared_routing(c: &mut Criterion) {
    let publish = publish_64b();
    let (mut broker, publisher) = broker_with_filter(1000, "$share/workers/bench/topic");
    c.bench_function("core_route_qos0_64B/shared_group_of_1000", |b| {
        b.iter(|| assert_eq!(publish_and_drain(&mut broker, publisher, &publish), 1))
    });
}

/// Routing with an ACL: one QoS 0 PUBLISH to 1000 subscribers, each delivery checked
/// against the subscriber's read rights, with no ACL, 10 rules and 10,000 rules. The rules
/// are compiled into trees of topic levels, so the cost should not grow with their number.
fn acl_routing(c: &mut Criterion) {
    use std::sync::Arc;
    use tern::auth::acl::Acl;
    let rules = |n: usize| {
        // Half topic rules (anonymous clients), half patterns, all on other topics; the last
        // rule is the one that grants the read.
        let mut text = String::new();
        for i in 0..n.saturating_sub(1) {
            if i % 2 == 0 {
                text.push_str(&format!("topic read other/{i}/#\n"));
            } else {
                text.push_str(&format!("pattern readwrite devices/%c/{i}\n"));
            }
        }
        text.push_str("topic readwrite bench/#\n");
        Acl::parse(&text).unwrap()
    };
    let publish = publish_64b();
    let mut group = c.benchmark_group("core_route_qos0_64B_acl");
    group.throughput(Throughput::Elements(1000));
    for (name, acl) in [
        ("no_acl", None),
        ("10_rules", Some(rules(10))),
        ("10000_rules", Some(rules(10_000))),
    ] {
        let (mut broker, publisher) = broker_with(1000);
        broker.set_acl(0, acl.map(Arc::new));
        group.bench_function(format!("to_1000_subscribers_{name}"), |b| {
            b.iter(|| assert_eq!(publish_and_drain(&mut broker, publisher, &publish), 1000))
        });
    }
    group.finish();
}

/// What one password check costs the driver: Mosquitto 2.0's default hash (PBKDF2-SHA512,
/// 101 iterations) and the argon2id Tern writes.
fn password_checks(c: &mut Criterion) {
    use tern::auth::password_file::{hash_password, PasswordFile};
    use tern::auth::SeededEntropy;
    let mosquitto = PasswordFile::parse("alice:$7$101$zCxZ4nlRG/5gXIfc$ZU+Xkwg3VG0pid1g4PDUR25LlRtyCNzLea5aGHUbfLviVxrlKHxXMH22NYmLbM4j9QS26Alc2wAkJvx03MpMbA==").unwrap();
    c.bench_function("password_check/mosquitto_pbkdf2_sha512_101", |b| {
        b.iter(|| assert!(mosquitto.verify("alice", black_box(b"secret"))))
    });
    let line = format!("bob:{}", hash_password(b"pw", &mut SeededEntropy::new(1)));
    let argon = PasswordFile::parse(&line).unwrap();
    c.bench_function("password_check/argon2id_m19MiB_t2", |b| {
        b.iter(|| assert!(argon.verify("bob", black_box(b"pw"))))
    });
}

/// SCRAM-SHA-256: deriving a stored credential (start-up cost per password user), and the
/// server side of one whole exchange with a stored credential.
fn scram(c: &mut Criterion) {
    use tern::auth::scram::{Credential, ScramClient, ScramSha256, ITERATIONS_DEFAULT};
    use tern::auth::{AuthStep, Authenticator, SeededEntropy};
    let mut entropy = SeededEntropy::new(1);
    c.bench_function("scram/derive_credential_4096_iterations", |b| {
        b.iter(|| Credential::generate(black_box("password"), ITERATIONS_DEFAULT, &mut entropy))
    });
    let credential = Credential::generate("password", ITERATIONS_DEFAULT, &mut entropy);
    let users = [("alice".to_string(), credential.encode())]
        .into_iter()
        .collect();
    let server = ScramSha256::from_passwords(&users, ITERATIONS_DEFAULT, &mut entropy);
    // The same seed gives the same server nonce every time, so the client's answer (which
    // costs the client the PBKDF2 rounds) is computed once, outside the measurement.
    let nonce_seed = 99;
    let mut client = ScramClient::new("alice", "password", "bench-nonce");
    let client_first = client.client_first();
    let mut exchange = server.begin(&mut SeededEntropy::new(nonce_seed));
    let AuthStep::Continue(server_first) = exchange.step(&client_first) else {
        panic!("no server-first");
    };
    let client_final = client.client_final(&server_first).unwrap();
    c.bench_function("scram/server_exchange_stored_credential", |b| {
        b.iter(|| {
            let mut exchange = server.begin(&mut SeededEntropy::new(nonce_seed));
            black_box(exchange.step(&client_first));
            let done = exchange.step(&client_final);
            assert!(matches!(done, AuthStep::Success { .. }));
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = matching, routing, shared_routing, scram, acl_routing, password_checks
}
criterion_main!(benches);
