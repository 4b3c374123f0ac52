//! What persistence costs: QoS 1 fan-in with and without the store, in one run.
//!
//! Eight publishers send QoS 1 messages of 64 bytes, each keeping 100 unacknowledged, to one
//! persistent subscriber (clean session 0, so every message is stored until it acknowledges
//! it). The broker runs in this process on loopback, first in memory, then with its store in a
//! fresh temporary directory; each run lasts `--seconds` after a one-second warm-up. Prints
//! the subscriber's msg/s and the publish-to-delivery latency percentiles of both runs and the
//! ratio, and the store's bytes per message still held at the end.
//!
//! ```sh
//! cargo run --release --example fanin -- --seconds 10 [--subscriber-window 32]
//! ```
//!
//! The publishers are not paced: in memory the broker acknowledges at once, so they publish
//! faster than one subscriber can read and its queue drops the oldest (both counts are
//! printed). With the store, acknowledgements wait for group commits, which paces them.

// A load tool measures wall-clock time; the clock ban is for the broker.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern::codec::*;
use tern::net::{Persistence, Server};
use tern::store::RedbStore;
use tern::types::QoS;
use tern_conformance::raw::{connect_packet, publish, RawClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUBLISHERS: usize = 8;
const WINDOW: usize = 100;
const PAYLOAD_BYTES: usize = 64;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

struct Run {
    received: u64,
    seconds: f64,
    latencies: Vec<Duration>,
    /// Accepted from the publishers (PUBACKed), over the whole run.
    accepted: u64,
    /// Dropped because the subscriber's queue was full (it reads slower than they publish).
    dropped: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Nanoseconds since `epoch`, in the first 16 bytes of the payload.
fn stamped(epoch: Instant) -> Vec<u8> {
    let mut payload = vec![b'x'; PAYLOAD_BYTES];
    payload[..16].copy_from_slice(&epoch.elapsed().as_nanos().to_be_bytes());
    payload
}

fn age(epoch: Instant, payload: &[u8]) -> Duration {
    let sent = u128::from_be_bytes(payload[..16].try_into().expect("16 bytes"));
    epoch
        .elapsed()
        .saturating_sub(Duration::from_nanos(sent as u64))
}

/// Decodes every whole packet in `buf`.
fn packets(buf: &mut BytesMut) -> Vec<Packet> {
    let mut out = Vec::new();
    while let Some(packet) = decode(buf, V3, PACKET_BYTES_MAX).expect("the broker sends MQTT") {
        out.push(packet);
    }
    out
}

/// Keeps `WINDOW` QoS 1 messages unacknowledged, refilling the window in one write per read
/// (the load generator must not be what limits the broker).
async fn publisher(addr: std::net::SocketAddr, n: usize, stop: Arc<AtomicBool>, epoch: Instant) {
    let client = RawClient::connected(addr, connect_packet(V3, &format!("pub{n}"), true)).await;
    let (mut stream, mut buf) = client.into_parts();
    let topic = format!("fanin/{n}");
    let mut inflight = 0usize;
    let mut id: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        for packet in packets(&mut buf) {
            if matches!(packet, Packet::PubAck(_)) {
                inflight -= 1;
            }
        }
        let mut out = BytesMut::new();
        while inflight < WINDOW {
            id = id % 60_000 + 1;
            let packet = publish(&topic, &stamped(epoch), QoS::AtLeastOnce, id, false);
            encode(&packet, V3, &mut out).expect("encodes");
            inflight += 1;
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn run(seconds: u64, window: u16, persistence: Option<Persistence>) -> Run {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entropy = Box::new(tern::auth::OsEntropy);
    let server = Server::start_with_store(
        vec![tern::net::Endpoint::plain(listener)],
        config(window),
        entropy,
        persistence,
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let epoch = Instant::now();
    let mut sub = RawClient::connected(addr, connect_packet(V3, "sub", false)).await;
    sub.subscribe("fanin/#", QoS::AtLeastOnce).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|n| tokio::spawn(publisher(addr, n, stop.clone(), epoch)))
        .collect();
    let warm_until = Instant::now() + Duration::from_secs(1);
    let mut measuring_since = None;
    let mut received = 0u64;
    let mut latencies = Vec::new();
    let end = warm_until + Duration::from_secs(seconds);
    let (mut stream, mut buf) = sub.into_parts();
    while Instant::now() < end {
        // Every PUBACK for what one read brought, in one write.
        let mut acks = BytesMut::new();
        for packet in packets(&mut buf) {
            let Packet::Publish(p) = packet else { continue };
            if let Some(id) = p.packet_id {
                encode(&Packet::PubAck(Ack::new(id)), V3, &mut acks).expect("encodes");
            }
            if Instant::now() >= warm_until {
                measuring_since.get_or_insert_with(Instant::now);
                received += 1;
                latencies.push(age(epoch, p.payload()));
            }
        }
        if !acks.is_empty() {
            stream.write_all(&acks).await.expect("the broker reads");
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(n)) if n > 0),
            "the subscriber got nothing for 5 s"
        );
    }
    let seconds = measuring_since.map_or(0.0, |s| s.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.abort();
    }
    let stats = server.shutdown().await;
    latencies.sort();
    Run {
        received,
        seconds,
        latencies,
        accepted: stats.messages_received.total(),
        dropped: stats.messages_dropped_queue_full,
    }
}

/// The broker's configuration: defaults, but the subscriber's in-flight window.
fn config(window: u16) -> tern::core::Config {
    let mut config = tern::core::Config::default();
    config.limits.inflight_count_max = window;
    config
}

fn line(name: &str, run: &Run) -> f64 {
    let rate = run.received as f64 / run.seconds;
    println!(
        "{name:<12} {rate:>10.0} msg/s   p50 {:>9.2?}   p99 {:>9.2?}   ({} delivered in {:.1} s; {} accepted, {} dropped for a full queue)",
        percentile(&run.latencies, 0.5),
        percentile(&run.latencies, 0.99),
        run.received,
        run.seconds,
        run.accepted,
        run.dropped
    );
    rate
}

#[tokio::main]
async fn main() {
    let mut seconds = 10;
    let mut window = tern::limits::Limits::default().inflight_count_max;
    let mut args = std::env::args().skip(1);
    let usage = "usage: fanin [--seconds N] [--subscriber-window N]";
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|s| s.parse().ok()).expect(usage);
        match arg.as_str() {
            "--seconds" => seconds = value(),
            "--subscriber-window" => window = value() as u16,
            other => panic!("unknown argument {other:?} ({usage})"),
        }
    }
    println!(
        "QoS 1 fan-in: {PUBLISHERS} publishers x {WINDOW} in flight -> 1 persistent subscriber (window {window}), {PAYLOAD_BYTES}-byte payloads, {seconds} s each"
    );
    let memory = run(seconds, window, None).await;
    let dir = std::env::temp_dir().join(format!("tern-fanin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = RedbStore::open(&dir).unwrap();
    let wall_clock_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let persistent = run(
        seconds,
        window,
        Some(Persistence {
            store: Box::new(store),
            wall_clock_ms,
            blocking_commits: true,
        }),
    )
    .await;
    let in_memory = line("in memory", &memory);
    let on_disk = line("persistent", &persistent);
    println!("persistent / in memory: {:.2}", on_disk / in_memory);
    let file = dir.join(tern::store::DATABASE_FILE);
    if let Ok(meta) = std::fs::metadata(&file) {
        println!("store file after the run: {} bytes", meta.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
