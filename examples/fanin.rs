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
//! cargo run --release --example fanin -- --seconds 10
//! ```

// A load tool measures wall-clock time; the clock ban is for the broker.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern::codec::*;
use tern::net::{Persistence, Server};
use tern::store::RedbStore;
use tern::types::QoS;
use tern_conformance::raw::{connect_packet, publish, RawClient};

const PUBLISHERS: usize = 8;
const WINDOW: usize = 100;
const PAYLOAD_BYTES: usize = 64;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

struct Run {
    received: u64,
    seconds: f64,
    latencies: Vec<Duration>,
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

async fn publisher(addr: std::net::SocketAddr, n: usize, stop: Arc<AtomicBool>, epoch: Instant) {
    let mut client = RawClient::connected(addr, connect_packet(V3, &format!("pub{n}"), true)).await;
    let mut inflight = 0usize;
    let mut id: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        while inflight < WINDOW {
            id = id % 60_000 + 1;
            let packet = publish(
                &format!("fanin/{n}"),
                &stamped(epoch),
                QoS::AtLeastOnce,
                id,
                false,
            );
            client.send(packet).await;
            inflight += 1;
        }
        match client.recv().await {
            Some(Packet::PubAck(_)) => inflight -= 1,
            Some(_) => {}
            None => return,
        }
    }
}

async fn run(seconds: u64, persistence: Option<Persistence>) -> Run {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entropy = Box::new(tern::auth::OsEntropy);
    let server = Server::start_with_store(
        vec![listener],
        tern::core::Config::default(),
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
    while Instant::now() < end {
        let Ok(Some(packet)) = sub.recv_within(Duration::from_secs(5)).await else {
            panic!("the subscriber got nothing for 5 s");
        };
        if let Packet::Publish(p) = packet {
            if let Some(id) = p.packet_id {
                sub.send(Packet::PubAck(Ack::new(id))).await;
            }
            if Instant::now() >= warm_until {
                measuring_since.get_or_insert_with(Instant::now);
                received += 1;
                latencies.push(age(epoch, &p.payload));
            }
        }
    }
    let seconds = measuring_since.map_or(0.0, |s| s.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.abort();
    }
    server.shutdown().await;
    latencies.sort();
    Run {
        received,
        seconds,
        latencies,
    }
}

fn line(name: &str, run: &Run) -> f64 {
    let rate = run.received as f64 / run.seconds;
    println!(
        "{name:<12} {rate:>10.0} msg/s   p50 {:>9.2?}   p99 {:>9.2?}   ({} messages in {:.1} s)",
        percentile(&run.latencies, 0.5),
        percentile(&run.latencies, 0.99),
        run.received,
        run.seconds
    );
    rate
}

#[tokio::main]
async fn main() {
    let mut seconds = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            other => panic!("unknown argument {other:?} (usage: fanin [--seconds N])"),
        }
    }
    println!(
        "QoS 1 fan-in: {PUBLISHERS} publishers x {WINDOW} in flight -> 1 persistent subscriber, {PAYLOAD_BYTES}-byte payloads, {seconds} s each"
    );
    let memory = run(seconds, None).await;
    let dir = std::env::temp_dir().join(format!("tern-fanin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = RedbStore::open(&dir).unwrap();
    let wall_clock_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let persistent = run(
        seconds,
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
