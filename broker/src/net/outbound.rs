//! One connection's outbound queue: packets from the broker task to the connection task.
//!
//! Why not a tokio mpsc channel: a bounded channel allocates its first block of 32 slots
//! (about 3 KiB of `Packet`s) and its cache-padded state up front, for every connection, busy
//! or idle. Ten thousand idle clients paid 35 MiB for queues that were empty. This queue is a
//! `VecDeque` behind a mutex that holds nothing while empty: its storage is given back each
//! time the connection task has written everything and waits. One producer (the broker task),
//! one consumer (the connection task), so the lock is all but uncontended.
//!
//! The bound is the core's: it counts the room in each queue (`core/outbox.rs`) and never
//! sends more than fits; `try_send` refusing a packet means that count was wrong.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::codec::Packet;

/// Room a queue takes at once when a burst outgrows its first few slots.
const BURST_PACKETS: usize = 32;

/// Creates a queue holding at most `capacity` packets.
pub(crate) fn queue(capacity: usize) -> (OutboundSender, OutboundReceiver) {
    assert!(
        capacity > 0,
        "an outbound queue must hold at least one packet"
    );
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            packets: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
            receiver_waker: None,
        }),
        capacity,
        wake: AtomicBool::new(false),
    });
    (
        OutboundSender {
            shared: shared.clone(),
        },
        OutboundReceiver { shared },
    )
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Set by the broker task when the core waits for room; the connection task clears it and
    /// tells the broker task after its next write.
    wake: AtomicBool,
}

struct State {
    packets: VecDeque<Packet>,
    sender_alive: bool,
    receiver_alive: bool,
    /// The receiver waiting for a packet (or for the sender to go). One consumer, so one
    /// waker: lighter than a `Notify`, whose waiter list cost a lock and a list update each
    /// time the connection task's select dropped an unfinished `recv`.
    receiver_waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Neither side panics while holding the lock (it only moves packets), and if one did,
        // the packets are still whole: poisoning carries no meaning here.
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        debug_assert!(state.packets.len() <= self.capacity);
        state
    }
}

/// Why a packet was not queued (it is dropped).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// The queue holds `capacity` packets.
    Full,
    /// The connection task is gone.
    Closed,
}

/// The broker task's end. Dropping it closes the queue: the receiver gets what is queued,
/// then `None`.
pub(crate) struct OutboundSender {
    shared: Arc<Shared>,
}

impl OutboundSender {
    pub fn try_send(&self, packet: Packet) -> Result<(), TrySendError> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Closed);
        }
        if state.packets.len() >= self.shared.capacity {
            return Err(TrySendError::Full);
        }
        let slots = state.packets.capacity();
        if state.packets.len() == slots && slots > 0 && slots < BURST_PACKETS {
            // The storage is given back each time the queue empties. A packet or two (the
            // common case, e.g. one delivery of a fan-out to many sessions) takes the default
            // few slots; a burst that outgrows them gets room for a burst at once rather than
            // growing 8, 16, 32 (each a reallocation of whole packets).
            let room = self.shared.capacity.min(BURST_PACKETS);
            state.packets.reserve(room - slots);
        }
        state.packets.push_back(packet);
        wake_receiver(state);
        Ok(())
    }

    /// Packets that can be queued now.
    pub fn free(&self) -> usize {
        self.shared.capacity - self.shared.lock().packets.len()
    }

    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Asks the connection task to report its next write ([`OutboundReceiver::take_wake`]).
    pub fn ask_wake(&self) {
        self.shared.wake.store(true, Ordering::SeqCst);
    }

    /// Withdraws the request (answered at once instead).
    pub fn cancel_wake(&self) {
        self.shared.wake.store(false, Ordering::SeqCst);
    }
}

impl Drop for OutboundSender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_alive = false;
        wake_receiver(state);
    }
}

/// Wakes the receiver if it waits, after letting go of the lock (a woken task may run at once
/// on another thread and want it).
fn wake_receiver(mut state: MutexGuard<'_, State>) {
    let waker = state.receiver_waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The connection task's end. Dropping it makes further sends fail with `Closed`.
pub(crate) struct OutboundReceiver {
    shared: Arc<Shared>,
}

impl OutboundReceiver {
    /// The next packet; `None` once the sender is gone and the queue is empty. While it waits,
    /// the queue holds no storage.
    pub async fn recv(&mut self) -> Option<Packet> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`OutboundReceiver::recv`], polled by hand.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Packet>> {
        let mut state = self.shared.lock();
        if let Some(packet) = state.packets.pop_front() {
            return Poll::Ready(Some(packet));
        }
        if !state.sender_alive {
            return Poll::Ready(None);
        }
        if state.packets.capacity() > 0 {
            state.packets = VecDeque::new();
        }
        // Under the lock: a send after this sees the waker, so no wake-up is lost.
        match &mut state.receiver_waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next packet if one is queued now.
    pub fn try_recv(&mut self) -> Option<Packet> {
        self.shared.lock().packets.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.lock().packets.is_empty()
    }

    /// True (once) if the broker task asked to hear of the next write.
    pub fn take_wake(&self) -> bool {
        self.shared.wake.swap(false, Ordering::SeqCst)
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        state.receiver_waker = None;
        // What was queued will never be written; free it now, not when the sender goes.
        state.packets = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_then_none_after_the_sender_is_gone() {
        let (tx, mut rx) = queue(3);
        tx.try_send(Packet::PingReq).unwrap();
        tx.try_send(Packet::PingResp).unwrap();
        assert_eq!(tx.free(), 1);
        drop(tx);
        assert!(matches!(rx.recv().await, Some(Packet::PingReq)));
        assert!(matches!(rx.try_recv(), Some(Packet::PingResp)));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn refuses_beyond_capacity_and_after_the_receiver_is_gone() {
        let (tx, rx) = queue(1);
        tx.try_send(Packet::PingReq).unwrap();
        assert_eq!(tx.try_send(Packet::PingResp), Err(TrySendError::Full));
        drop(rx);
        assert_eq!(tx.try_send(Packet::PingResp), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_send_and_holds_no_storage_while_waiting() {
        let (tx, mut rx) = queue(4);
        tx.try_send(Packet::PingReq).unwrap();
        assert!(rx.recv().await.is_some());
        let waiting = tokio::spawn(async move { rx.recv().await.map(|p| p.packet_type()) });
        tokio::task::yield_now().await;
        while !waiting.is_finished() && tx.shared.lock().packets.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            tx.shared.lock().packets.capacity(),
            0,
            "storage kept while idle"
        );
        tx.try_send(Packet::PingResp).unwrap();
        assert_eq!(
            waiting.await.unwrap(),
            Some(crate::codec::PacketType::PingResp)
        );
    }

    #[test]
    fn the_wake_request_is_taken_once() {
        let (tx, rx) = queue(1);
        assert!(!rx.take_wake());
        tx.ask_wake();
        assert!(rx.take_wake());
        assert!(!rx.take_wake());
        tx.ask_wake();
        tx.cancel_wake();
        assert!(!rx.take_wake());
    }
}
