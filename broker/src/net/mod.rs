//! The tokio driver: listeners, one task per connection, and the task that owns the core
//! (DESIGN.md section 3).
//!
//! It is generic over [`Listener`], so the production binary (TCP) and the turmoil simulation
//! run the same code. No `tokio::net` type appears outside `listener.rs`.

mod broker_task;
mod connection;
mod listener;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use connection::WRITE_STALL_TIMEOUT;
pub use listener::Listener;

use crate::auth::{Entropy, OsEntropy};
use crate::codec::{DecodeError, Packet};
use crate::core::{self, Broker, Stats};
use crate::types::ConnId;
use broker_task::BrokerTask;
use connection::ConnectionTask;

/// Events from connection tasks to the broker task. The channel is bounded: when the core
/// falls behind, connection tasks wait, and so do the clients behind them.
const EVENT_QUEUE_EVENTS_MAX: usize = 4096;

/// Stack of each runtime worker thread (tokio's default, stated so the simulation can run the
/// broker under the same limit: a recursion that fits 8 MiB but not this crashes production).
pub const WORKER_STACK_BYTES: usize = 2 * 1024 * 1024;

/// How long shutdown waits for connections to flush their last packets.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) enum Event {
    Opened {
        conn: ConnId,
        outbound: Outbound,
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
        ticket: OwnedSemaphorePermit,
    },
    DecodeFailed {
        conn: ConnId,
        error: DecodeError,
    },
    Closed {
        conn: ConnId,
    },
}

/// The broker task's end of one connection's outbound queue.
pub(crate) struct Outbound {
    pub sender: mpsc::Sender<Packet>,
    /// Set by the broker task when the core waits for room; the connection task clears it and
    /// sends [`Event::Writable`] after its next write.
    pub wake: Arc<AtomicBool>,
}

/// State shared by the accept loops and the connection tasks.
#[derive(Default)]
pub(crate) struct Shared {
    open_connections: AtomicUsize,
    next_conn: AtomicU64,
}

/// Decrements the open-connection count when a connection task ends, however it ends.
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running broker: its addresses, and the means to stop it.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    broker_task: JoinHandle<Stats>,
    accept_tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
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
        let local_addrs = listeners
            .iter()
            .map(Listener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_EVENTS_MAX);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        let limits = config.limits.clone();
        let broker_task = tokio::spawn(
            BrokerTask {
                broker: Broker::with_entropy(config, entropy),
                events: events_rx,
                shutdown: shutdown_rx.clone(),
                start: tokio::time::Instant::now(),
            }
            .run(),
        );
        let accept_tasks = listeners
            .into_iter()
            .map(|listener| {
                let accept = AcceptLoop {
                    listener,
                    events: events_tx.clone(),
                    shutdown: shutdown_rx.clone(),
                    shared: shared.clone(),
                    connections_max: limits.connections_max,
                    outbound_queue_packets_max: limits.outbound_queue_packets_max,
                    packet_bytes_max: limits.packet_bytes_max,
                };
                tokio::spawn(accept.run())
            })
            .collect();
        for addr in &local_addrs {
            tracing::info!(%addr, "listening for MQTT");
        }
        Ok(Server {
            local_addrs,
            shutdown: shutdown_tx,
            broker_task,
            accept_tasks,
            shared,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Stops accepting, tells every client (v5: DISCONNECT 0x8B), waits for connections to
    /// flush, and returns the final counters.
    pub async fn shutdown(self) -> Stats {
        let _ = self.shutdown.send(true);
        for task in self.accept_tasks {
            let _ = task.await;
        }
        let stats = self.broker_task.await.unwrap_or_default();
        let flushed = tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, async {
            while self.shared.open_connections.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!("shutdown: some connections did not close in time");
        }
        stats
    }
}

struct AcceptLoop<L: Listener> {
    listener: L,
    events: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    connections_max: usize,
    outbound_queue_packets_max: usize,
    packet_bytes_max: usize,
}

impl<L: Listener> AcceptLoop<L> {
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
                tracing::warn!(%peer, limit = self.connections_max, "refusing connection: connection limit reached");
                drop((stream, guard));
                continue;
            }
            let conn = ConnId(self.shared.next_conn.fetch_add(1, Ordering::SeqCst));
            let (outbound_tx, outbound_rx) = mpsc::channel(self.outbound_queue_packets_max);
            let wake = Arc::new(AtomicBool::new(false));
            let outbound = Outbound {
                sender: outbound_tx,
                wake: wake.clone(),
            };
            if self
                .events
                .send(Event::Opened { conn, outbound })
                .await
                .is_err()
            {
                return;
            }
            let task = ConnectionTask::<L> {
                conn,
                stream,
                events: self.events.clone(),
                outbound: outbound_rx,
                wake,
                tickets: Arc::new(Semaphore::new((self.outbound_queue_packets_max / 8).max(1))),
                packet_bytes_max: self.packet_bytes_max,
            };
            let span = tracing::info_span!("conn", id = %conn, %peer);
            tokio::spawn(
                async move {
                    task.run().await;
                    drop(guard);
                }
                .instrument(span),
            );
        }
    }
}
