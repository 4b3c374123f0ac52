//! One MQTT connection over TCP, framed with Tern's codec: CONNECT and its CONNACK, then a read
//! half that decodes whatever arrives and a write half that encodes into a buffer and sends it
//! in one write. No policy here: the roles decide what to send.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::BytesMut;
use tern::codec::{
    decode, encode, ByteStr, Connect, Packet, Properties, ProtocolVersion, ReasonCode,
    PACKET_BYTES_MAX,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Buffers start this small and grow with the load: the idle scenario holds thousands.
const BUFFER_START_BYTES: usize = 1024;

pub struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
    version: ProtocolVersion,
}

pub struct Writer {
    half: OwnedWriteHalf,
    buf: BytesMut,
    version: ProtocolVersion,
}

/// What a connection asks for at CONNECT.
#[derive(Debug, Clone)]
pub struct Login {
    pub client_id: String,
    pub version: ProtocolVersion,
    pub keep_alive: u16,
}

/// Connects, sends CONNECT (clean session) and waits for a successful CONNACK.
pub async fn connect(addr: SocketAddr, login: &Login) -> anyhow::Result<(Reader, Writer)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut reader = Reader {
        half: read,
        buf: BytesMut::with_capacity(BUFFER_START_BYTES),
        version: login.version,
    };
    let mut writer = Writer {
        half: write,
        buf: BytesMut::with_capacity(BUFFER_START_BYTES),
        version: login.version,
    };
    let client_id = mqtt_string(&login.client_id)?;
    writer.queue(&Packet::Connect(Box::new(Connect {
        protocol: login.version,
        clean_start: true,
        keep_alive: login.keep_alive,
        properties: Properties::new(),
        client_id,
        will: None,
        username: None,
        password: None,
        bridge: false,
    })));
    writer.flush().await?;
    match reader.next().await? {
        Some(Packet::ConnAck(ack)) if ack.reason_code == ReasonCode::Success => {
            Ok((reader, writer))
        }
        Some(Packet::ConnAck(ack)) => bail!(
            "{}: CONNECT refused: {}",
            login.client_id,
            ack.reason_code.description()
        ),
        other => bail!("{}: expected CONNACK, got {other:?}", login.client_id),
    }
}

/// `text` as an MQTT string (client ids, topics and filters are the bench's own).
pub fn mqtt_string(text: &str) -> anyhow::Result<ByteStr> {
    ByteStr::new(text).map_err(|e| anyhow::anyhow!("{text:?} is not an MQTT string: {e:?}"))
}

impl Reader {
    /// A packet already read and not yet returned, without waiting.
    pub fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        decode(&mut self.buf, self.version, PACKET_BYTES_MAX).context("the broker sent bad MQTT")
    }

    /// Reads more from the socket (cancel-safe: nothing read is lost). Errors on end of stream.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        if self.half.read_buf(&mut self.buf).await? == 0 {
            bail!("the broker closed the connection");
        }
        Ok(())
    }

    /// The next packet; `None` if the broker closed the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            if let Some(packet) = self.try_next()? {
                return Ok(Some(packet));
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

impl Writer {
    /// Encodes `packet` behind what is waiting to be sent.
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.buf).expect("the bench builds valid packets");
    }

    /// Bytes waiting to be sent.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Sends what was queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}
