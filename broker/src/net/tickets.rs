//! A connection's read tickets: how many of its packets the core may hold unhandled.
//!
//! The connection task takes a ticket for each packet it forwards and the broker task drops
//! it once the core has handled the packet and queued its replies (see
//! `ConnectionTask::tickets`). One taker, one giver, a ticket per packet: tokio's semaphore
//! did the job, but its release takes a lock each time (~3% of the broker's CPU under QoS 2
//! load). Here a release is an atomic add and, only when the taker is waiting, a wake-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The connection task's end: takes tickets. Not `Clone`: one taker, so one stored waker.
pub(crate) struct Tickets {
    shared: Arc<Shared>,
}

/// A taken ticket; dropping it gives it back.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
}

struct Shared {
    /// Tickets not taken. Never above the count the tickets were made with.
    free: AtomicUsize,
    /// Set while the taker waits (its waker is stored); a giver then wakes it.
    waiting: AtomicBool,
    waker: Mutex<Option<Waker>>,
    #[cfg(debug_assertions)]
    count: usize,
    /// A `Take` exists (debug builds check there is one at most).
    #[cfg(debug_assertions)]
    taker_active: AtomicBool,
}

impl Tickets {
    pub fn new(count: usize) -> Tickets {
        assert!(count > 0, "a connection needs at least one ticket");
        Tickets {
            shared: Arc::new(Shared {
                free: AtomicUsize::new(count),
                waiting: AtomicBool::new(false),
                waker: Mutex::new(None),
                #[cfg(debug_assertions)]
                count,
                #[cfg(debug_assertions)]
                taker_active: AtomicBool::new(false),
            }),
        }
    }

    /// A ticket if one is free now.
    pub fn try_take(&self) -> Option<Ticket> {
        Shared::try_take(&self.shared)
    }

    /// A ticket, waiting until one is given back. The future owns what it needs (the caller
    /// goes on writing while it waits). One taker: at most one `Take` may exist at a time,
    /// since the waker slot holds one (checked in debug builds).
    pub fn take(&self) -> Take {
        #[cfg(debug_assertions)]
        assert!(
            !self.shared.taker_active.swap(true, Ordering::SeqCst),
            "two `Take` futures at once: one would never be woken"
        );
        Take {
            shared: self.shared.clone(),
        }
    }
}

/// Waits for a ticket ([`Tickets::take`]).
pub(crate) struct Take {
    shared: Arc<Shared>,
}

impl Future for Take {
    type Output = Ticket;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ticket> {
        let shared = &self.shared;
        if let Some(ticket) = Shared::try_take(shared) {
            return Poll::Ready(ticket);
        }
        {
            let mut slot = lock(&shared.waker);
            match &mut *slot {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        // SeqCst on both sides: either this retry sees a ticket given back meanwhile, or that
        // giver sees `waiting` and wakes the stored waker. No wake-up is lost.
        shared.waiting.store(true, Ordering::SeqCst);
        match Shared::try_take(shared) {
            Some(ticket) => {
                shared.stop_waiting();
                Poll::Ready(ticket)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Take {
    /// Done or given up: no waker of this task stays stored (it would keep the task's
    /// allocation alive, and wake it for nothing).
    fn drop(&mut self) {
        self.shared.stop_waiting();
        #[cfg(debug_assertions)]
        self.shared.taker_active.store(false, Ordering::SeqCst);
    }
}

impl Shared {
    fn stop_waiting(&self) {
        self.waiting.store(false, Ordering::SeqCst);
        let waker = lock(&self.waker).take();
        drop(waker);
    }

    fn try_take(shared: &Arc<Shared>) -> Option<Ticket> {
        shared
            .free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |free| {
                free.checked_sub(1)
            })
            .ok()?;
        Some(Ticket {
            shared: shared.clone(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let before = self.shared.free.fetch_add(1, Ordering::SeqCst);
        #[cfg(debug_assertions)]
        assert!(
            before < self.shared.count,
            "more tickets given back than made"
        );
        let _ = before;
        if self.shared.waiting.swap(false, Ordering::SeqCst) {
            // Taken out first: the lock is not held while the waker runs.
            let waker = lock(&self.shared.waker).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

fn lock(waker: &Mutex<Option<Waker>>) -> std::sync::MutexGuard<'_, Option<Waker>> {
    // Nothing panics while holding it (it only moves a waker): poisoning means nothing here.
    waker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_ticket_is_free_again_once_dropped() {
        let tickets = Tickets::new(2);
        let a = tickets.try_take().unwrap();
        let _b = tickets.try_take().unwrap();
        assert!(tickets.try_take().is_none());
        drop(a);
        assert!(tickets.try_take().is_some());
    }

    /// A waker that counts its wake-ups.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let count = Arc::new(Counting(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    /// Step by step: a taker that found none waits, a ticket given back wakes it exactly
    /// once, and its next poll has the ticket.
    #[test]
    fn a_ticket_given_back_wakes_the_waiting_taker_once() {
        let tickets = Tickets::new(1);
        let held = tickets.try_take().unwrap();
        let (wakes, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut take = std::pin::pin!(tickets.take());
        assert!(take.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the taker was not woken");
        assert!(take.as_mut().poll(&mut cx).is_ready());
    }

    /// A taker that gave up leaves no waker behind: a later give-back wakes nobody, and the
    /// next taker gets the ticket.
    #[test]
    fn a_dropped_taker_leaves_no_waker() {
        let tickets = Tickets::new(1);
        let held = tickets.try_take().unwrap();
        let (wakes, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        {
            let mut take = std::pin::pin!(tickets.take());
            assert!(take.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(Arc::strong_count(&wakes), 2, "the waker is still stored");
        drop(held);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        let mut take = std::pin::pin!(tickets.take());
        assert!(take.as_mut().poll(&mut cx).is_ready());
    }

    /// A ticket may outlive the connection task's end.
    #[test]
    fn a_ticket_outlives_its_tickets() {
        let tickets = Tickets::new(1);
        let ticket = tickets.try_take().unwrap();
        drop(tickets);
        drop(ticket);
    }

    /// The waiting taker is woken by a ticket given back on another thread, many times over:
    /// a lost wake-up would hang this test (bounded by the timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_taker_is_woken_by_a_ticket_given_back() {
        let tickets = Tickets::new(1);
        let (give, mut given) = tokio::sync::mpsc::unbounded_channel::<Ticket>();
        let giver = tokio::spawn(async move {
            while let Some(ticket) = given.recv().await {
                tokio::task::yield_now().await;
                drop(ticket);
            }
        });
        let rounds = async {
            for _ in 0..20_000 {
                let ticket = tickets.take().await;
                give.send(ticket).unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), rounds)
            .await
            .expect("the taker was never woken: a lost wake-up");
        drop(give);
        giver.await.unwrap();
        assert!(tickets.try_take().is_some());
    }
}
