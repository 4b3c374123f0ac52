//! A real Mosquitto at the edge, bridged to Tern with the minimal configuration a user writes
//! (`connection`, `address`, `topic # both 1`, everything else default: `try_private true`,
//! so the bridge bit is set). Checks what a user of that setup needs: the bridge connects at
//! once, messages flow both ways exactly once (no loop), retained messages published at the
//! edge are retained in Tern, and a QoS 1 message published at the edge while the bridge is
//! down arrives once it reconnects. Mosquitto comes from the Debian package, which the test
//! command installs when it is missing; loopback only.

// Waiting for a real process takes wall-clock time.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tern::codec::*;
use tern::net::Server;
use tern::types::QoS;
use tern_conformance::raw::{connect_packet, publish, RawClient};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Kills the Mosquitto process when the test ends, however it ends.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// Mosquitto on `edge_port`, bridged to Tern on `tern_port`, with the minimal configuration.
fn start_mosquitto(dir: &std::path::Path, edge_port: u16, tern_port: u16) -> Mosquitto {
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {edge_port} 127.0.0.1\n\
             allow_anonymous true\n\
             connection tern\n\
             address 127.0.0.1:{tern_port}\n\
             topic # both 1\n\
             log_dest stderr\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let child = Command::new(mosquitto_binary())
        .args(["-c", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mosquitto (the test command installs it)");
    Mosquitto(child)
}

async fn start_tern(port: u16) -> Server {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    Server::start(vec![listener], tern::core::Config::default()).unwrap()
}

/// A 3.1.1 client on `port` (retrying while the broker starts).
async fn client(port: u16, id: &str) -> RawClient {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return RawClient::connected(addr, connect_packet(V3, id, true)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// The payloads of the PUBLISHes `c` receives within `limit` (QoS 1 acknowledged).
async fn received(c: &mut RawClient, limit: Duration) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    let until = Instant::now() + limit;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match c.recv_within(left).await {
            Ok(Some(Packet::Publish(p))) => {
                if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                    c.send(Packet::PubAck(Ack::new(id))).await;
                }
                got.push((String::from_utf8(p.payload().to_vec()).unwrap(), p.retain));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => break,
        }
    }
    got
}

/// Publishes on `topic` from `from` until `to` gets it (the bridge needs a moment to
/// subscribe); returns how long that took. Each try has its own payload.
async fn first_through(
    from: &mut RawClient,
    to: &mut RawClient,
    topic: &str,
    log: &std::path::Path,
) -> Duration {
    let started = Instant::now();
    for n in 0..40u16 {
        let payload = format!("probe-{n}");
        from.send(publish(
            topic,
            payload.as_bytes(),
            QoS::AtLeastOnce,
            n + 1,
            false,
        ))
        .await;
        let got = received(to, Duration::from_millis(250)).await;
        if got.iter().any(|(p, _)| p.starts_with("probe-")) {
            return started.elapsed();
        }
    }
    panic!(
        "nothing crossed the bridge on {topic} in 10 s; Mosquitto's log: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_mosquitto_bridge_works_against_tern() {
    let dir = std::env::temp_dir().join(format!("tern-bridge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (tern_port, edge_port) = (free_port(), free_port());
    let tern = start_tern(tern_port).await;
    let _mosquitto = start_mosquitto(&dir, edge_port, tern_port);
    let log = dir.join("mosquitto.log");

    let mut at_tern = client(tern_port, "at-tern").await;
    at_tern.subscribe("#", QoS::AtLeastOnce).await;
    let mut at_edge = client(edge_port, "at-edge").await;
    at_edge.subscribe("#", QoS::AtLeastOnce).await;
    let mut edge_pub = client(edge_port, "edge-pub").await;
    let mut tern_pub = client(tern_port, "tern-pub").await;

    // The bridge connects at once, with the bridge bit (counted at the end: a refusal would
    // have made Mosquitto fall back to a plain connection after its restart timeout).
    first_through(&mut edge_pub, &mut at_tern, "probe/up", &log).await;
    first_through(&mut tern_pub, &mut at_edge, "probe/down", &log).await;
    // Drain what the probes left at both ends.
    received(&mut at_tern, Duration::from_millis(500)).await;
    received(&mut at_edge, Duration::from_millis(500)).await;

    // Both ways, each message exactly once at each end: nothing loops back.
    edge_pub
        .send(publish(
            "data/from-edge",
            b"from-edge",
            QoS::AtLeastOnce,
            100,
            false,
        ))
        .await;
    tern_pub
        .send(publish(
            "data/from-tern",
            b"from-tern",
            QoS::AtLeastOnce,
            100,
            false,
        ))
        .await;
    let at_edge_got = received(&mut at_edge, Duration::from_secs(2)).await;
    let at_tern_got = received(&mut at_tern, Duration::from_secs(1)).await;
    for (side, got) in [("edge", &at_edge_got), ("tern", &at_tern_got)] {
        for payload in ["from-edge", "from-tern"] {
            let copies = got.iter().filter(|(p, _)| p == payload).count();
            assert_eq!(
                copies, 1,
                "{payload} reached the {side} {copies} times: {got:?}"
            );
        }
    }

    // A retained message published at the edge is retained in Tern.
    edge_pub
        .send(publish("state/lamp", b"on", QoS::AtLeastOnce, 101, true))
        .await;
    received(&mut at_tern, Duration::from_secs(1)).await;
    let mut late = client(tern_port, "late").await;
    late.subscribe("state/#", QoS::AtLeastOnce).await;
    let got = received(&mut late, Duration::from_secs(1)).await;
    assert_eq!(
        got,
        [("on".to_string(), true)],
        "the retained message at Tern"
    );
    // And the other way: retained at Tern is retained at the edge (the bridge gets the flag
    // as published).
    tern_pub
        .send(publish("state/door", b"open", QoS::AtLeastOnce, 103, true))
        .await;
    received(&mut at_edge, Duration::from_secs(1)).await;
    let mut late_edge = client(edge_port, "late-edge").await;
    late_edge.subscribe("state/door", QoS::AtLeastOnce).await;
    let got = received(&mut late_edge, Duration::from_secs(1)).await;
    assert_eq!(
        got,
        [("open".to_string(), true)],
        "the retained message at the edge"
    );

    // The bridge goes down (Tern stops); a QoS 1 message published at the edge meanwhile
    // arrives once Tern is back and the bridge reconnects (its session is persistent).
    drop((at_tern, tern_pub, late));
    let stats = tern.shutdown().await;
    assert_eq!(
        stats.bridge_connections_accepted, 1,
        "Mosquitto's bridge connected with the bridge bit, once"
    );
    edge_pub
        .send(publish(
            "data/while-down",
            b"while-down",
            QoS::AtLeastOnce,
            102,
            false,
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tern = start_tern(tern_port).await;
    let mut at_tern = client(tern_port, "at-tern-again").await;
    at_tern.subscribe("data/#", QoS::AtLeastOnce).await;
    // Mosquitto retries the bridge after its restart timeout (5 s, then backing off).
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(40);
    while !got.iter().any(|(p, _)| p == "while-down") && Instant::now() < until {
        got.extend(received(&mut at_tern, Duration::from_millis(500)).await);
    }
    got.extend(received(&mut at_tern, Duration::from_secs(1)).await);
    let copies = got.iter().filter(|(p, _)| p == "while-down").count();
    assert_eq!(
        copies, 1,
        "while-down after the bridge reconnected: {got:?}"
    );
    tern.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
