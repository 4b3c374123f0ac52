//! The task that owns the core: it feeds it events and the clock, and carries out its outputs.
//!
//! All MQTT decisions happen in `core::Broker`; this task only translates. It is also where
//! the slow-consumer policy lives, because only here is the state of each connection's
//! outbound queue known.

use std::collections::BTreeMap;
use tokio::sync::{mpsc, watch};

use super::Event;
use crate::codec::{Packet, Publish};
use crate::core::{Broker, Instant, Output, Stats};
use crate::types::{ConnId, QoS};

pub(super) struct BrokerTask {
    pub broker: Broker,
    pub events: mpsc::Receiver<Event>,
    pub shutdown: watch::Receiver<bool>,
    pub start: tokio::time::Instant,
}

impl BrokerTask {
    fn now(&self) -> Instant {
        Instant::from_since_epoch(tokio::time::Instant::now() - self.start)
    }

    pub async fn run(mut self) -> Stats {
        let mut conns: BTreeMap<ConnId, mpsc::Sender<Packet>> = BTreeMap::new();
        let mut slow_consumer_drops = 0u64;
        loop {
            let deadline = self
                .broker
                .poll_timeout()
                .map(|at| self.start + at.since_epoch());
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    let now = self.now();
                    match event {
                        Event::Opened { conn, outbound } => {
                            conns.insert(conn, outbound);
                            self.broker.connection_opened(conn, now);
                        }
                        Event::Packet { conn, packet } => self.broker.packet_received(conn, packet, now),
                        Event::DecodeFailed { conn, error } => self.broker.decode_failed(conn, &error, now),
                        Event::Closed { conn } => {
                            conns.remove(&conn);
                            self.broker.connection_closed(conn, now);
                        }
                    }
                }
                _ = sleep_until(deadline) => {
                    let now = self.now();
                    self.broker.timeout(now);
                }
            }
            self.dispatch(&mut conns, &mut slow_consumer_drops);
        }
        tracing::info!("shutting down: disconnecting {} clients", conns.len());
        self.broker.shutdown();
        self.dispatch(&mut conns, &mut slow_consumer_drops);
        // Dropping the senders lets every connection task flush and close.
        drop(conns);
        let mut stats = self.broker.stats().clone();
        stats.messages_dropped_queue_full += slow_consumer_drops;
        stats
    }

    /// Carries out the core's outputs. A full outbound queue drops a QoS 0 PUBLISH (counted)
    /// and disconnects the client for anything else: QoS 1/2 traffic is bounded by the
    /// in-flight window, so a queue that is full of it belongs to a client that stopped reading.
    fn dispatch(
        &mut self,
        conns: &mut BTreeMap<ConnId, mpsc::Sender<Packet>>,
        qos0_drops: &mut u64,
    ) {
        while let Some(output) = self.broker.poll_output() {
            match output {
                Output::Send { conn, packet } => {
                    let Some(sender) = conns.get(&conn) else {
                        continue;
                    };
                    match sender.try_send(packet) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(Packet::Publish(Publish {
                            qos: QoS::AtMostOnce,
                            ..
                        }))) => {
                            *qos0_drops += 1;
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::warn!(%conn, "closing: outbound queue full (slow consumer)");
                            conns.remove(&conn);
                            let now = self.now();
                            self.broker.connection_closed(conn, now);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            // The task ended; its Closed event is on the way.
                        }
                    }
                }
                Output::Close { conn } => {
                    conns.remove(&conn);
                }
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
