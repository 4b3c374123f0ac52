//! How much a `#` subscription to many retained messages stalls everyone else, on any broker.
//!
//! Stores N retained messages, then measures a bystander's round trip (a QoS 0 PUBLISH to a
//! topic it subscribes to, every millisecond) while a new client subscribes to `#` and reads
//! every retained message as fast as it can. Prints the subscriber's time to receive them all
//! and the bystander's round-trip percentiles before and during the flood.
//!
//! ```sh
//! cargo run --release --example retained_flood -- 127.0.0.1:1883 1000000
//! ```
//! Loopback only: it refuses any other address.

// A load tool measures wall-clock time; the clock ban is for the broker.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern::codec::*;
use tern::types::QoS;
use tern_conformance::raw::{connect_packet, publish, RawClient};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn summary(mut rtts: Vec<Duration>) -> String {
    rtts.sort();
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        rtts.last().copied().unwrap_or_default()
    )
}

/// Round trips of the bystander until `stop` says so (checked between pings).
async fn ping_until(bystander: &mut RawClient, stop: impl Fn() -> bool) -> Vec<Duration> {
    let mut rtts = Vec::new();
    while !stop() {
        let sent = Instant::now();
        bystander
            .send(publish("bystander/ping", b"p", QoS::AtMostOnce, 0, false))
            .await;
        loop {
            match bystander.recv().await {
                Some(Packet::Publish(p)) if p.topic() == "bystander/ping" => break,
                Some(_) => {}
                None => panic!("the broker closed the bystander"),
            }
        }
        rtts.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    rtts
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or("127.0.0.1:1883".into())
        .parse()
        .expect("an address");
    assert!(addr.ip().is_loopback(), "loopback only");
    let count: usize = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("a count"));

    let mut publisher = RawClient::connected(addr, connect_packet(V3, "flood-pub", true)).await;
    let started = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
        let mut bytes = BytesMut::new();
        for i in chunk {
            let packet = publish(&format!("flood/{i}"), b"retained", QoS::AtMostOnce, 0, true);
            encode(&packet, V3, &mut bytes).unwrap();
        }
        publisher.send_raw(&bytes).await;
        publisher.send(Packet::PingReq).await;
        assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    }
    println!(
        "stored {count} retained messages in {:?}",
        started.elapsed()
    );

    let mut bystander = RawClient::connected(addr, connect_packet(V3, "bystander", true)).await;
    bystander.subscribe("bystander/ping", QoS::AtMostOnce).await;
    let idle_until = Instant::now() + Duration::from_secs(1);
    let idle = ping_until(&mut bystander, || Instant::now() > idle_until).await;
    println!("bystander round trip, idle:        {}", summary(idle));

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let subscriber = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut sub = RawClient::connected(addr, connect_packet(V3, "flood-sub", true)).await;
            let started = Instant::now();
            sub.send(Packet::Subscribe(Subscribe {
                packet_id: tern::types::PacketId::new(1).unwrap(),
                properties: Properties::new(),
                filters: vec![(
                    ByteStr::new("flood/#").unwrap(),
                    SubscriptionOptions::new(QoS::AtMostOnce),
                )],
            }))
            .await;
            let mut retained = 0;
            while retained < count {
                match sub.recv_within(Duration::from_secs(30)).await {
                    Ok(Some(Packet::Publish(p))) if p.retain => retained += 1,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(()) => break,
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            (retained, started.elapsed())
        })
    };
    let during = ping_until(&mut bystander, || {
        done.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let (retained, took) = subscriber.await.unwrap();
    println!("subscriber got {retained} of {count} retained messages in {took:?}");
    println!("bystander round trip, during flood: {}", summary(during));
}
