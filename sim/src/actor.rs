//! A scripted MQTT client on its own simulated host, built on Tern's codec.
//!
//! It does what the director tells it (connect, send a packet, send raw bytes, close) and on
//! its own only what any client library does: answer the QoS flows (unless `auto_ack` is off),
//! send PINGREQ to keep the connection alive, and tell new messages from QoS 2 resends. Every
//! packet in and out goes into the shared trace.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use tern::auth::scram::{self, ScramClient};
use tern::codec::{
    decode, encode, Ack, Auth, ByteStr, Packet, Properties, Property, ProtocolVersion, Publish,
    ReasonCode, PACKET_BYTES_MAX,
};
use tern::types::{PacketId, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use turmoil::net::TcpStream;

use crate::trace::{Event, Trace};

pub const BROKER_PORT: u16 = 1883;

#[derive(Debug)]
pub enum Command {
    Connect(Packet),
    Send(Packet),
    Raw(Vec<u8>),
    Close,
    /// Start a SCRAM-SHA-256 re-authentication with this password.
    Reauthenticate(String),
}

pub struct Actor {
    pub name: String,
    pub version: ProtocolVersion,
    pub keep_alive: Duration,
    pub auto_ack: bool,
    /// SCRAM-SHA-256 user and password, used at every CONNECT.
    pub scram: Option<(String, String)>,
    /// Upgrade every connection to WebSocket first (the broker serves MQTT over WebSocket).
    pub websocket: bool,
    pub trace: Rc<RefCell<Trace>>,
}

/// The connection's halves: turmoil's TCP stream, or a WebSocket over it.
type Reader = Box<dyn AsyncRead + Unpin>;
type Writer = Box<dyn AsyncWrite + Unpin>;

struct Connection {
    reader: Reader,
    writer: Writer,
    buf: BytesMut,
    sent_disconnect: bool,
    /// The CONNECT asked to resume a session (clean session 0 / clean start 0).
    resume: bool,
    /// Topic aliases the broker set on this connection (MQTT 5).
    aliases: BTreeMap<u16, String>,
    /// The SCRAM exchange under way or last finished on this connection.
    scram: Option<ScramClient>,
    /// Exchanges started on this connection, for distinct nonces.
    scram_exchanges: u32,
}

/// What a client keeps for its session across connections (MQTT 4.4): the QoS flows it has
/// not finished, resent when it reconnects to a session the broker still has.
#[derive(Default)]
struct SessionState {
    /// QoS 2 messages received and acknowledged with PUBREC, not yet released.
    awaiting_pubrel: BTreeSet<PacketId>,
    /// Our QoS 1/2 PUBLISHes not yet acknowledged, in send order.
    unacked_publish: Vec<Publish>,
    /// Our PUBRELs not yet completed.
    unacked_pubrel: Vec<PacketId>,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

impl Actor {
    /// Connects to the broker (and upgrades to WebSocket when it serves that).
    async fn open(&self) -> std::io::Result<(Reader, Writer)> {
        let stream = TcpStream::connect(("broker", BROKER_PORT)).await?;
        if !self.websocket {
            let (reader, writer) = stream.into_split();
            return Ok((Box::new(reader), Box::new(writer)));
        }
        let ws = tern::net::transport::websocket_client(stream, "broker", "/mqtt").await?;
        let (reader, writer) = tokio::io::split(ws);
        Ok((Box::new(reader), Box::new(writer)))
    }

    fn record(&self, event: Event) {
        self.trace.borrow_mut().push(now(), &self.name, event);
    }

    pub async fn run(self, mut commands: mpsc::UnboundedReceiver<Command>) -> turmoil::Result {
        let mut conn: Option<Connection> = None;
        let mut session = SessionState::default();
        loop {
            let ping_every = if self.keep_alive.is_zero() {
                Duration::from_secs(3600)
            } else {
                self.keep_alive / 2
            };
            tokio::select! {
                biased;
                command = commands.recv() => {
                    let Some(command) = command else { return Ok(()) };
                    self.command(command, &mut conn, &mut session).await;
                }
                read = read_packet(&mut conn, self.version) => match read {
                    Some(mut packet) => {
                        if let (Packet::Publish(p), Some(c)) = (&mut packet, conn.as_mut()) {
                            p.content = p.content.with_topic(resolve_alias(&mut c.aliases, p));
                        }
                        self.record(Event::Received(packet.clone()));
                        if let Some(c) = conn.as_mut() {
                            self.respond(packet, c, &mut session).await;
                        }
                    }
                    None => {
                        let normal = conn.take().is_some_and(|c| c.sent_disconnect);
                        self.record(Event::Closed { by_client: false, normal });
                    }
                },
                _ = tokio::time::sleep(ping_every), if conn.is_some() && !self.keep_alive.is_zero() => {
                    if let Some(c) = conn.as_mut() {
                        self.write(c, Packet::PingReq).await;
                    }
                }
            }
        }
    }

    async fn command(
        &self,
        command: Command,
        conn: &mut Option<Connection>,
        session: &mut SessionState,
    ) {
        match command {
            Command::Connect(mut packet) => {
                *conn = None;
                match self.open().await {
                    Ok((reader, writer)) => {
                        let mut c = Connection {
                            reader,
                            writer,
                            buf: BytesMut::new(),
                            sent_disconnect: false,
                            resume: matches!(&packet, Packet::Connect(c) if !c.clean_start),
                            aliases: BTreeMap::new(),
                            scram: None,
                            scram_exchanges: 0,
                        };
                        if let (Packet::Connect(connect), Some((user, password))) =
                            (&mut packet, &self.scram)
                        {
                            let scram = self.start_scram(&mut c, user, password);
                            let properties = &mut connect.properties;
                            properties.push(Property::AuthenticationMethod(ByteStr::from_static(
                                scram::METHOD,
                            )));
                            properties.push(Property::AuthenticationData(Bytes::from(
                                scram.client_first(),
                            )));
                        }
                        self.write(&mut c, packet).await;
                        *conn = Some(c);
                    }
                    Err(error) => self.record(Event::ConnectFailed(error.to_string())),
                }
            }
            Command::Send(packet) => {
                if let Packet::Publish(p) = &packet {
                    if p.packet_id.is_some() {
                        session.unacked_publish.push(p.clone());
                    }
                }
                if let Some(c) = conn.as_mut() {
                    if matches!(packet, Packet::Disconnect(_)) {
                        c.sent_disconnect = true;
                    }
                    self.write(c, packet).await;
                }
            }
            Command::Raw(bytes) => {
                if let Some(c) = conn.as_mut() {
                    self.record(Event::Fault(format!("raw bytes {bytes:02x?}")));
                    if c.writer.write_all(&bytes).await.is_ok() {
                        let _ = c.writer.flush().await;
                    }
                }
            }
            Command::Reauthenticate(password) => {
                let Some((user, _)) = self.scram.clone() else {
                    return;
                };
                if let Some(c) = conn.as_mut() {
                    let first = self.start_scram(c, &user, &password).client_first();
                    self.write(c, auth(ReasonCode::ReAuthenticate, first)).await;
                }
            }
            Command::Close => {
                if let Some(c) = conn.take() {
                    self.record(Event::Closed {
                        by_client: true,
                        normal: c.sent_disconnect,
                    });
                }
            }
        }
    }

    async fn write(&self, c: &mut Connection, packet: Packet) {
        let mut out = BytesMut::new();
        if encode(&packet, self.version, &mut out).is_ok() {
            self.record(Event::Sent(packet));
            // Flushed: a WebSocket holds written frames until then.
            if c.writer.write_all(&out).await.is_ok() {
                let _ = c.writer.flush().await;
            }
        }
    }

    /// A new SCRAM exchange on `c`, with a nonce unique to this host and connection.
    fn start_scram<'c>(
        &self,
        c: &'c mut Connection,
        user: &str,
        password: &str,
    ) -> &'c ScramClient {
        c.scram_exchanges += 1;
        let nonce = format!("{}-{}-{}", self.name, now().as_millis(), c.scram_exchanges);
        c.scram.insert(ScramClient::new(user, password, &nonce))
    }

    /// Checks the broker's SCRAM proof (in a CONNACK or the AUTH that ends a re-authentication).
    fn verify_scram(&self, c: &Connection, data: Option<&Bytes>) {
        let proven = c
            .scram
            .as_ref()
            .zip(data)
            .is_some_and(|(scram, data)| scram.verify_server(data));
        if !proven {
            self.record(Event::ClientError(
                "the broker's SCRAM proof is missing or wrong".into(),
            ));
        }
    }

    /// What a client library does on its own when a packet arrives.
    async fn respond(&self, packet: Packet, c: &mut Connection, session: &mut SessionState) {
        match &packet {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::Success && c.scram.is_some() => {
                self.verify_scram(c, ack.properties.authentication_data());
            }
            Packet::Auth(a) if a.reason_code == ReasonCode::Success => {
                self.verify_scram(c, a.properties.authentication_data());
            }
            Packet::Auth(a) if a.reason_code == ReasonCode::ContinueAuthentication => {
                let data = a
                    .properties
                    .authentication_data()
                    .cloned()
                    .unwrap_or_default();
                let last = c.scram.as_mut().map(|scram| scram.client_final(&data));
                match last {
                    Some(Ok(last)) => {
                        self.write(c, auth(ReasonCode::ContinueAuthentication, last))
                            .await
                    }
                    Some(Err(why)) => {
                        self.record(Event::ClientError(format!("bad SCRAM server-first: {why}")))
                    }
                    None => self.record(Event::ClientError("AUTH without an exchange".into())),
                }
                return;
            }
            _ => {}
        }
        match packet {
            // MQTT 3.1 has no session-present flag (always 0): a client that asked to resume
            // goes on with its session, as 3.1 clients do.
            Packet::ConnAck(ack)
                if ack.session_present || (self.version == ProtocolVersion::V3_1 && c.resume) =>
            {
                // Resume: resend unfinished flows in order, PUBLISH with DUP (MQTT-4.4.0-1).
                let publishes = session.unacked_publish.clone();
                for mut p in publishes {
                    p.dup = true;
                    self.write(c, Packet::Publish(p)).await;
                }
                for id in session.unacked_pubrel.clone() {
                    self.write(c, Packet::PubRel(Ack::new(id))).await;
                }
            }
            Packet::ConnAck(_) => *session = SessionState::default(),
            Packet::Publish(p) => {
                let new = match (p.qos, p.packet_id) {
                    (QoS::ExactlyOnce, Some(id)) => session.awaiting_pubrel.insert(id),
                    _ => true,
                };
                if new {
                    self.record(Event::Delivered {
                        topic: p.topic().to_string(),
                        payload: String::from_utf8_lossy(p.payload()).into_owned(),
                        qos: p.qos.bits(),
                        retain: p.retain,
                    });
                }
                if self.auto_ack {
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            self.write(c, Packet::PubAck(Ack::new(id))).await
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            self.write(c, Packet::PubRec(Ack::new(id))).await
                        }
                        _ => {}
                    }
                }
            }
            Packet::PubRel(ack) if self.auto_ack => {
                session.awaiting_pubrel.remove(&ack.packet_id);
                self.write(c, Packet::PubComp(Ack::new(ack.packet_id)))
                    .await;
            }
            Packet::PubAck(ack) => session
                .unacked_publish
                .retain(|p| p.packet_id != Some(ack.packet_id)),
            Packet::PubRec(ack) => {
                session
                    .unacked_publish
                    .retain(|p| p.packet_id != Some(ack.packet_id));
                if !ack.reason_code.is_error() {
                    if !session.unacked_pubrel.contains(&ack.packet_id) {
                        session.unacked_pubrel.push(ack.packet_id);
                    }
                    self.write(c, Packet::PubRel(Ack::new(ack.packet_id))).await;
                }
            }
            Packet::PubComp(ack) => session.unacked_pubrel.retain(|id| *id != ack.packet_id),
            _ => {}
        }
    }
}

/// The topic a received PUBLISH is about, as a client library resolves it: its own topic
/// (which also sets its alias), or the topic its alias was set to on this connection. The
/// trace records the PUBLISH with this topic (and its alias property); an alias the broker never
/// set becomes an impossible topic that the delivery checker reports.
fn resolve_alias(aliases: &mut BTreeMap<u16, String>, p: &Publish) -> ByteStr {
    let Some(alias) = p.properties.topic_alias() else {
        return p.content.to_topic();
    };
    if !p.topic().is_empty() {
        aliases.insert(alias, p.topic().to_string());
        return p.content.to_topic();
    }
    let topic = aliases
        .get(&alias)
        .cloned()
        .unwrap_or_else(|| format!("<unknown topic alias {alias}>"));
    ByteStr::new(&topic).unwrap_or_default()
}

/// An AUTH packet of the SCRAM-SHA-256 method.
fn auth(reason_code: ReasonCode, data: Vec<u8>) -> Packet {
    let mut properties = Properties::new();
    properties.push(Property::AuthenticationMethod(ByteStr::from_static(
        scram::METHOD,
    )));
    properties.push(Property::AuthenticationData(Bytes::from(data)));
    Packet::Auth(Auth {
        reason_code,
        properties,
    })
}

/// The next packet on the connection; `None` when it ends (or is not valid MQTT). Pending
/// forever when there is no connection, so `select!` waits on the other branches.
async fn read_packet(conn: &mut Option<Connection>, version: ProtocolVersion) -> Option<Packet> {
    let Some(c) = conn.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match decode(&mut c.buf, version, PACKET_BYTES_MAX) {
            Ok(Some(packet)) => return Some(packet),
            Ok(None) => {}
            Err(_) => return None,
        }
        match c.reader.read_buf(&mut c.buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
