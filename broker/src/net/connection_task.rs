//! One task per network connection: framing and codec work, off the core's task.
//!
//! The task decodes packets from the socket and hands them to the core task as events, and
//! encodes what the core sends back. It never makes a protocol decision: even a malformed
//! packet is reported to the core, which decides what to send before closing.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, Semaphore};

use super::outbound::OutboundReceiver;
use super::tickets::Tickets;
use super::transport::Reloadable;
use super::Event;
use crate::auth::password_file::PasswordFile;
use crate::codec::{decode, encode, Connect, DecodeError, Packet, ProtocolVersion};
use crate::metrics::ListenerMetrics;
use crate::types::ConnId;

/// Packets are written in batches of at most this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What a batch's buffer starts with (it is released when the queue is empty, so each burst
/// allocates it again): a dozen small packets fit, so a burst of acknowledgements costs one
/// allocation, not a doubling series from 8 bytes. A peer that stops reading holds it (or
/// its batch, if larger) until the write stall timeout.
const WRITE_BUFFER_INITIAL_BYTES: usize = 1024;

/// A write that makes no progress for this long means the peer stopped reading.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// After the broker ends a connection, how long and how much it keeps reading (and throwing
/// away) while waiting for the client to close: see [`linger`].
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_BYTES_MAX: usize = 1024 * 1024;

/// What every connection of one listener shares, in one `Arc`: inline, each field would cost
/// every idle connection's task 8 bytes (issue 15).
pub(super) struct ListenerContext {
    /// To the broker task: the same channel for every connection.
    pub events: mpsc::Sender<Event>,
    pub packet_bytes_max: usize,
    /// The listener's password file: a CONNECT's credentials are checked here, off the
    /// core's task, and the verdict goes to the core just before the CONNECT.
    pub password_file: Option<Arc<Reloadable<PasswordFile>>>,
    /// Bounds the checks running at once, across all connections.
    pub password_checks: Arc<Semaphore>,
    /// The listener's counters (bytes, stalled writes, handshakes).
    pub metrics: Arc<ListenerMetrics>,
}

pub(super) struct ConnectionTask<S> {
    pub conn: ConnId,
    pub stream: S,
    pub outbound: OutboundReceiver,
    /// Packets forwarded to the core and not yet handled, at most an eighth of the outbound
    /// queue: each may produce a reply, and the core keeps a quarter of the queue for replies,
    /// so a client that pipelines requests (100,000 PINGREQs in one read) is slowed down to
    /// the core's pace instead of overflowing its queue with answers.
    pub tickets: Tickets,
    pub listener: Arc<ListenerContext>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ConnectionTask<S> {
    /// The task's life. What it holds while it waits for either side is all an idle
    /// connection costs (besides the core's state), so the steps that wait for anything else
    /// (forwarding a read, writing a batch, lingering) run as boxed futures of their own:
    /// inline, their state would be part of every idle connection's task.
    ///
    /// Boxed: moved out of at once, it would otherwise stay in the task's state twice. The box
    /// is emptied in a block of its own, so its allocation goes at once, not when the
    /// connection ends (80 bytes per idle connection, issue 15).
    ///
    /// Longer than most on purpose: its locals are the task's state, and each step moved into
    /// an awaited helper would add that helper's future to the state every idle connection
    /// holds (bounded by a test in `mod.rs`).
    pub async fn run(self: Box<Self>) {
        let (conn, stream, mut outbound, tickets, listener) = {
            let task = self;
            let ConnectionTask {
                conn,
                stream,
                outbound,
                tickets,
                listener,
            } = *task;
            (conn, stream, outbound, tickets, listener)
        };
        let mut link = Link {
            conn,
            tickets,
            listener,
            stream,
            // Empty while the connection is quiet (see `Link::write_out`).
            write_buf: BytesMut::new(),
            // Until CONNECT names the version, 3.1.1 framing is used (CONNECT itself carries
            // its level).
            version: ProtocolVersion::V3_1_1,
            credentials_checked: false,
        };
        let mut read_buf = ReadBuffer::default();
        let mut reading = true;
        loop {
            // Polled by hand rather than with `select!`, which keeps both branches' futures
            // (a read's among them) alive while a branch runs. What woke the task is dealt
            // with in this statement, before anything is awaited: no future holds a packet.
            let ready = match poll_fn(|cx| {
                if let Poll::Ready(packet) = outbound.poll_recv(cx) {
                    return Poll::Ready(Turn::Sent(packet));
                }
                if reading {
                    return read_buf
                        .poll_read_more(&mut link.stream, cx)
                        .map(Turn::Read);
                }
                Poll::Pending
            })
            .await
            {
                // The core closed the connection: everything it sent was received before the
                // queue closed, and has been written.
                Turn::Sent(None) => Ready::Closed,
                Turn::Sent(Some(packet)) => {
                    if !link.encode(packet, &mut outbound) {
                        break;
                    }
                    Ready::Write
                }
                Turn::Read(Ok(0)) => break,
                Turn::Read(Err(error)) => {
                    tracing::debug!(conn = %link.conn, %error, "read failed");
                    break;
                }
                Turn::Read(Ok(read)) => {
                    link.listener.metrics.received(read);
                    Ready::Read
                }
            };
            match ready {
                Ready::Closed => {
                    Box::pin(close(&mut link.stream, link.conn)).await;
                    break;
                }
                Ready::Write => {
                    if !link.write_out(&mut outbound).await {
                        break;
                    }
                }
                Ready::Read => {
                    let Some(stuck) = link.forward_now(&mut read_buf.buf) else {
                        continue;
                    };
                    match Box::pin(link.forward(stuck, &mut read_buf.buf, &mut outbound)).await {
                        Forwarded::All => {}
                        Forwarded::Malformed => {
                            // Stop reading; the core answers and closes the connection.
                            reading = false;
                            read_buf = ReadBuffer::default();
                        }
                        // Closed is still sent: the core must drop the connection now, not at
                        // its keep-alive timeout (or never, with keep alive 0).
                        Forwarded::WriteFailed => break,
                        Forwarded::BrokerGone => return,
                    }
                }
            }
        }
        // Whatever ended the task, the core hears of it; it ignores connections it closed itself.
        // Boxed: awaited once, at the end, it need not be part of the task's state.
        let conn = link.conn;
        Box::pin(tell(&link.listener.events, Event::Closed { conn })).await;
    }
}

/// What woke the connection task: the core sent a packet (`None`: it closed the connection),
/// or a read finished.
enum Turn {
    Sent(Option<Packet>),
    Read(std::io::Result<usize>),
}

/// What the task does next about a [`Turn`]: the core closed the connection, a batch is
/// encoded and waits to be written, or a read brought bytes to forward.
enum Ready {
    Closed,
    Write,
    Read,
}

/// How a batch's write ended (see [`Link::written`]).
enum Written {
    Done,
    /// The write failed or stalled: the task ends.
    Failed,
    /// Done, and the broker task asked to hear of it.
    TellBroker,
}

/// A packet that could not be forwarded at once, or the decoding error that ended the read.
enum Stuck {
    Packet(Packet),
    Malformed(DecodeError),
}

/// How forwarding what one read brought ended.
enum Forwarded {
    /// Every whole packet went to the core (or the core closed the connection meanwhile: the
    /// task's next turn finds the queue closed).
    All,
    /// A packet was malformed; the core was told.
    Malformed,
    /// A write (of what the core sent meanwhile) failed or stalled.
    WriteFailed,
    /// The broker task is gone.
    BrokerGone,
}

/// A connection task's state besides the read half and its buffer.
struct Link<W> {
    conn: ConnId,
    tickets: Tickets,
    listener: Arc<ListenerContext>,
    /// The connection's stream, unsplit: one task reads and writes it, in turn.
    stream: W,
    /// The batch being written; what is written is taken off its front.
    write_buf: BytesMut,
    version: ProtocolVersion,
    /// Only the first CONNECT is checked: a second one is a protocol error the core answers
    /// anyway, and must not cost another slow hash.
    credentials_checked: bool,
}

impl<W: AsyncWrite + Unpin> Link<W> {
    /// Hands the core every whole packet in `read_buf` that can go without waiting: a ticket
    /// and room in the events queue free now, and not a CONNECT (its credentials may need
    /// checking). Returns what must wait, if anything; [`Link::forward`] takes it from there.
    fn forward_now(&mut self, read_buf: &mut BytesMut) -> Option<Stuck> {
        loop {
            let packet = match decode(read_buf, self.version, self.listener.packet_bytes_max) {
                Ok(Some(packet)) => packet,
                Ok(None) => return None,
                Err(error) => return Some(Stuck::Malformed(error)),
            };
            if matches!(packet, Packet::Connect(_)) {
                return Some(Stuck::Packet(packet));
            }
            let Some(ticket) = self.tickets.try_take() else {
                return Some(Stuck::Packet(packet));
            };
            let Ok(permit) = self.listener.events.try_reserve() else {
                return Some(Stuck::Packet(packet));
            };
            let conn = self.conn;
            permit.send(Event::Packet {
                conn,
                packet,
                ticket,
            });
        }
    }

    /// Forwards `stuck` and the rest of `read_buf`, waiting for tickets and room in the events
    /// queue as needed (writing meanwhile, see [`Link::while_writing`]).
    async fn forward(
        &mut self,
        mut stuck: Stuck,
        read_buf: &mut BytesMut,
        outbound: &mut OutboundReceiver,
    ) -> Forwarded {
        let conn = self.conn;
        loop {
            let packet = match stuck {
                Stuck::Packet(packet) => packet,
                Stuck::Malformed(error) => {
                    if !tell(&self.listener.events, Event::DecodeFailed { conn, error }).await {
                        return Forwarded::BrokerGone;
                    }
                    return Forwarded::Malformed;
                }
            };
            if let Packet::Connect(connect) = &packet {
                self.version = connect.protocol;
                if !self.connect_checked(connect).await {
                    return Forwarded::BrokerGone;
                }
            }
            let ticket = match self.while_writing(self.tickets.take(), outbound).await {
                Ok(ticket) => ticket,
                Err(stop) => return stop,
            };
            let listener = self.listener.clone();
            let permit = match self
                .while_writing(listener.events.reserve(), outbound)
                .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Forwarded::BrokerGone,
                Err(stop) => return stop,
            };
            permit.send(Event::Packet {
                conn,
                packet,
                ticket,
            });
            match self.forward_now(read_buf) {
                None => return Forwarded::All,
                Some(next) => stuck = next,
            }
        }
    }

    /// Checks the first CONNECT's credentials against the listener's password file, if it
    /// has one, and tells the core the verdict. False if the broker task is gone.
    async fn connect_checked(&mut self, connect: &Connect) -> bool {
        let (Some(file), false) = (&self.listener.password_file, self.credentials_checked) else {
            return true;
        };
        self.credentials_checked = true;
        let Some(valid) = check_password(file, connect, &self.listener.password_checks).await
        else {
            return true;
        };
        let conn = self.conn;
        tell(
            &self.listener.events,
            Event::CredentialsChecked { conn, valid },
        )
        .await
    }

    /// Waits for `wanted`, writing what the core sends meanwhile. One read can hold thousands
    /// of packets, and the events channel may be full: what the core sends while the read is
    /// being forwarded is written first, so the outbound queue drains.
    async fn while_writing<T>(
        &mut self,
        wanted: impl std::future::Future<Output = T>,
        outbound: &mut OutboundReceiver,
    ) -> Result<T, Forwarded> {
        tokio::pin!(wanted);
        loop {
            tokio::select! {
                biased;
                next = outbound.recv() => {
                    // The core closed the connection: the task's next turn finishes it.
                    let Some(first) = next else { return Err(Forwarded::All) };
                    if !(self.encode(first, outbound) && self.write_out(outbound).await) {
                        return Err(Forwarded::WriteFailed);
                    }
                }
                got = &mut wanted => return Ok(got),
            }
        }
    }

    /// Encodes `first` and what else is queued, up to a batch, for [`Link::write_out`]. False
    /// if a packet cannot be encoded (a bug in the core: it only builds encodable packets).
    /// Kept apart from the write so that no future holds `first` (the task's state is what an
    /// idle connection costs).
    fn encode(&mut self, first: Packet, outbound: &mut OutboundReceiver) -> bool {
        if self.write_buf.capacity() == 0 {
            self.write_buf.reserve(WRITE_BUFFER_INITIAL_BYTES);
        }
        let mut next = Some(first);
        while let Some(packet) = next.take() {
            if let Err(error) = encode(&packet, self.version, &mut self.write_buf) {
                let conn = self.conn;
                tracing::error!(%conn, %error, packet = %packet.packet_type(), "cannot encode packet; closing");
                return false;
            }
            if self.write_buf.len() < WRITE_BATCH_BYTES {
                next = outbound.try_recv();
            }
        }
        true
    }

    /// Writes the encoded batch, and tells the broker task if it was waiting to hear of a
    /// write. False when the task must end (the write failed or stalled, the broker task is
    /// gone). What happens after the write is a plain function: this future is part of every
    /// connection's task, and the less it holds across its waits the smaller that is.
    async fn write_out(&mut self, outbound: &mut OutboundReceiver) -> bool {
        // Most writes finish at once; one that waits goes on in a boxed future, with the stall
        // timer (a clock read and a timer-wheel entry, paid only then).
        let written = match poll_fn(|cx| Poll::Ready(self.poll_write_out(cx))).await {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => Box::pin(self.finish_write()).await,
        };
        match self.written(written, outbound) {
            Written::Done => true,
            Written::Failed => false,
            // Boxed: only when the broker asked (its queue for this connection was full), so
            // its future is not part of every connection's task.
            Written::TellBroker => {
                let conn = self.conn;
                Box::pin(tell(&self.listener.events, Event::Writable { conn })).await
            }
        }
    }

    /// After a batch's write (its bytes were counted as they went): lets go of the buffer or
    /// rewinds it, and says whether the broker task waits to hear of the write.
    fn written(
        &mut self,
        written: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
        outbound: &OutboundReceiver,
    ) -> Written {
        let conn = self.conn;
        match written {
            Ok(Ok(())) => {
                if outbound.is_empty() {
                    // Nothing more to write for now: an idle connection holds no buffer.
                    self.write_buf = BytesMut::new();
                } else {
                    // Written bytes were taken off the front: the next batch starts at the
                    // beginning again (never allocates; without it, `reserve` could double
                    // the buffer while its front stood empty).
                    debug_assert!(self.write_buf.is_empty(), "a finished batch is all written");
                    let whole = self.write_buf.capacity() + 1;
                    let _reclaimed = self.write_buf.try_reclaim(whole);
                }
                if outbound.take_wake() {
                    Written::TellBroker
                } else {
                    Written::Done
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(%conn, %error, "write failed");
                Written::Failed
            }
            Err(_) => {
                self.listener.metrics.write_stalled();
                tracing::info!(%conn, "closing: peer stopped reading (write stalled)");
                Written::Failed
            }
        }
    }

    /// Writes what is left of the batch, then flushes (TLS and WebSocket streams hold written
    /// bytes until then).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.write_buf.is_empty() {
            match ready!(Pin::new(&mut self.stream).poll_write(cx, &self.write_buf)) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(written) => {
                    self.listener.metrics.sent(written);
                    self.write_buf.advance(written);
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// A write that had to wait: the rest, within [`WRITE_STALL_TIMEOUT`].
    async fn finish_write(&mut self) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
        let rest = poll_fn(|cx| self.poll_write_out(cx));
        tokio::time::timeout(WRITE_STALL_TIMEOUT, rest).await
    }
}

/// Sends `event` to the broker task: at once if its queue has room, otherwise in a boxed
/// future (waiting for room is rare). The future returned does not hold the event: inline in
/// the connection task, it would otherwise be part of every idle connection's state. Resolves
/// to false if the broker task is gone.
fn tell(events: &mpsc::Sender<Event>, event: Event) -> impl Future<Output = bool> + Send + '_ {
    let waiting = match events.try_send(event) {
        Ok(()) => Ok(true),
        Err(mpsc::error::TrySendError::Closed(_)) => Ok(false),
        Err(mpsc::error::TrySendError::Full(event)) => Err(Box::pin(events.send(event))),
    };
    async move {
        match waiting {
            Ok(sent) => sent,
            Err(send) => send.await.is_ok(),
        }
    }
}

/// What a read asks the socket for while the connection is quiet (nothing partial held).
const QUIET_READ_BYTES: usize = 64;

/// The read buffer's room while the connection is busy (the last read filled what it had, or
/// part of a packet is held).
const BUSY_READ_BYTES: usize = 4096;

/// The read side of a connection: its buffer, and whether the socket may have more.
#[derive(Default)]
struct ReadBuffer {
    buf: BytesMut,
    /// The last read filled all the room it was given: more is probably waiting.
    busy: bool,
}

impl ReadBuffer {
    /// Reads what the socket has. A quiet connection (nothing held, and the last read was
    /// short) waits with no buffer at all: it reads into a small array on the stack and
    /// allocates only what arrived, or the busy size when that read was full. Thousands of
    /// idle clients would otherwise each hold a buffer (up to a whole large packet's) for
    /// nothing. A busy one reads into its buffer, so a flood of small packets costs one
    /// read per buffer, not one per 64 bytes.
    fn poll_read_more<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.is_empty() && !self.busy {
            // Given back before waiting (the last read's allocation, perhaps a large packet's).
            self.buf = BytesMut::new();
            // On the stack, not in the task: a read that is not ready fills nothing.
            let mut quiet = [0u8; QUIET_READ_BYTES];
            let mut into = ReadBuf::new(&mut quiet);
            ready!(Pin::new(reader).poll_read(cx, &mut into))?;
            let read = into.filled().len();
            self.busy = read == QUIET_READ_BYTES;
            let capacity = if self.busy { BUSY_READ_BYTES } else { read };
            self.buf = BytesMut::with_capacity(capacity);
            self.buf.extend_from_slice(into.filled());
            return Poll::Ready(Ok(read));
        }
        if self.buf.capacity() - self.buf.len() < BUSY_READ_BYTES / 4 {
            self.buf.reserve(BUSY_READ_BYTES);
        }
        let room = self.buf.capacity() - self.buf.len();
        let Poll::Ready(read) = tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut self.buf)
        else {
            if self.buf.is_empty() {
                // Busy, but the socket had nothing more: no buffer held while it waits (a
                // client that goes quiet after a full read would otherwise keep one for its
                // whole idle life). Still busy: the next read allocates the busy size at once.
                self.buf = BytesMut::new();
            }
            return Poll::Pending;
        };
        let read = read?;
        self.busy = read == room;
        Poll::Ready(Ok(read))
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

/// Shuts the write side (within [`WRITE_STALL_TIMEOUT`]: TLS writes its close message, and a
/// peer that stopped reading must not hold the task), then lingers.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, conn: ConnId) {
    if tokio::time::timeout(WRITE_STALL_TIMEOUT, stream.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(%conn, "shutting the write side stalled");
        return;
    }
    linger(stream, conn).await;
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

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::io::ReadBuf;

    use super::*;
    use crate::codec::Ack;
    use crate::types::PacketId;

    impl ReadBuffer {
        async fn read_more<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
            poll_fn(|cx| self.poll_read_more(reader, cx)).await
        }
    }

    /// Serves `data` in reads of whatever room is offered; counts the reads; then waits.
    struct Source {
        data: Vec<u8>,
        reads: usize,
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.data.is_empty() {
                return Poll::Pending;
            }
            let n = buf.remaining().min(self.data.len());
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            self.reads += 1;
            Poll::Ready(Ok(()))
        }
    }

    /// A backlog of 4-byte acknowledgements tiles the quiet read's 64 bytes exactly; it must
    /// still be read a buffer at a time, not 64 bytes at a time.
    #[tokio::test]
    async fn a_flood_of_small_packets_is_read_a_buffer_at_a_time() {
        let mut source = Source {
            data: [0x40, 2, 0, 1].repeat(4096),
            reads: 0,
        };
        let mut read = ReadBuffer::default();
        let mut total = 0;
        while total < 4 * 4096 {
            total += read.read_more(&mut source).await.unwrap();
            read.buf.clear(); // every byte decoded
        }
        assert!(source.reads <= 6, "{} reads for 16 KiB", source.reads);
    }

    /// After a short read is consumed, the next wait holds no buffer, however large the last
    /// read was.
    #[tokio::test]
    async fn a_quiet_connection_waits_without_a_buffer() {
        let mut source = Source {
            data: vec![0x40; 3000],
            reads: 0,
        };
        let mut read = ReadBuffer::default();
        let mut total = 0;
        while total < 3000 {
            total += read.read_more(&mut source).await.unwrap();
        }
        assert!(!read.busy, "the last read was short");
        read.buf.clear();
        let waited =
            tokio::time::timeout(Duration::from_millis(5), read.read_more(&mut source)).await;
        assert!(waited.is_err(), "nothing more to read");
        assert_eq!(read.buf.capacity(), 0, "a buffer held while waiting");
    }

    /// A client whose last read filled its room exactly (one 64-byte packet) and then goes
    /// quiet holds no buffer either.
    #[tokio::test]
    async fn a_connection_quiet_after_a_full_read_waits_without_a_buffer() {
        let mut source = Source {
            data: vec![0x40; QUIET_READ_BYTES],
            reads: 0,
        };
        let mut read = ReadBuffer::default();
        assert_eq!(read.read_more(&mut source).await.unwrap(), QUIET_READ_BYTES);
        assert!(read.busy, "a full read");
        read.buf.clear();
        let waited =
            tokio::time::timeout(Duration::from_millis(5), read.read_more(&mut source)).await;
        assert!(waited.is_err(), "nothing more to read");
        assert_eq!(read.buf.capacity(), 0, "a buffer held while waiting");
    }

    /// Takes at most 3 bytes per write and waits (waking itself) every other call.
    struct Trickle {
        got: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A link that writes into a [`Trickle`], and the events channel's receiving end (kept
    /// open: a closed channel would end the link's work).
    fn trickle_link() -> (Link<Trickle>, mpsc::Receiver<Event>) {
        let (events, events_rx) = mpsc::channel(8);
        let link = Link {
            conn: ConnId(1),
            tickets: Tickets::new(1),
            listener: Arc::new(ListenerContext {
                events,
                packet_bytes_max: 1024,
                password_file: None,
                password_checks: Arc::new(Semaphore::new(1)),
                metrics: Arc::new(ListenerMetrics::new("test".into())),
            }),
            stream: Trickle {
                got: Vec::new(),
                calls: 0,
            },
            write_buf: BytesMut::new(),
            version: ProtocolVersion::V3_1_1,
            credentials_checked: false,
        };
        (link, events_rx)
    }

    /// A batch written in pieces, with waits between them, arrives whole and in order.
    #[tokio::test]
    async fn a_partial_write_continues_where_it_stopped() {
        let (mut link, _events) = trickle_link();
        let (sender, mut outbound) = super::super::outbound::queue(8);
        let ack = |id| Packet::PubAck(Ack::new(PacketId::new(id).unwrap()));
        for id in 2..=5 {
            sender.try_send(ack(id)).unwrap();
        }
        assert!(link.encode(ack(1), &mut outbound) && link.write_out(&mut outbound).await);
        let mut want = BytesMut::new();
        for id in 1..=5 {
            encode(&ack(id), ProtocolVersion::V3_1_1, &mut want).unwrap();
        }
        assert_eq!(link.stream.got, want.to_vec());
        assert!(link.stream.calls > 10, "the writer took it in pieces");
        assert_eq!(
            link.write_buf.capacity(),
            0,
            "the buffer kept after the queue emptied"
        );
        assert_eq!(link.listener.metrics.sample().bytes_sent, want.len() as u64);
    }

    /// A batch written while more is queued keeps its buffer, and the next batch starts at its
    /// beginning again: the written bytes were taken off the front.
    #[tokio::test]
    async fn the_next_batch_reuses_the_buffer_from_its_start() {
        let (mut link, _events) = trickle_link();
        let (sender, mut outbound) = super::super::outbound::queue(8);
        let ack = |id| Packet::PubAck(Ack::new(PacketId::new(id).unwrap()));
        assert!(link.encode(ack(1), &mut outbound));
        sender.try_send(ack(2)).unwrap(); // queued after the batch was encoded
        assert!(link.write_out(&mut outbound).await);
        let room = link.write_buf.capacity();
        assert!(
            room >= WRITE_BUFFER_INITIAL_BYTES,
            "room {room} after the first batch"
        );
        let next = outbound.try_recv().expect("queued");
        assert!(link.encode(next, &mut outbound) && link.write_out(&mut outbound).await);
        let mut want = BytesMut::new();
        for id in 1..=2 {
            encode(&ack(id), ProtocolVersion::V3_1_1, &mut want).unwrap();
        }
        assert_eq!(link.stream.got, want.to_vec());
        assert_eq!(link.listener.metrics.sample().bytes_sent, want.len() as u64);
    }
}
