//! What TLS costs: QoS 1 fan-in over plain TCP and over TLS in one run, and the rate of new
//! TLS connections (handshake, CONNECT, CONNACK, DISCONNECT) against the rate over TCP.
//!
//! Eight publishers keep 100 QoS 1 messages of 64 bytes unacknowledged each, towards one
//! subscriber that acknowledges everything; the broker runs in memory in this process, with
//! the four listeners of the conformance broker (certificates made at start, ECDSA P-256,
//! TLS 1.3). Each phase runs `--seconds` after a one-second warm-up.
//!
//! ```sh
//! cargo run --release --example tls_cost -- --seconds 10
//! ```

// A load tool measures wall-clock time; the clock ban is for the broker.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern::codec::*;
use tern::types::QoS;
use tern_conformance::broker::{listener_for, Broker};
use tern_conformance::client::Net;
use tern_conformance::pki::Pki;
use tern_conformance::raw::{connect_packet, publish};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PUBLISHERS: usize = 8;
const WINDOW: usize = 100;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection over `net` (TCP or TLS), MQTT not started.
async fn open(addr: SocketAddr, net: Net, tls: &tokio_rustls::TlsConnector) -> Box<dyn Io> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    match net {
        Net::Tls => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
            Box::new(tls.connect(name, tcp).await.expect("TLS handshake"))
        }
        _ => Box::new(tcp),
    }
}

/// Decodes every whole packet in `buf`.
fn packets(buf: &mut BytesMut) -> Vec<Packet> {
    let mut out = Vec::new();
    while let Some(packet) = decode(buf, V3, PACKET_BYTES_MAX).expect("the broker sends MQTT") {
        out.push(packet);
    }
    out
}

/// Sends CONNECT (and SUBSCRIBE to `filter`), and waits for the answers.
async fn start_session(io: &mut Box<dyn Io>, id: &str, filter: Option<&str>) -> BytesMut {
    let mut out = BytesMut::new();
    let connect = Packet::Connect(Box::new(connect_packet(V3, id, true)));
    encode(&connect, V3, &mut out).expect("encodes");
    if let Some(filter) = filter {
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: tern::types::PacketId::new(1).expect("1 is an id"),
            properties: Properties::new(),
            filters: vec![(
                ByteStr::new(filter).expect("a filter"),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            )],
        });
        encode(&subscribe, V3, &mut out).expect("encodes");
    }
    io.write_all(&out).await.expect("write");
    let mut buf = BytesMut::new();
    let expected = 1 + usize::from(filter.is_some());
    let mut answers = 0;
    while answers < expected {
        io.read_buf(&mut buf).await.expect("read");
        answers += packets(&mut buf).len();
    }
    buf
}

async fn publisher(mut io: Box<dyn Io>, n: usize, stop: Arc<AtomicBool>) {
    let mut buf = start_session(&mut io, &format!("pub{n}"), None).await;
    let topic = format!("fanin/{n}");
    let payload = [b'x'; 64];
    let (mut inflight, mut id) = (0usize, 0u16);
    while !stop.load(Ordering::Relaxed) {
        inflight -= packets(&mut buf)
            .iter()
            .filter(|p| matches!(p, Packet::PubAck(_)))
            .count();
        let mut out = BytesMut::new();
        while inflight < WINDOW {
            id = id % 60_000 + 1;
            let packet = publish(&topic, &payload, QoS::AtLeastOnce, id, false);
            encode(&packet, V3, &mut out).expect("encodes");
            inflight += 1;
        }
        if io.write_all(&out).await.is_err()
            || matches!(io.read_buf(&mut buf).await, Ok(0) | Err(_))
        {
            return;
        }
    }
}

/// Messages per second the subscriber received over `net`.
async fn fan_in(
    broker: SocketAddr,
    net: Net,
    tls: &tokio_rustls::TlsConnector,
    seconds: u64,
) -> f64 {
    let addr = listener_for(broker, net);
    let mut sub = open(addr, net, tls).await;
    let mut buf = start_session(&mut sub, &format!("sub-{net:?}"), Some("fanin/#")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for n in 0..PUBLISHERS {
        let io = open(addr, net, tls).await;
        publishers.push(tokio::spawn(publisher(io, n, stop.clone())));
    }
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(seconds);
    let mut received = 0u64;
    while Instant::now() < end {
        let mut acks = BytesMut::new();
        for packet in packets(&mut buf) {
            let Packet::Publish(p) = packet else { continue };
            if let Some(id) = p.packet_id {
                encode(&Packet::PubAck(Ack::new(id)), V3, &mut acks).expect("encodes");
            }
            if Instant::now() >= warm_until {
                received += 1;
            }
        }
        if !acks.is_empty() {
            sub.write_all(&acks).await.expect("the broker reads");
        }
        sub.read_buf(&mut buf).await.expect("read");
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.abort();
    }
    received as f64 / seconds as f64
}

/// New sessions per second over `net` from 8 concurrent clients: connect (and handshake),
/// CONNECT, CONNACK, DISCONNECT, close.
async fn connection_rate(
    broker: SocketAddr,
    net: Net,
    tls: &tokio_rustls::TlsConnector,
    seconds: u64,
) -> f64 {
    let addr = listener_for(broker, net);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let (done, stop, tls) = (done.clone(), stop.clone(), tls.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut io = open(addr, net, &tls).await;
                    start_session(&mut io, &format!("c{n}-{i}"), None).await;
                    let mut out = BytesMut::new();
                    encode(&Packet::Disconnect(Disconnect::normal()), V3, &mut out)
                        .expect("encodes");
                    let _ = io.write_all(&out).await;
                    let _ = io.shutdown().await;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = done.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    count as f64 / seconds as f64
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
            other => panic!("unknown argument {other:?}; usage: tls_cost [--seconds N]"),
        }
    }
    let broker = Broker::start(tern::core::Config::default())
        .await
        .expect("broker");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(
        Pki::shared().client_config(false).expect("client config"),
    ));
    let tcp_rate = fan_in(broker.addr, Net::Tcp, &tls, seconds).await;
    let tls_rate = fan_in(broker.addr, Net::Tls, &tls, seconds).await;
    println!("QoS 1 fan-in (8 publishers x 100 in flight, 64 B):");
    println!("  TCP {tcp_rate:>10.0} msg/s");
    println!(
        "  TLS {tls_rate:>10.0} msg/s   ({:.2}x TCP)",
        tls_rate / tcp_rate
    );
    let tcp_connects = connection_rate(broker.addr, Net::Tcp, &tls, seconds).await;
    let tls_connects = connection_rate(broker.addr, Net::Tls, &tls, seconds).await;
    println!("New sessions per second (8 clients, connect + CONNECT/CONNACK + DISCONNECT):");
    println!("  TCP {tcp_connects:>10.0} /s");
    println!(
        "  TLS {tls_connects:>10.0} /s   ({:.2}x TCP)",
        tls_connects / tcp_connects
    );
    broker.server.shutdown().await;
}
