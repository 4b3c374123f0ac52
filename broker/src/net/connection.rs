//! One task per network connection: framing and codec work, off the core's task.
//!
//! The task decodes packets from the socket and hands them to the core task as events, and
//! encodes what the core sends back. It never makes a protocol decision: even a malformed
//! packet is reported to the core, which decides what to send before closing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use super::transport::Reloadable;
use super::Event;
use crate::auth::password_file::PasswordFile;
use crate::codec::{decode, encode, Connect, Packet, ProtocolVersion};
use crate::metrics::ListenerMetrics;
use crate::types::ConnId;

/// Packets are written in batches of at most this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// A write that makes no progress for this long means the peer stopped reading.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// After the broker ends a connection, how long and how much it keeps reading (and throwing
/// away) while waiting for the client to close: see [`linger`].
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_BYTES_MAX: usize = 1024 * 1024;

pub(super) struct ConnectionTask<S> {
    pub conn: ConnId,
    pub stream: S,
    pub events: mpsc::Sender<Event>,
    pub outbound: mpsc::Receiver<Packet>,
    /// The broker task waits to hear when this connection has written (see `Outbound`).
    pub wake: Arc<AtomicBool>,
    /// Packets forwarded to the core and not yet handled, at most an eighth of the outbound
    /// queue: each may produce a reply, and the core keeps a quarter of the queue for replies,
    /// so a client that pipelines requests (100,000 PINGREQs in one read) is slowed down to
    /// the core's pace instead of overflowing its queue with answers.
    pub tickets: Arc<Semaphore>,
    pub packet_bytes_max: usize,
    /// The listener's password file: a CONNECT's credentials are checked here, off the
    /// core's task, and the verdict goes to the core just before the CONNECT.
    pub password_file: Option<Arc<Reloadable<PasswordFile>>>,
    /// Bounds the checks running at once, across all connections.
    pub password_checks: Arc<Semaphore>,
    /// The listener's counters (bytes, stalled writes).
    pub metrics: Arc<ListenerMetrics>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ConnectionTask<S> {
    pub async fn run(self) {
        let ConnectionTask {
            conn,
            stream,
            events,
            mut outbound,
            wake,
            tickets,
            packet_bytes_max,
            password_file,
            password_checks,
            metrics,
        } = self;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let written = Written {
            wake: &wake,
            events: &events,
            conn,
            metrics: &metrics,
        };
        let mut read_buf = BytesMut::with_capacity(4096);
        let mut write_buf = BytesMut::with_capacity(4096);
        // Until CONNECT names the version, 3.1.1 framing is used (CONNECT itself carries its level).
        let mut version = ProtocolVersion::V3_1_1;
        let mut reading = true;
        // Only the first CONNECT is checked: a second one is a protocol error the core
        // answers anyway, and must not cost another slow hash.
        let mut credentials_checked = false;
        loop {
            tokio::select! {
                biased;
                packet = outbound.recv() => {
                    let Some(packet) = packet else {
                        // The core closed the connection: everything it sent was received before
                        // the channel closed, and has been written.
                        let _ = writer.shutdown().await;
                        linger(&mut reader, conn).await;
                        break;
                    };
                    let mut out = Writer { writer: &mut writer, buf: &mut write_buf, to: &written };
                    if !out.write(packet, &mut outbound, version).await {
                        break;
                    }
                }
                read = reader.read_buf(&mut read_buf), if reading => {
                    match read {
                        Ok(0) => break,
                        Err(error) => {
                            tracing::debug!(%conn, %error, "read failed");
                            break;
                        }
                        Ok(read) => metrics.received(read),
                    }
                    'read: loop {
                        match decode(&mut read_buf, version, packet_bytes_max) {
                            Ok(Some(packet)) => {
                                if let Packet::Connect(connect) = &packet {
                                    version = connect.protocol;
                                    if let (Some(file), false) = (&password_file, credentials_checked) {
                                        credentials_checked = true;
                                        if let Some(valid) = check_password(file, connect, &password_checks).await {
                                            if events.send(Event::CredentialsChecked { conn, valid }).await.is_err() {
                                                return;
                                            }
                                        }
                                    }
                                }
                                // One read can hold thousands of packets, and the events channel
                                // may be full: what the core sends meanwhile is written first, so
                                // the outbound queue drains while the read is being forwarded.
                                let ticket = loop {
                                    tokio::select! {
                                        biased;
                                        next = outbound.recv() => {
                                            let Some(first) = next else {
                                                // The core closed the connection: the
                                                // next turn of the task's loop finishes it.
                                                break 'read;
                                            };
                                            let mut out = Writer { writer: &mut writer, buf: &mut write_buf, to: &written };
                                            if !out.write(first, &mut outbound, version).await {
                                                return;
                                            }
                                        }
                                        ticket = tickets.clone().acquire_owned() => {
                                            break ticket.expect("the semaphore is never closed");
                                        }
                                    }
                                };
                                let permit = loop {
                                    tokio::select! {
                                        biased;
                                        next = outbound.recv() => {
                                            let Some(first) = next else {
                                                break 'read;
                                            };
                                            let mut out = Writer { writer: &mut writer, buf: &mut write_buf, to: &written };
                                            if !out.write(first, &mut outbound, version).await {
                                                return;
                                            }
                                        }
                                        permit = events.reserve() => match permit {
                                            Ok(permit) => break permit,
                                            Err(_) => return,
                                        },
                                    }
                                };
                                permit.send(Event::Packet { conn, packet, ticket });
                            }
                            Ok(None) => break,
                            Err(error) => {
                                // Stop reading; the core answers and closes the connection.
                                reading = false;
                                read_buf = BytesMut::new();
                                if events.send(Event::DecodeFailed { conn, error }).await.is_err() {
                                    return;
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
        // Whatever ended the task, the core hears of it; it ignores connections it closed itself.
        let _ = events.send(Event::Closed { conn }).await;
    }
}

/// Whom a connection's writes concern besides the socket: the broker task waiting to hear
/// of one, and the listener's counters.
#[derive(Clone, Copy)]
struct Written<'a> {
    wake: &'a AtomicBool,
    events: &'a mpsc::Sender<Event>,
    conn: ConnId,
    metrics: &'a ListenerMetrics,
}

/// The write half of a connection task, with what a write needs around it.
struct Writer<'a, W> {
    writer: &'a mut W,
    buf: &'a mut BytesMut,
    to: &'a Written<'a>,
}

impl<W: AsyncWrite + Unpin> Writer<'_, W> {
    /// Encodes `first` and what else is queued (up to a batch), writes it, and tells the broker
    /// task if it was waiting to hear of a write. Returns false when the task must end (write
    /// failed or stalled, the broker task is gone, a packet could not be encoded).
    async fn write(
        &mut self,
        first: Packet,
        outbound: &mut mpsc::Receiver<Packet>,
        version: ProtocolVersion,
    ) -> bool {
        let Written {
            wake,
            events,
            conn,
            metrics,
        } = *self.to;
        if !encode_batch(first, outbound, version, self.buf, conn) {
            return false;
        }
        // Flushed too: TLS and WebSocket streams hold written bytes until then.
        let write = async {
            self.writer.write_all(self.buf).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
            Ok(Ok(())) => {
                metrics.sent(self.buf.len());
                self.buf.clear();
                !(wake.swap(false, Ordering::SeqCst)
                    && events.send(Event::Writable { conn }).await.is_err())
            }
            Ok(Err(error)) => {
                tracing::debug!(%conn, %error, "write failed");
                false
            }
            Err(_) => {
                metrics.write_stalled();
                tracing::info!(%conn, "closing: peer stopped reading (write stalled)");
                false
            }
        }
    }
}

/// Checks `connect`'s user name and password against `file` on the blocking pool (argon2id
/// takes tens of milliseconds). None when there is nothing to check: no user name, or
/// enhanced authentication (the method decides).
async fn check_password(
    file: &Reloadable<PasswordFile>,
    connect: &Connect,
    permits: &Arc<Semaphore>,
) -> Option<bool> {
    let user = connect.username.as_ref()?;
    if connect.properties.authentication_method().is_some() {
        return None;
    }
    let file = file.current();
    let user = user.as_str().to_owned();
    let password = connect.password.clone().unwrap_or_default();
    let _permit = permits.clone().acquire_owned().await.ok()?;
    let check = tokio::task::spawn_blocking(move || file.verify(&user, &password));
    // A check that panicked counts as a failed login.
    Some(check.await.unwrap_or(false))
}

/// Reads and discards what the client still sends after the broker shut its side, until the
/// client closes or [`LINGER_TIMEOUT`] / `LINGER_BYTES_MAX` run out. Closing a socket that
/// still has unread bytes makes the kernel answer with RST, and a client whose packets were
/// still arriving would then never read the DISCONNECT or CONNACK that says why it was closed.
async fn linger<R: AsyncRead + Unpin>(reader: &mut R, conn: ConnId) {
    let mut scratch = vec![0u8; 8 * 1024];
    let mut discarded = 0usize;
    let drained = tokio::time::timeout(LINGER_TIMEOUT, async {
        while discarded < LINGER_BYTES_MAX {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => discarded += n,
            }
        }
        false
    })
    .await;
    if drained != Ok(true) {
        tracing::debug!(%conn, discarded, "client did not close after the broker did");
    }
}

/// Encodes `first` and whatever else is already queued, up to a batch. Returns false if a
/// packet cannot be encoded (a bug in the core: it only builds encodable packets).
fn encode_batch(
    first: Packet,
    outbound: &mut mpsc::Receiver<Packet>,
    version: ProtocolVersion,
    write_buf: &mut BytesMut,
    conn: ConnId,
) -> bool {
    let mut next = Some(first);
    while let Some(packet) = next.take() {
        if let Err(error) = encode(&packet, version, write_buf) {
            tracing::error!(%conn, %error, packet = %packet.packet_type(), "cannot encode packet; closing");
            return false;
        }
        if write_buf.len() < WRITE_BATCH_BYTES {
            next = outbound.try_recv().ok();
        }
    }
    true
}
