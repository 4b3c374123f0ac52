//! The core's outputs (packets to send, connections to close, wake-up requests, batches to
//! make durable), in the order decided; the room left in each connection's outbound queue;
//! and the packets held back until the batch they depend on is durable (`durable.rs`).
//!
//! The driver gives every connection an outbound queue of `Limits::outbound_queue_packets_max`
//! packets. The core counts what it puts there: it starts from the full capacity, takes one per
//! packet, and learns how much the driver has written only when it asks
//! ([`Output::WakeWhenWritable`], answered by [`super::Broker::outbound_room`]). So the core
//! knows, without IO, when a client is not keeping up, and decides itself what waits (QoS 1/2
//! and retained messages), what is dropped (QoS 0 deliveries, counted) and when a client that
//! does not read its acknowledgements is cut off. Its count is never above the real free room,
//! so a packet it sends always fits.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::durable::StoreOp;
use super::ConnId;
use crate::codec::Packet;

/// One thing the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Encode and send `packet` on `conn`.
    Send { conn: ConnId, packet: Packet },
    /// Flush what was sent on `conn` so far, then close it. The core has already forgotten
    /// the connection; nothing more will be sent on it.
    Close { conn: ConnId },
    /// Call [`super::Broker::outbound_room`] for `conn` once its outbound queue has room again
    /// (the core has deliveries waiting for it).
    WakeWhenWritable { conn: ConnId },
    /// Make `ops` durable, after every earlier batch, then call [`super::Broker::durable`]
    /// with `batch` (or a later batch: one report covers every batch before it).
    Persist { batch: u64, ops: Vec<StoreOp> },
}

/// What the core knows of one connection's outbound queue.
#[derive(Debug)]
struct Room {
    /// Packets the queue can still take: the driver's last report, less what was sent since.
    /// Never above the capacity, which fits in 32 bits: an entry per connection is 16 bytes,
    /// not 24 (issue 15).
    free: u32,
    /// A [`Output::WakeWhenWritable`] is out and not yet answered.
    wake_requested: bool,
}

/// Hashes a connection id with one multiplication: looked up on every delivery, and the ids
/// are the driver's counter, not something a client chooses. Never iterated, so the order of
/// the map cannot reach the output.
#[derive(Default)]
struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Output>,
    rooms: HashMap<ConnId, Room, BuildHasherDefault<ConnIdHasher>>,
    /// Every connection's outbound queue capacity.
    capacity: usize,
    /// Room kept for acknowledgements and other replies: deliveries stop short of it, so a
    /// queue full of QoS 0 messages never costs a client its PUBACK or PINGRESP.
    reserve: usize,
    /// Connections that were sent a packet with no room left: they have stopped reading.
    overflowed: Vec<ConnId>,
    /// Outputs at the back of `queue` that the input being handled produced.
    fresh: usize,
    /// Sends and closes waiting for their batch to be durable (see `durable.rs`), in order.
    held: VecDeque<(u64, Output)>,
    /// How many of `held` each connection has: later outputs to it must wait behind them.
    held_per_conn: HashMap<ConnId, usize, BuildHasherDefault<ConnIdHasher>>,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        // Config validation asks for 4: a quarter (at least one) for replies, the rest for
        // deliveries, so neither can starve the other.
        assert!(capacity >= 4, "an outbound queue holds at least 4 packets");
        // Room is counted in 32 bits; four billion packets is as good as no limit (what a
        // larger setting means).
        let capacity = capacity.min(u32::MAX as usize);
        Outbox {
            queue: VecDeque::new(),
            rooms: HashMap::default(),
            capacity,
            reserve: capacity / 4,
            overflowed: Vec::new(),
            fresh: 0,
            held: VecDeque::new(),
            held_per_conn: HashMap::default(),
        }
    }

    fn push(&mut self, output: Output) {
        self.queue.push_back(output);
        self.fresh += 1;
    }

    /// The input is handled. With a batch, it changed durable state: what it produced for the
    /// connections in the batch's hold set waits for that batch. Outputs to connections that
    /// already have some waiting are held too, behind them: order per connection is kept.
    pub fn end_input(&mut self, batch: Option<(u64, &BTreeSet<ConnId>)>) {
        let fresh = std::mem::take(&mut self.fresh);
        let holding = batch.is_some_and(|(_, conns)| !conns.is_empty());
        if !holding && self.held.is_empty() {
            return;
        }
        let tail = self.queue.split_off(self.queue.len() - fresh);
        for output in tail {
            let conn = match &output {
                Output::Send { conn, .. } | Output::Close { conn } => *conn,
                Output::WakeWhenWritable { .. } | Output::Persist { .. } => {
                    self.queue.push_back(output);
                    continue;
                }
            };
            let hold = match batch {
                Some((number, conns)) if conns.contains(&conn) => Some(number),
                _ if self.held_per_conn.contains_key(&conn) => {
                    self.held.back().map(|(number, _)| *number)
                }
                _ => None,
            };
            match hold {
                Some(number) => {
                    *self.held_per_conn.entry(conn).or_insert(0) += 1;
                    self.held.push_back((number, output));
                }
                None => self.queue.push_back(output),
            }
        }
    }

    /// Whether packets to `conn` wait for the store.
    pub fn holds(&self, conn: ConnId) -> bool {
        self.held_per_conn.contains_key(&conn)
    }

    /// Hands `ops` to the driver (not held: they are what the held packets wait for).
    pub fn persist(&mut self, batch: u64, ops: Vec<StoreOp>) {
        self.queue.push_back(Output::Persist { batch, ops });
    }

    /// Every batch up to `batch` is durable: what waited for them goes out, in order.
    pub fn release(&mut self, batch: u64) {
        while self.held.front().is_some_and(|(b, _)| *b <= batch) {
            let (_, output) = self.held.pop_front().expect("checked above");
            if let Output::Send { conn, .. } | Output::Close { conn } = &output {
                let count = self
                    .held_per_conn
                    .get_mut(conn)
                    .expect("every held output is counted");
                *count -= 1;
                if *count == 0 {
                    self.held_per_conn.remove(conn);
                }
            }
            self.queue.push_back(output);
        }
    }

    /// A connection opened: its queue is empty.
    pub fn open(&mut self, conn: ConnId) {
        let room = Room {
            free: self.capacity as u32,
            wake_requested: false,
        };
        self.rooms.insert(conn, room);
    }

    /// Queues `packet` for `conn`. With no room left the packet is not sent and the connection
    /// is marked overflowed (see [`Outbox::take_overflowed`]). Once half the room is used, the
    /// driver is asked for a fresh count: the core's count only ever goes down by itself, and
    /// a client that reads must never be taken for one that does not.
    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        if let Some(room) = self.rooms.get_mut(&conn) {
            if room.free == 0 {
                if !self.overflowed.contains(&conn) {
                    self.overflowed.push(conn);
                }
                return;
            }
            room.free -= 1;
            let low = room.free as usize <= self.capacity / 2;
            self.push(Output::Send { conn, packet });
            if low {
                self.request_wake(conn);
            }
            return;
        }
        self.push(Output::Send { conn, packet });
    }

    pub fn close(&mut self, conn: ConnId) {
        self.rooms.remove(&conn);
        self.push(Output::Close { conn });
    }

    /// The connection ended without a Close from the core (the network closed it): its room
    /// entry goes, as with [`Outbox::close`].
    pub fn forget(&mut self, conn: ConnId) {
        self.rooms.remove(&conn);
    }

    /// Connections whose room is tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.rooms.len()
    }

    /// Whether a delivery (a PUBLISH the broker chose to send, as opposed to a reply) may go to
    /// `conn` now: the queue has room beyond the reserve for replies.
    pub fn has_room_for_delivery(&self, conn: ConnId) -> bool {
        self.rooms
            .get(&conn)
            .is_some_and(|room| room.free as usize > self.reserve)
    }

    /// Asks the driver to report when `conn` can take more (once until it answers).
    pub fn request_wake(&mut self, conn: ConnId) {
        if let Some(room) = self.rooms.get_mut(&conn) {
            if !room.wake_requested {
                room.wake_requested = true;
                self.push(Output::WakeWhenWritable { conn });
            }
        }
    }

    /// The driver's report: `conn`'s queue can take `free` more packets, less what is held
    /// for it here (the driver has not seen those yet).
    pub fn set_room(&mut self, conn: ConnId, free: usize) {
        let held = self.held_per_conn.get(&conn).copied().unwrap_or(0);
        if let Some(room) = self.rooms.get_mut(&conn) {
            // At most the capacity: fits (see `new`).
            room.free = free.saturating_sub(held).min(self.capacity) as u32;
            room.wake_requested = false;
        }
    }

    /// Connections sent a packet they had no room for since the last call.
    pub fn take_overflowed(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.overflowed)
    }

    pub fn pop(&mut self) -> Option<Output> {
        let output = self.queue.pop_front()?;
        // Popped from the front: fresh outputs are popped only once the older ones are gone.
        self.fresh = self.fresh.min(self.queue.len());
        Some(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_counted_and_deliveries_stop_at_the_reserve() {
        let conn = ConnId(1);
        let mut out = Outbox::new(8);
        out.open(conn);
        for _ in 0..6 {
            assert!(out.has_room_for_delivery(conn));
            out.send(conn, Packet::PingResp);
        }
        assert!(!out.has_room_for_delivery(conn), "2 left are the reserve");
        out.send(conn, Packet::PingResp);
        out.send(conn, Packet::PingResp);
        assert!(out.take_overflowed().is_empty());
        out.send(conn, Packet::PingResp);
        assert_eq!(out.take_overflowed(), vec![conn]);
        let outputs: Vec<Output> = std::iter::from_fn(|| out.pop()).collect();
        let sent = outputs
            .iter()
            .filter(|o| matches!(o, Output::Send { .. }))
            .count();
        assert_eq!(sent, 8, "the packet with no room was not queued");
        // Half the room used: one wake-up request, right after the fourth packet.
        assert_eq!(outputs[4], Output::WakeWhenWritable { conn });
        assert_eq!(outputs.len(), 9, "one request until answered");
        out.request_wake(conn);
        assert_eq!(out.pop(), None, "still one request until answered");
        out.set_room(conn, 100);
        assert!(out.has_room_for_delivery(conn));
        out.close(conn);
        assert!(!out.has_room_for_delivery(conn));
    }
}
