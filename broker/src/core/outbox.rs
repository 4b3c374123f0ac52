//! The core's outputs: packets to send and connections to close, in the order decided.

use std::collections::VecDeque;

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
}

#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Output>,
}

impl Outbox {
    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        self.queue.push_back(Output::Send { conn, packet });
    }

    pub fn close(&mut self, conn: ConnId) {
        self.queue.push_back(Output::Close { conn });
    }

    pub fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }
}
