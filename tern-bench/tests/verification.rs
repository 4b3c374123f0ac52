//! The bench's verification catches a lost message: a proxy between the broker and the
//! clients drops exactly one PUBLISH on its way to a subscriber, and the run must fail with one
//! message lost; through the same proxy dropping nothing, the run passes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tern::codec::ProtocolVersion;
use tern::net::Server;
use tern::types::QoS;
use tern_bench::scenario::{run, Plan, Shape};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy that forwards everything except the `drop_nth` PUBLISH (counting from 1) the broker
/// sends to any client.
async fn dropping_proxy(upstream: SocketAddr, drop_nth: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let publishes = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let broker = TcpStream::connect(upstream).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut broker_read, mut broker_write) = broker.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
            });
            let publishes = publishes.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while broker_read.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                    while let Some(len) = frame_len(&buf) {
                        let frame = buf.split_to(len);
                        let publish = frame[0] >> 4 == 3;
                        if publish && publishes.fetch_add(1, Ordering::SeqCst) + 1 == drop_nth {
                            continue;
                        }
                        if client_write.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The length of the MQTT packet at the front of `buf`, once it is all there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let len = 2 + i + remaining;
            return (buf.remaining() >= len).then_some(len);
        }
    }
    None
}

async fn bench_through(drop_nth: u64, qos: QoS) -> tern_bench::report::Report {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(vec![listener], tern::core::Config::default()).unwrap();
    let proxy = dropping_proxy(server.local_addrs()[0], drop_nth).await;
    let plan = Plan {
        addr: proxy,
        version: ProtocolVersion::V3_1_1,
        shape: Shape::FanIn { publishers: 2 },
        qos,
        payload_bytes: 64,
        window: 20,
        rate: Some(2000.0),
        warmup: Duration::from_millis(100),
        seconds: Duration::from_millis(500),
        drain: Duration::from_millis(500),
        broker_pid: None,
        prefix: format!("verification/{}", qos as u8),
    };
    let report = run(&plan).await.unwrap();
    server.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dropped_message_fails_the_run() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let clean = bench_through(u64::MAX, qos).await;
        assert!(!clean.failed(), "{clean}");
        assert_eq!(clean.verdict.lost, 0);
        assert!(clean.acked > 100, "{clean}");
        let dropped = bench_through(50, qos).await;
        assert!(dropped.failed(), "{dropped}");
        assert_eq!(dropped.verdict.lost, 1, "{dropped}");
        assert_eq!(dropped.verdict.duplicates, 0);
    }
}

/// The binary's exit status says it: 1 with the dropped message, 0 without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_on_a_lost_message() {
    for (drop_nth, expected) in [(u64::MAX, Some(0)), (30, Some(1))] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::start(vec![listener], tern::core::Config::default()).unwrap();
        let proxy = dropping_proxy(server.local_addrs()[0], drop_nth).await;
        let args = [
            "--broker",
            &proxy.to_string(),
            "--qos",
            "1",
            "--rate",
            "1000",
            "--seconds",
            "0.5",
            "--warmup",
            "0.1",
            "--drain",
            "0.5",
            "fan-in",
            "--publishers",
            "2",
        ]
        .map(str::to_owned);
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tern-bench"))
                .args(args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), expected, "{stdout}");
        server.shutdown().await;
    }
}

/// The idle scenario's check that its connections are still open fails when the broker has
/// closed one (here by a takeover: a new connection with the same client id), and passes
/// while all are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_idle_connection_is_noticed() {
    use tern_bench::conn::{connect, Login};
    use tern_bench::scenario::confirm_open;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(vec![listener], tern::core::Config::default()).unwrap();
    let addr = server.local_addrs()[0];
    let login = |id: &str| Login {
        client_id: id.into(),
        version: ProtocolVersion::V3_1_1,
        keep_alive: 60,
    };
    let mut held = vec![
        connect(addr, &login("idle-a")).await.unwrap(),
        connect(addr, &login("idle-b")).await.unwrap(),
    ];
    confirm_open(&mut held).await.unwrap();
    let _taker = connect(addr, &login("idle-b")).await.unwrap();
    let error = confirm_open(&mut held).await.unwrap_err().to_string();
    assert!(error.starts_with("1 of 2 idle connections"), "{error}");
    drop(held);
    server.shutdown().await;
}
