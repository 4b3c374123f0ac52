//! The tokio driver: listeners, one task per connection, and the task that owns the core
//! (docs/design.md section 2).
//!
//! It is generic over [`Listener`], so the production binary (TCP) and the turmoil simulation
//! run the same code. No `tokio::net` type appears outside `listener.rs`.

mod broker_task;
mod connection_task;
mod listener;
mod metrics_http;
mod outbound;
mod storage_task;
mod tickets;
pub mod tls;
pub mod transport;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

pub use connection_task::WRITE_STALL_TIMEOUT;
pub use listener::Listener;
pub use transport::{Reloadable, Transport};

use crate::auth::acl::Acl;
use crate::auth::password_file::PasswordFile;
use crate::auth::{Entropy, OsEntropy};
use crate::codec::{DecodeError, Packet};
use crate::core::{self, Broker, Instant, Origin, Stats, WallMs};
use crate::limits::Limits;
use crate::log_limit::HostileWarnings;
use crate::metrics::{DriverMetrics, Snapshot};
use crate::store::{Store, StoreError};
use crate::types::ConnId;
use broker_task::{BrokerTask, StoreLink};
use connection_task::{ConnectionTask, ListenerContext};
use outbound::OutboundSender;
use storage_task::StorageTask;
use tickets::Tickets;

/// Events from connection tasks to the broker task. The channel is bounded: when the core
/// falls behind, connection tasks wait, and so do the clients behind them.
const EVENT_QUEUE_EVENTS_MAX: usize = 4096;

/// Stack of each runtime worker thread (tokio's default, stated so the simulation can run the
/// broker under the same limit: a recursion that fits 8 MiB but not this crashes production).
pub const WORKER_STACK_BYTES: usize = 2 * 1024 * 1024;

/// How long shutdown waits for connections to flush their last packets.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) enum Event {
    /// A connection finished its TLS and WebSocket handshakes.
    Opened {
        conn: ConnId,
        outbound: OutboundSender,
        origin: Origin,
    },
    /// The user name and password of the CONNECT that follows were checked against the
    /// listener's password file.
    CredentialsChecked {
        conn: ConnId,
        valid: bool,
    },
    /// The operator reloaded a listener's ACL.
    AclChanged {
        listener: u16,
        acl: Option<Arc<Acl>>,
    },
    /// The connection task wrote a batch after the broker task asked to hear of it.
    Writable {
        conn: ConnId,
    },
    Packet {
        conn: ConnId,
        packet: Packet,
        /// One of the connection's tickets, returned (dropped) once the core has handled the
        /// packet: see `ConnectionTask::tickets`.
        ticket: tickets::Ticket,
    },
    DecodeFailed {
        conn: ConnId,
        error: DecodeError,
    },
    Closed {
        conn: ConnId,
    },
}

/// Snapshot requests waiting for the broker task at most (scrapes share one, see
/// `metrics_http.rs`, so more than a few means they are piling up).
const SAMPLE_REQUESTS_MAX: usize = 16;

/// State shared by the accept loops and the connection tasks.
pub(crate) struct Shared {
    open_connections: AtomicUsize,
    next_conn: AtomicU64,
    /// Password checks running at once (each is tens of milliseconds of CPU with argon2id):
    /// at most one per core, so a flood of logins cannot take every core from routing.
    password_checks: Arc<Semaphore>,
    /// Failed handshakes, warned about once per address per window.
    hostile: Arc<HostileLog>,
}

/// The driver's rate-limited warnings about hostile input (the core keeps its own for what
/// it sees: malformed packets, protocol violations).
struct HostileLog {
    started: tokio::time::Instant,
    warnings: std::sync::Mutex<HostileWarnings>,
}

impl HostileLog {
    fn offence(&self, peer: SocketAddr, what: &dyn std::fmt::Display) {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // A poisoned lock only means another task panicked while holding it; the map is
        // still a valid map.
        let mut warnings = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = warnings.offence(peer.ip(), now_ms) {
            crate::log_limit::warn(&peer, what, line);
        }
    }
}

impl Default for Shared {
    fn default() -> Shared {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Shared {
            open_connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(0),
            password_checks: Arc::new(Semaphore::new(cores)),
            hostile: Arc::new(HostileLog {
                started: tokio::time::Instant::now(),
                warnings: std::sync::Mutex::default(),
            }),
        }
    }
}

/// One listener and how its connections are carried and logged in.
pub struct Endpoint<L> {
    pub listener: L,
    pub transport: Transport,
    /// Checked by the driver (off the core's task) for every CONNECT with a user name.
    pub password_file: Option<Arc<Reloadable<PasswordFile>>>,
    /// The listener's ACL at start (`Server::set_acl` replaces it).
    pub acl: Option<Arc<Acl>>,
}

impl<L> Endpoint<L> {
    /// Plain MQTT, no password file, no ACL.
    pub fn plain(listener: L) -> Endpoint<L> {
        Endpoint {
            listener,
            transport: Transport::default(),
            password_file: None,
            acl: None,
        }
    }
}

/// Decrements the open-connection count when a connection task ends, however it ends.
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the server needs to keep its state across restarts (see `core/durable.rs`).
pub struct Persistence {
    pub store: Box<dyn Store>,
    /// The wall clock now, in milliseconds since the Unix epoch: the core's `Instant` zero,
    /// so the deadlines it stores mean the same after a restart.
    pub wall_clock_ms: WallMs,
    /// Commit on tokio's blocking pool: true for a real disk, false for the simulation's.
    pub blocking_commits: bool,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A running broker: its addresses, and the means to stop it.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    broker_task: JoinHandle<Stats>,
    accept_tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Events to the broker task (for reloads).
    events: mpsc::Sender<Event>,
    /// A fatal store error (the broker has stopped serving).
    store_failed: Option<oneshot::Receiver<String>>,
    /// The storage task: it ends (closing the store) once the broker task has.
    storage_task: Option<JoinHandle<()>>,
    /// The HTTP responder of `/metrics`, when one was asked for.
    metrics_task: Option<JoinHandle<()>>,
    probe: Probe,
    metrics: Arc<DriverMetrics>,
}

/// Asks a running broker for its counters: the `/metrics` responder's, and tests' and the
/// simulation's way to read them. Requests have a queue of their own, which the broker task
/// serves even while it takes no events (the store behind): that is when they matter most.
#[derive(Clone)]
pub struct Probe {
    requests: mpsc::Sender<oneshot::Sender<Snapshot>>,
}

impl Probe {
    /// Every counter now; None once the broker has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(reply).await.ok()?;
        answer.await.ok()
    }

    /// Asks without waiting (from outside the broker's runtime, as the simulation's director
    /// does); None when the request queue is full or the broker has stopped.
    pub fn request(&self) -> Option<oneshot::Receiver<Snapshot>> {
        let (reply, answer) = oneshot::channel();
        self.requests.try_send(reply).ok()?;
        Some(answer)
    }
}

impl Server {
    /// Starts serving on `listeners` with `config`. Must be called inside a tokio runtime
    /// (or a turmoil host).
    pub fn start<L: Listener>(listeners: Vec<L>, config: core::Config) -> io::Result<Server> {
        Server::start_with_entropy(listeners, config, Box::new(OsEntropy))
    }

    /// [`Server::start`] with the given source of nonces and salts instead of the OS: the
    /// simulation passes one seeded from the scenario, so runs replay exactly.
    pub fn start_with_entropy<L: Listener>(
        listeners: Vec<L>,
        config: core::Config,
        entropy: Box<dyn Entropy>,
    ) -> io::Result<Server> {
        let endpoints = listeners.into_iter().map(Endpoint::plain).collect();
        match Server::start_with_store(endpoints, config, entropy, None) {
            Ok(server) => Ok(server),
            Err(StartError::Io(error)) => Err(error),
            Err(StartError::Store(_)) => unreachable!("no store, no store error"),
        }
    }

    /// [`Server::start_with_entropy`] that keeps its state in `persistence`'s store: loads it
    /// first (a damaged or unknown store is an error, never an empty start), then commits
    /// every change before acknowledging it.
    pub fn start_with_store<L: Listener>(
        endpoints: Vec<Endpoint<L>>,
        config: core::Config,
        entropy: Box<dyn Entropy>,
        persistence: Option<Persistence>,
    ) -> Result<Server, StartError> {
        let local_addrs = endpoints
            .iter()
            .map(|e| e.listener.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        if endpoints.len() > usize::from(u16::MAX) {
            return Err(io::Error::other("more than 65535 listeners").into());
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_EVENTS_MAX);
        let (samples_tx, samples_rx) = mpsc::channel(SAMPLE_REQUESTS_MAX);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        let limits = config.limits.clone();
        let sys_interval = config.sys_interval;
        let metrics = Arc::new(listener_metrics(&endpoints, &local_addrs));
        let mut broker = Broker::with_entropy(config, entropy);
        for (index, endpoint) in endpoints.iter().enumerate() {
            let index = u16::try_from(index).expect("checked above");
            broker.set_acl(index, endpoint.acl.clone());
        }
        let start = tokio::time::Instant::now();
        let (store, store_failed, storage_task) = match persistence {
            Some(persistence) => {
                let (link, failed, task) = start_store(&mut broker, persistence, metrics.clone())?;
                (Some(link), Some(failed), Some(task))
            }
            None => (None, None, None),
        };
        let broker_task = tokio::spawn(
            BrokerTask {
                broker,
                events: events_rx,
                samples: samples_rx,
                shutdown: shutdown_rx.clone(),
                start,
                store,
                metrics: metrics.clone(),
                sys_interval,
            }
            .run(),
        );
        let accept_tasks = endpoints
            .into_iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let index = u16::try_from(index).expect("checked above");
                let channels = (events_tx.clone(), shutdown_rx.clone());
                let accept = AcceptLoop::new(index, endpoint, &limits, &metrics, &shared, channels);
                tokio::spawn(accept.run())
            })
            .collect();
        for addr in &local_addrs {
            tracing::info!(%addr, "listening for MQTT");
        }
        let probe = Probe {
            requests: samples_tx,
        };
        Ok(Server {
            metrics_task: None,
            probe,
            metrics,
            local_addrs,
            events: events_tx,
            shutdown: shutdown_tx,
            broker_task,
            accept_tasks,
            shared,
            store_failed,
            storage_task,
        })
    }

    /// Resolves if the store fails (the broker has stopped serving; the owner should shut
    /// the server down and exit with the error). Never resolves without a store.
    pub async fn store_failed(&mut self) -> String {
        match self.store_failed.as_mut() {
            Some(failed) => match failed.await {
                Ok(error) => error,
                Err(_) => "the storage task ended".to_owned(),
            },
            None => std::future::pending().await,
        }
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A handle that reads this broker's counters.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// Counts the log lines the log writer had to drop (`tern_log_lines_dropped_total`): the
    /// binary's non-blocking writer knows, the server does not.
    pub fn count_log_drops(&self, dropped: impl Fn() -> u64 + Send + Sync + 'static) {
        self.metrics.count_log_drops(Box::new(dropped));
    }

    /// Serves Prometheus text on `listener` (`GET /metrics`) until shutdown.
    pub fn serve_metrics<L: Listener>(&mut self, listener: L) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let task = metrics_http::MetricsResponder {
            listener,
            probe: self.probe(),
            shutdown: self.shutdown.subscribe(),
        };
        self.metrics_task = Some(tokio::spawn(task.run()));
        tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
        Ok(addr)
    }

    /// Replaces the ACL of listener `listener` (its index in the start's list): what its
    /// clients may do from the next check on. `None`: everything is allowed.
    pub async fn set_acl(&self, listener: u16, acl: Option<Arc<Acl>>) {
        let _ = self.events.send(Event::AclChanged { listener, acl }).await;
    }

    /// Stops accepting, tells every client (v5: DISCONNECT 0x8B), waits for connections to
    /// flush, and returns the final counters.
    pub async fn shutdown(self) -> Stats {
        self.shutdown_checked().await.0
    }

    /// [`Server::shutdown`], also saying whether the store failed (before or during the
    /// shutdown): then what was not acknowledged may not be on disk, and the owner should exit
    /// with the error.
    pub async fn shutdown_checked(mut self) -> (Stats, Option<String>) {
        let _ = self.shutdown.send(true);
        for task in self.accept_tasks {
            let _ = task.await;
        }
        if let Some(task) = self.metrics_task {
            let _ = task.await;
        }
        let stats = self.broker_task.await.unwrap_or_default();
        // The broker task has handed over its last batch; the store closes when the storage
        // task ends, so the data directory can be opened again once this returns.
        if let Some(task) = self.storage_task {
            // Bounded: a store that hangs (a stuck disk) must not hang the shutdown.
            if tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, task)
                .await
                .is_err()
            {
                tracing::warn!("shutdown: the store did not finish in time");
            }
        }
        let flushed = tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, async {
            while self.shared.open_connections.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!("shutdown: some connections did not close in time");
        }
        let failed = self
            .store_failed
            .as_mut()
            .and_then(|failed| failed.try_recv().ok());
        (stats, failed)
    }
}

/// The driver's counters, a set per listener named by its URL (`mqtts://127.0.0.1:8883`).
fn listener_metrics<L: Listener>(endpoints: &[Endpoint<L>], addrs: &[SocketAddr]) -> DriverMetrics {
    let names = endpoints
        .iter()
        .zip(addrs)
        .map(|(endpoint, addr)| format!("{}://{addr}", endpoint.transport.scheme()))
        .collect();
    DriverMetrics::new(names)
}

struct AcceptLoop<L: Listener> {
    listener: L,
    /// The events channel, its metrics, password file and packet size, for every connection
    /// it accepts.
    context: Arc<ListenerContext>,
    /// The listener's index: what the core's per-listener settings are keyed by.
    index: u16,
    transport: Transport,
    /// Also bounds the TLS and WebSocket handshakes.
    connect_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    connections_max: usize,
    outbound_queue_packets_max: usize,
}

impl<L: Listener> AcceptLoop<L> {
    fn new(
        index: u16,
        endpoint: Endpoint<L>,
        limits: &Limits,
        metrics: &DriverMetrics,
        shared: &Arc<Shared>,
        (events, shutdown): (mpsc::Sender<Event>, watch::Receiver<bool>),
    ) -> AcceptLoop<L> {
        AcceptLoop {
            context: Arc::new(ListenerContext {
                events,
                packet_bytes_max: limits.packet_bytes_max,
                password_file: endpoint.password_file,
                password_checks: shared.password_checks.clone(),
                metrics: metrics.listeners[usize::from(index)].clone(),
            }),
            listener: endpoint.listener,
            index,
            transport: endpoint.transport,
            connect_timeout: limits.connect_timeout,
            shutdown,
            shared: shared.clone(),
            connections_max: limits.connections_max,
            outbound_queue_packets_max: limits.outbound_queue_packets_max,
        }
    }

    async fn run(mut self) {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.shutdown.changed() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let open = self.shared.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
            let guard = OpenConnection(self.shared.clone());
            if open > self.connections_max {
                self.context.metrics.refused_at_limit();
                let why = format_args!("connection limit ({}) reached", self.connections_max);
                self.shared.hostile.offence(peer, &why);
                drop((stream, guard));
                continue;
            }
            let socket = self.context.metrics.accepted();
            let conn = ConnId(self.shared.next_conn.fetch_add(1, Ordering::SeqCst));
            let opening = Opening {
                conn,
                peer,
                index: self.index,
                transport: self.transport.clone(),
                context: self.context.clone(),
                connect_timeout: self.connect_timeout,
                outbound_queue_packets_max: self.outbound_queue_packets_max,
                hostile: self.shared.hostile.clone(),
            };
            tokio::spawn(connection_life(opening, stream, (socket, guard)));
        }
    }
}

/// Everything one accepted connection runs: its handshakes, then its task; `guards` (what
/// counts it as open) go when it ends. No tracing span around it: a span costs ~700 bytes for
/// the connection's whole life (the registry's slot, its extensions map, the formatted
/// fields), about a quarter of what an idle connection costs. Every line the task logs names
/// its `conn` instead; the core's lines tie that id to the peer and listener ("client
/// connected", or "connection ended before CONNACK" at debug level for one that never got
/// that far).
fn connection_life<S, G>(
    opening: Opening,
    stream: S,
    guards: G,
) -> impl Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    // Boxed, and gone once open: see `Opening::open`.
    let open = Box::pin(opening.open(stream));
    async move {
        if let Some(task) = open.await {
            task.run().await;
        }
        drop(guards);
    }
}

/// A connection between accept and its first MQTT byte: the TLS and WebSocket handshakes,
/// off the accept loop (a slow client must not hold up the next accept).
struct Opening {
    conn: ConnId,
    peer: SocketAddr,
    index: u16,
    transport: Transport,
    context: Arc<ListenerContext>,
    connect_timeout: Duration,
    outbound_queue_packets_max: usize,
    hostile: Arc<HostileLog>,
}

impl Opening {
    /// Runs the handshakes and announces the connection to the broker task; returns the task
    /// that serves it, or None if the connection ended (or the broker is gone). What this step
    /// holds (the handshakes' state is ~11 KiB) is freed before the connection's long life,
    /// in which its task's size is what an idle connection costs.
    async fn open<S>(self, stream: S) -> Option<Box<ConnectionTask<transport::MqttStream<S>>>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self.conn;
        // A WebSocket message holds at least one packet; a little more room for framing.
        let message_bytes_max = self.context.packet_bytes_max.saturating_add(1024);
        // Boxed: the TLS and WebSocket handshakes' state is ~11 KiB, and inline it would stay
        // part of this task for the connection's whole life (an idle connection's largest cost).
        let upgraded = tokio::time::timeout(
            self.connect_timeout,
            Box::pin(transport::upgrade(
                stream,
                &self.transport,
                message_bytes_max,
            )),
        )
        .await;
        let (stream, identity) = match upgraded {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(error)) => {
                self.context.metrics.handshake_failed();
                tracing::debug!(%conn, peer = %self.peer, %error, "handshake failed");
                self.hostile
                    .offence(self.peer, &format_args!("handshake failed: {error}"));
                return None;
            }
            Err(_) => {
                self.context.metrics.handshake_failed();
                tracing::debug!(%conn, peer = %self.peer, "handshake not finished within the connect timeout");
                let why = "TLS or WebSocket handshake not finished within the connect timeout";
                self.hostile.offence(self.peer, &why);
                return None;
            }
        };
        let (outbound, outbound_rx) = outbound::queue(self.outbound_queue_packets_max);
        let origin = Origin {
            listener: self.index,
            identity,
            peer: Some(self.peer),
        };
        let opened = Event::Opened {
            conn,
            outbound,
            origin,
        };
        self.context.events.send(opened).await.ok()?;
        Some(Box::new(ConnectionTask {
            conn,
            stream,
            outbound: outbound_rx,
            tickets: Tickets::new((self.outbound_queue_packets_max / 8).max(1)),
            listener: self.context,
        }))
    }
}

/// Loads the store into `broker` and starts the storage task.
fn start_store(
    broker: &mut Broker,
    mut persistence: Persistence,
    metrics: Arc<DriverMetrics>,
) -> Result<(StoreLink, oneshot::Receiver<String>, JoinHandle<()>), StoreError> {
    let snapshot = persistence.store.load()?;
    broker.restore(snapshot, persistence.wall_clock_ms, Instant::ZERO);
    let (batches_tx, batches_rx) = mpsc::unbounded_channel();
    let (durable_tx, durable_rx) = watch::channel(0);
    let (failed_tx, failed_rx) = oneshot::channel();
    let (full_tx, full_rx) = watch::channel(false);
    let task = tokio::spawn(
        StorageTask {
            store: persistence.store,
            batches: batches_rx,
            durable: durable_tx,
            blocking_commits: persistence.blocking_commits,
            failed: failed_tx,
            full: full_tx,
            metrics,
        }
        .run(),
    );
    let link = StoreLink {
        batches: batches_tx,
        durable: durable_rx,
        full: full_rx,
    };
    Ok((link, failed_rx, task))
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task holds this much for as long as the connection lives, busy or idle:
    /// with 10,000 idle clients, every 100 bytes here are a megabyte. It was 11 KiB while the
    /// TLS and WebSocket handshakes' state was part of it, 584 bytes with a `select!` over the
    /// queue and a read future (issue 15), 360 when first hand-polled.
    ///
    /// The bound is a cliff, not a round number: tokio 1.54 allocates a task as its future
    /// plus 104 bytes (header, scheduler, id, join state, list pointers, waker, hooks) rounded
    /// up to 128 on x86-64, so 280 here is a 384-byte task and 281 a 512-byte one (measured:
    /// 2,642 -> 2,415 bytes per idle connection when this went from 376 to 280). Measured in a
    /// test build; a release build lays the future out the same way or smaller.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let (events, _) = mpsc::channel(1);
        let metrics = Arc::new(crate::metrics::ListenerMetrics::new("test".into()));
        let opening = Opening {
            conn: ConnId(1),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            index: 0,
            transport: Transport {
                tls: None,
                websocket_path: None,
            },
            context: Arc::new(ListenerContext {
                events,
                packet_bytes_max: 1024,
                password_file: None,
                password_checks: Arc::new(Semaphore::new(1)),
                metrics,
            }),
            connect_timeout: Duration::from_secs(1),
            outbound_queue_packets_max: 8,
            hostile: Arc::new(HostileLog {
                started: tokio::time::Instant::now(),
                warnings: Default::default(),
            }),
        };
        // The production stream type: the task holds it inline (no longer split in two).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        // Stand-ins of the accept loop's two guards, the same size (an `Arc` each).
        let guards = (Arc::new(()), Arc::new(()));
        let task = connection_life(opening, stream, guards);
        let bytes = std::mem::size_of_val(&task);
        eprintln!("connection task future: {bytes} bytes");
        assert!(bytes <= 280, "a connection's task holds {bytes} bytes");
    }
}
