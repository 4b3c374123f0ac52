//! The task that owns the core: it feeds it events and the clock, and carries out its outputs.
//!
//! All MQTT decisions happen in `core::Broker`; this task only translates, and reports the
//! facts the core cannot see: time, how much room each connection's outbound queue has when
//! the core asks (the slow-consumer policy itself is the core's, `core/outbox.rs`), and what
//! the storage task says (batches durable, the disk full). It hands `Persist` batches to the
//! storage task and keeps a connection's read tickets while its replies wait for the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::outbound::{OutboundSender, TrySendError};
use super::tickets::Ticket;
use super::Event;
use crate::core::{Broker, Instant, Output, Stats, StoreOp};
use crate::metrics::sys::SysTree;
use crate::metrics::{DriverMetrics, Snapshot};
use crate::types::ConnId;

/// Batches handed to the store and not yet durable before the broker task stops taking
/// events (and so the clients wait): the store's queue is bounded by this, however slow the
/// disk. Each input makes at most one batch.
const PENDING_BATCHES_MAX: u64 = 4096;

/// Events handled in one turn of the broker task's loop at most; timers, the store's news and
/// snapshot requests are looked at between turns.
const EVENTS_PER_TURN_MAX: usize = 64;

/// How long shutdown waits for the store to take what it was given.
const SHUTDOWN_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) struct BrokerTask {
    pub broker: Broker,
    pub events: mpsc::Receiver<Event>,
    /// Snapshot requests (`Probe`): served even while events wait for the store.
    pub samples: mpsc::Receiver<oneshot::Sender<Snapshot>>,
    pub shutdown: watch::Receiver<bool>,
    pub start: tokio::time::Instant,
    /// The storage task's ends, when persistence is on.
    pub store: Option<StoreLink>,
    /// The driver's counters (read for snapshots; outbound waits counted here).
    pub metrics: Arc<DriverMetrics>,
    /// How often the `$SYS` tree is published; zero: never.
    pub sys_interval: Duration,
}

/// The broker task's ends of the storage task's channels.
pub(super) struct StoreLink {
    pub batches: mpsc::UnboundedSender<(u64, Vec<StoreOp>)>,
    pub durable: watch::Receiver<u64>,
    pub full: watch::Receiver<bool>,
}

/// Read tickets (see `ConnectionTask::tickets`) the broker task holds back, so that each
/// connection has at most its tickets' worth of replies not yet in its outbound queue, well
/// inside the queue's reserve.
#[derive(Default)]
struct HeldTickets {
    /// Of connections whose replies wait for the store: returned when those are released
    /// (see `Broker::holds_replies_for`).
    stashed: BTreeMap<ConnId, Vec<Ticket>>,
    /// Of packets handled this turn: returned after the turn's dispatch, when their replies
    /// are in the queues (returned at once, a connection could send more within the turn).
    spent: Vec<Ticket>,
}

/// What the storage task has to say.
enum StoreNews {
    /// Every batch up to this one is durable.
    Durable(u64),
    /// The disk is full (or has room again).
    Full(bool),
    /// It stopped: a commit failed.
    Stopped,
}

/// Waits for news from the storage task (never, without a store).
async fn store_news(store: &mut Option<StoreLink>) -> StoreNews {
    let Some(link) = store else {
        return std::future::pending().await;
    };
    tokio::select! {
        // Durability first: an unbiased select picks a random ready branch, and the
        // simulation must replay the same order from the same seed.
        biased;
        changed = link.durable.changed() => match changed {
            Ok(()) => StoreNews::Durable(*link.durable.borrow_and_update()),
            Err(_) => StoreNews::Stopped,
        },
        changed = link.full.changed() => match changed {
            Ok(()) => StoreNews::Full(*link.full.borrow_and_update()),
            Err(_) => StoreNews::Stopped,
        },
    }
}

impl BrokerTask {
    fn now(&self) -> Instant {
        Instant::from_since_epoch(tokio::time::Instant::now() - self.start)
    }

    pub async fn run(mut self) -> Stats {
        let mut conns: BTreeMap<ConnId, OutboundSender> = BTreeMap::new();
        let mut mismatches = 0;
        let mut tickets = HeldTickets::default();
        // What restoring the store produced (see `Broker::restore`).
        self.dispatch(&mut conns, &mut mismatches);
        let mut sys = SysTree::default();
        let mut next_sys = (!self.sys_interval.is_zero()).then_some(self.start);
        loop {
            let timer = self
                .broker
                .poll_timeout()
                .map(|at| self.start + at.since_epoch());
            let deadline = match (timer, next_sys) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let room = self.broker.pending_batches() < PENDING_BATCHES_MAX;
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                news = store_news(&mut self.store) => {
                    if !self.store_news_arrived(news, &mut tickets) {
                        break;
                    }
                }
                Some(reply) = self.samples.recv() => {
                    let _ = reply.send(self.snapshot());
                }
                event = self.events.recv(), if room => {
                    let Some(event) = event else { break };
                    self.handle_turn(event, &mut conns, &mut tickets, &mut mismatches);
                }
                _ = sleep_until(deadline) => {}
            }
            self.run_due(&mut next_sys, &mut sys);
            self.dispatch(&mut conns, &mut mismatches);
            tickets.spent.clear();
        }
        self.wait_for_store(&mut conns, &mut mismatches).await;
        tracing::info!("shutting down: disconnecting {} clients", conns.len());
        self.broker.shutdown();
        // The last DISCONNECTs may find full queues: not the core's miscount, nothing to count.
        self.dispatch(&mut conns, &mut 0);
        // Dropping the senders lets every connection task flush and close.
        drop(conns);
        let mut stats = self.broker.stats().clone();
        stats.outbound_count_mismatches = mismatches;
        stats
    }

    /// The storage task's news: false when the broker must stop serving.
    fn store_news_arrived(&mut self, news: StoreNews, tickets: &mut HeldTickets) -> bool {
        match news {
            StoreNews::Durable(batch) => {
                self.broker.durable(batch);
                let broker = &self.broker;
                tickets
                    .stashed
                    .retain(|conn, _| broker.holds_replies_for(*conn));
            }
            StoreNews::Full(full) => self.broker.store_full(full),
            StoreNews::Stopped => {
                tracing::error!("the store stopped: no longer serving");
                self.store = None;
                return false;
            }
        }
        true
    }

    /// `first` and what else is queued, in one turn (up to a bound, so timers and the store
    /// are not held back): one select and one clock read for a batch of events, not for each.
    fn handle_turn(
        &mut self,
        first: Event,
        conns: &mut BTreeMap<ConnId, OutboundSender>,
        tickets: &mut HeldTickets,
        mismatches: &mut u64,
    ) {
        let now = self.now();
        self.handle(first, now, conns, tickets, mismatches);
        for _ in 1..EVENTS_PER_TURN_MAX {
            if self.broker.pending_batches() >= PENDING_BATCHES_MAX {
                break;
            }
            let Ok(event) = self.events.try_recv() else {
                break;
            };
            self.handle(event, now, conns, tickets, mismatches);
        }
    }

    /// Timers and `$SYS`, when due. Checked after every turn, not only when the select's
    /// sleep ends: the select is biased towards events, and a steady stream of them must not
    /// hold timers back. One clock read per turn.
    fn run_due(&mut self, next_sys: &mut Option<tokio::time::Instant>, sys: &mut SysTree) {
        let clock = tokio::time::Instant::now();
        let now = Instant::from_since_epoch(clock - self.start);
        if self.broker.poll_timeout().is_some_and(|at| at <= now) {
            self.broker.timeout(now);
        }
        if let Some(due) = next_sys.filter(|due| *due <= clock) {
            self.publish_sys(sys);
            // A broker busy for longer than an interval publishes once, not once per
            // interval missed.
            *next_sys = Some((due + self.sys_interval).max(clock));
        }
    }

    /// Hands one event to the core. Its outputs wait for the end of the turn, so that what
    /// several events send to one connection goes out in one write; but the room a `Writable`
    /// event reports is exact only with the outbox empty, so that one dispatches first.
    fn handle(
        &mut self,
        event: Event,
        now: Instant,
        conns: &mut BTreeMap<ConnId, OutboundSender>,
        tickets: &mut HeldTickets,
        mismatches: &mut u64,
    ) {
        match event {
            Event::Opened {
                conn,
                outbound,
                origin,
            } => {
                conns.insert(conn, outbound);
                self.broker.connection_opened(conn, origin, now);
            }
            Event::CredentialsChecked { conn, valid } => {
                self.broker.credentials_checked(conn, valid);
            }
            Event::AclChanged { listener, acl } => self.broker.set_acl(listener, acl),
            Event::Packet {
                conn,
                packet,
                ticket,
            } => {
                self.broker.packet_received(conn, packet, now);
                if self.broker.holds_replies_for(conn) {
                    tickets.stashed.entry(conn).or_default().push(ticket);
                } else {
                    tickets.spent.push(ticket);
                }
            }
            Event::DecodeFailed { conn, error } => self.broker.decode_failed(conn, &error, now),
            Event::Writable { conn } => {
                self.dispatch(conns, mismatches);
                if let Some(outbound) = conns.get(&conn) {
                    let free = outbound.free();
                    self.broker.outbound_room(conn, free, now);
                }
            }
            Event::Closed { conn } => {
                conns.remove(&conn);
                tickets.stashed.remove(&conn);
                self.broker.connection_closed(conn, now);
            }
        }
    }

    /// Every counter now: the core's, the driver's, and this task's queue depths.
    fn snapshot(&self) -> Snapshot {
        let mut driver = self.metrics.sample();
        driver.event_queue_depth = self.events.len() as u64;
        driver.store_batches_pending = self.broker.pending_batches();
        Snapshot {
            core: self.broker.sample(),
            driver,
            uptime: tokio::time::Instant::now() - self.start,
        }
    }

    /// Publishes the `$SYS` values that changed since the last interval.
    fn publish_sys(&mut self, sys: &mut SysTree) {
        let snapshot = self.snapshot();
        let now = self.now();
        for (topic, payload) in sys.update(&snapshot) {
            if !self.broker.publish_system(&topic, payload, now) {
                // Refused (the memory budget): tried again next interval, even unchanged.
                sys.forget(&topic);
            }
        }
    }

    /// At shutdown: what the store has been given becomes durable, and what waited for it
    /// (acknowledgements) goes out before the connections close. Not for ever: a full disk
    /// may never take it (what was not acknowledged stays the clients' to resend).
    async fn wait_for_store(
        &mut self,
        conns: &mut BTreeMap<ConnId, OutboundSender>,
        mismatches: &mut u64,
    ) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_STORE_WAIT;
        while self.broker.pending_batches() > 0 && self.store.is_some() {
            let news = tokio::time::timeout_at(deadline, store_news(&mut self.store)).await;
            match news {
                Ok(StoreNews::Durable(batch)) => self.broker.durable(batch),
                Ok(StoreNews::Full(full)) => self.broker.store_full(full),
                Ok(StoreNews::Stopped) => return,
                Err(_) => {
                    tracing::warn!("shutdown: the store did not take the last changes in time");
                    return;
                }
            }
            self.dispatch(conns, mismatches);
        }
    }

    /// Carries out the core's outputs. The core counts the room in each outbound queue and
    /// never sends more than fits (see `core/outbox.rs`); the slow-consumer policy is its.
    /// Wake-up requests are answered once the outputs are out, when the free room read from
    /// the queue is exact: at once if more than a quarter of the queue is free, otherwise by
    /// the connection task after its next write.
    fn dispatch(&mut self, conns: &mut BTreeMap<ConnId, OutboundSender>, mismatches: &mut u64) {
        let mut wakes = Vec::new();
        loop {
            while let Some(output) = self.broker.poll_output() {
                match output {
                    Output::Send { conn, packet } => {
                        let Some(outbound) = conns.get(&conn) else {
                            continue;
                        };
                        match outbound.try_send(packet) {
                            Ok(()) => {}
                            Err(TrySendError::Full) => {
                                // The core's count says there was room: a bug, not a client.
                                tracing::error!(%conn, "outbound queue full against the core's count; closing");
                                *mismatches += 1;
                                conns.remove(&conn);
                                let now = self.now();
                                self.broker.connection_closed(conn, now);
                            }
                            Err(TrySendError::Closed) => {
                                // The task ended; its Closed event is on the way.
                            }
                        }
                    }
                    Output::Close { conn } => {
                        conns.remove(&conn);
                    }
                    Output::WakeWhenWritable { conn } => {
                        self.metrics.outbound_wait();
                        wakes.push(conn);
                    }
                    Output::Persist { batch, ops } => {
                        let sent = self
                            .store
                            .as_ref()
                            .map(|link| link.batches.send((batch, ops)));
                        // Without a store the core journals nothing; a closed channel means the
                        // storage task failed, which the durable channel reports.
                        debug_assert!(sent.is_some(), "a batch without a store");
                    }
                }
            }
            let now = self.now();
            let mut answered = false;
            for conn in wakes.drain(..) {
                let Some(outbound) = conns.get(&conn) else {
                    continue;
                };
                outbound.ask_wake();
                let free = outbound.free();
                // Answered at once whenever the real room is above the core's reserve: the core
                // then sends (using it up) or asks no more, so this cannot loop; at or below the
                // reserve the connection task answers after its next write.
                if free > outbound.capacity() / 4 {
                    outbound.cancel_wake();
                    self.broker.outbound_room(conn, free, now);
                    answered = true;
                }
            }
            if !answered {
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
