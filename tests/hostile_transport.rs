//! The hostile suite for the TLS and WebSocket listeners: handshakes that never finish,
//! garbage instead of a ClientHello, an endless upgrade request, wrong paths and subprotocols,
//! text frames; and MQTT over WebSocket framing as the spec allows it (a packet spanning
//! frames, several packets in one frame). After each, the broker still serves.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tern::codec::*;
use tern::core::Config;
use tern::types::QoS;
use tern_conformance::broker::{listener_for, Broker};
use tern_conformance::client::Net;
use tern_conformance::raw::{connect_packet, publish, RawClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const V5: ProtocolVersion = ProtocolVersion::V5;

async fn start(connect_timeout: Duration) -> Broker {
    let mut config = Config::default();
    config.limits.connect_timeout = connect_timeout;
    Broker::start(config).await.expect("start the broker")
}

async fn assert_serving(addr: SocketAddr) {
    let mut control = RawClient::connected(addr, connect_packet(V5, "control", true)).await;
    control.subscribe("control/echo", QoS::AtMostOnce).await;
    control
        .send(publish("control/echo", b"ping", QoS::AtMostOnce, 0, false))
        .await;
    match control.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload(), b"ping"),
        other => panic!("the broker stopped serving: {other:?}"),
    }
}

/// Reads until the broker closes; returns how long that took and what it sent.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the broker kept the connection open for {within:?}"
    );
    (start.elapsed(), received)
}

fn encode_v5(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, V5, &mut out).unwrap();
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_never_finished_is_closed_within_the_connect_timeout() {
    let broker = start(Duration::from_secs(1)).await;
    let tls = listener_for(broker.addr, Net::Tls);
    let opened = Instant::now();
    let mut silent = TcpStream::connect(tls).await.unwrap();
    // Half a ClientHello record header, then nothing.
    let mut stalled = TcpStream::connect(tls).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    for stream in [&mut silent, &mut stalled] {
        until_closed(stream, Duration::from_secs(5)).await;
        let took = opened.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "closed too early: {took:?}"
        );
    }
    assert_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_client_hello_is_refused_at_once() {
    let broker = start(Duration::from_secs(10)).await;
    for listener in [Net::Tls, Net::Wss] {
        let mut stream = TcpStream::connect(listener_for(broker.addr, listener))
            .await
            .unwrap();
        // A plain MQTT CONNECT where TLS is expected.
        let connect = encode_v5(&Packet::Connect(Box::new(connect_packet(V5, "x", true))));
        stream.write_all(&connect).await.unwrap();
        let (took, answer) = until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(2), "{listener:?}: took {took:?}");
        // Whatever came back is a TLS alert record, never MQTT.
        assert!(
            answer.is_empty() || answer[0] == 0x15,
            "{listener:?}: {answer:?}"
        );
    }
    assert_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_upgrade_request_is_cut_off() {
    let broker = start(Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(listener_for(broker.addr, Net::Ws))
        .await
        .unwrap();
    let start = Instant::now();
    let mut request = b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nX-Padding: ".to_vec();
    request.resize(4 * 1024 * 1024, b'a');
    // The broker stops reading after 16 KiB and closes: the write fails or completes into
    // a closed socket; either way the connection ends long before the connect timeout.
    let _ = stream.write_all(&request).await;
    let (_, answer) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!answer.starts_with(b"HTTP/1.1 101"), "upgraded anyway");
    assert_serving(broker.addr).await;
}

/// The status line of the broker's answer to `request`.
async fn http_status(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_is_404_and_a_missing_subprotocol_400() {
    let broker = start(Duration::from_secs(10)).await;
    let ws = listener_for(broker.addr, Net::Ws);
    let upgrade = |path: &str, protocol: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        )
    };
    let status = http_status(ws, &upgrade("/other", "Sec-WebSocket-Protocol: mqtt\r\n")).await;
    assert!(status.contains("404"), "{status}");
    let status = http_status(ws, &upgrade("/mqtt", "")).await;
    assert!(status.contains("400"), "{status}");
    let status = http_status(ws, &upgrade("/mqtt", "Sec-WebSocket-Protocol: chat\r\n")).await;
    assert!(status.contains("400"), "{status}");
    let status = http_status(
        ws,
        &upgrade("/mqtt", "Sec-WebSocket-Protocol: mqttv3.1\r\n"),
    )
    .await;
    assert!(status.contains("101"), "{status}");
    assert_serving(broker.addr).await;
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn websocket(addr: SocketAddr) -> Ws {
    let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    // spec: [MQTT-6.0.0-4] (both versions). `mqttv3.1` is chosen only for a client that
    // offers nothing else (MQTT 3.1 clients, as Mosquitto does; see the test above).
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt",
        "the broker names the subprotocol it chose"
    );
    ws
}

/// The next binary frame, decoded as exactly one packet (the broker sends one per frame).
async fn next_packet(ws: &mut Ws) -> Packet {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the connection is open")
            .unwrap();
        if let Message::Binary(data) = message {
            let mut buf = BytesMut::from(&data[..]);
            let packet = decode(&mut buf, V5, PACKET_BYTES_MAX).unwrap().unwrap();
            assert!(buf.is_empty(), "more than one packet in a frame");
            return packet;
        }
    }
}

// spec: [MQTT-6.0.0-2] (both versions: the WebSocket transport is the same for both)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_may_span_frames_and_frames_may_hold_several_packets() {
    let broker = start(Duration::from_secs(10)).await;
    let mut ws = websocket(listener_for(broker.addr, Net::Ws)).await;
    // CONNECT split over three frames.
    let connect = encode_v5(&Packet::Connect(Box::new(connect_packet(V5, "ws", true))));
    for part in connect.chunks(connect.len() / 3 + 1) {
        ws.send(Message::Binary(part.to_vec().into()))
            .await
            .unwrap();
    }
    assert!(
        matches!(next_packet(&mut ws).await, Packet::ConnAck(a) if a.reason_code == ReasonCode::Success)
    );
    // SUBSCRIBE and a QoS 1 PUBLISH to it in one frame.
    let mut both = encode_v5(&Packet::Subscribe(Subscribe {
        packet_id: tern::types::PacketId::new(1).unwrap(),
        properties: Properties::new(),
        filters: vec![(
            ByteStr::new("ws/t").unwrap(),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
    }));
    both.extend(encode_v5(&publish(
        "ws/t",
        b"framed",
        QoS::AtLeastOnce,
        2,
        false,
    )));
    ws.send(Message::Binary(both.into())).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_packet(&mut ws).await.packet_type());
    }
    seen.sort_by_key(|t| format!("{t}"));
    assert_eq!(
        seen.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        ["PUBACK", "PUBLISH", "SUBACK"]
    );
    assert_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_closes_the_connection() {
    let broker = start(Duration::from_secs(10)).await;
    let mut ws = websocket(listener_for(broker.addr, Net::Ws)).await;
    let connect = encode_v5(&Packet::Connect(Box::new(connect_packet(V5, "text", true))));
    ws.send(Message::Binary(connect.into())).await.unwrap();
    assert!(matches!(next_packet(&mut ws).await, Packet::ConnAck(_)));
    // spec: [MQTT-6.0.0-1]: anything but binary frames closes the connection.
    ws.send(Message::Text("PINGREQ".into())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after a text frame");
    assert_serving(broker.addr).await;
}
