//! A small MQTT test client over real TCP, built on Tern's codec: it sends exactly what it is
//! told (including raw bytes) and reports exactly what arrives. Its `expect_*` helpers panic,
//! which is what tests want; the [`crate::raw_client`] adapter uses the fallible calls.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern::codec::*;
use tern::types::{PacketId, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for a packet that should come.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

pub fn s(text: &str) -> ByteStr {
    ByteStr::new(text).unwrap()
}

pub fn connect_packet(version: ProtocolVersion, id: &str, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 60,
        properties: Properties::new(),
        client_id: s(id),
        will: None,
        username: None,
        password: None,
        bridge: false,
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, id: u16, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        content: Content::new(s(topic), Bytes::copy_from_slice(payload)),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(id).unwrap()),
        properties: Properties::new(),
    })
}

impl RawClient {
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        RawClient::try_open(addr, version)
            .await
            .expect("connect to the broker")
    }

    pub async fn try_open(
        addr: SocketAddr,
        version: ProtocolVersion,
    ) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            buf: BytesMut::new(),
            version,
        })
    }

    /// Connects and returns the client with the broker's CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = RawClient::open(addr, connect.protocol).await;
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects and asserts the broker accepted.
    pub async fn connected(addr: SocketAddr, connect: Connect) -> RawClient {
        let (client, ack) = RawClient::connect(addr, connect).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        client
    }

    pub async fn send(&mut self, packet: Packet) {
        self.try_send(packet).await.expect("write to the broker");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).await.expect("write to the broker");
    }

    pub async fn try_send(&mut self, packet: Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode(&packet, self.version, &mut out).expect("encodable packet");
        self.try_send_raw(&out).await
    }

    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next packet, or `None` if the broker closed the connection. Panics after `PATIENCE`.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(PATIENCE)
            .await
            .expect("no packet from the broker in time")
    }

    /// `Err(())` if nothing arrives within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(packet) = decode(&mut self.buf, self.version, PACKET_BYTES_MAX)
                    .expect("broker sent valid MQTT")
                {
                    return Some(packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| ())
    }

    /// Asserts that nothing arrives within `limit`.
    pub async fn expect_silence(&mut self, limit: Duration) {
        if let Ok(packet) = self.recv_within(limit).await {
            panic!("expected nothing, got {packet:?}");
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Properties::new(),
            filters: vec![(s(filter), SubscriptionOptions::new(qos))],
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => assert!(
                !ack.reason_codes[0].is_error(),
                "subscription refused: {ack:?}"
            ),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBLISH; QoS 1 is acknowledged.
    pub async fn expect_publish(&mut self) -> Publish {
        self.expect_publish_within(PATIENCE).await
    }

    pub async fn expect_publish_within(&mut self, limit: Duration) -> Publish {
        let packet = self
            .recv_within(limit)
            .await
            .expect("no packet from the broker in time");
        match packet {
            Some(Packet::Publish(p)) => {
                if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                    self.send(Packet::PubAck(Ack::new(id))).await;
                }
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The socket and whatever was read from it but not yet decoded, for tests that read and
    /// write at the same time.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Disconnect::normal())).await;
    }
}
