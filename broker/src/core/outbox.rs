//! The core's outputs (packets to send, connections to close, wake-up requests), in the order
//! decided, and the room left in each connection's outbound queue.
//!
//! The driver gives every connection an outbound queue of `Limits::outbound_queue_packets_max`
//! packets. The core counts what it puts there: it starts from the full capacity, takes one per
//! packet, and learns how much the driver has written only when it asks
//! ([`Output::WakeWhenWritable`], answered by [`super::Broker::outbound_room`]). So the core
//! knows, without IO, when a client is not keeping up, and decides itself what waits (QoS 1/2
//! and retained messages), what is dropped (QoS 0 deliveries, counted) and when a client that
//! does not read its acknowledgements is cut off. Its count is never above the real free room,
//! so a packet it sends always fits.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

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
}

/// What the core knows of one connection's outbound queue.
#[derive(Debug)]
struct Room {
    /// Packets the queue can still take: the driver's last report, less what was sent since.
    free: usize,
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
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        // Config validation asks for 4: a quarter (at least one) for replies, the rest for
        // deliveries, so neither can starve the other.
        assert!(capacity >= 4, "an outbound queue holds at least 4 packets");
        Outbox {
            queue: VecDeque::new(),
            rooms: HashMap::default(),
            capacity,
            reserve: capacity / 4,
            overflowed: Vec::new(),
        }
    }

    /// A connection opened: its queue is empty.
    pub fn open(&mut self, conn: ConnId) {
        let room = Room {
            free: self.capacity,
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
            let low = room.free <= self.capacity / 2;
            self.queue.push_back(Output::Send { conn, packet });
            if low {
                self.request_wake(conn);
            }
            return;
        }
        self.queue.push_back(Output::Send { conn, packet });
    }

    pub fn close(&mut self, conn: ConnId) {
        self.rooms.remove(&conn);
        self.queue.push_back(Output::Close { conn });
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
            .is_some_and(|room| room.free > self.reserve)
    }

    /// Asks the driver to report when `conn` can take more (once until it answers).
    pub fn request_wake(&mut self, conn: ConnId) {
        if let Some(room) = self.rooms.get_mut(&conn) {
            if !room.wake_requested {
                room.wake_requested = true;
                self.queue.push_back(Output::WakeWhenWritable { conn });
            }
        }
    }

    /// The driver's report: `conn`'s queue can take `free` more packets.
    pub fn set_room(&mut self, conn: ConnId, free: usize) {
        if let Some(room) = self.rooms.get_mut(&conn) {
            room.free = free.min(self.capacity);
            room.wake_requested = false;
        }
    }

    /// Connections sent a packet they had no room for since the last call.
    pub fn take_overflowed(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.overflowed)
    }

    pub fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
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
