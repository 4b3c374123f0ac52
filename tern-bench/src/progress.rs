//! The end-to-end window: how many of a publisher's messages each subscriber that hears it has
//! received. A publisher keeps at most its window of messages not yet received by all of them,
//! so the load never outruns the slowest subscriber. Without it a broker that acknowledges
//! at once (as MQTT lets it) queues what its subscribers cannot take yet, until its queue
//! limits drop messages, and the run measures the drop policy instead of the broker.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// One publisher's deliveries, per subscriber that hears it.
#[derive(Debug)]
pub struct Progress {
    delivered: Vec<AtomicU64>,
    changed: Notify,
}

impl Progress {
    /// For a publisher heard by `subscribers` subscribers.
    pub fn new(subscribers: usize) -> Progress {
        Progress {
            delivered: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            changed: Notify::new(),
        }
    }

    /// Subscriber `slot` received one more distinct message.
    pub fn delivered(&self, slot: usize) {
        self.delivered[slot].fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Messages every subscriber has received (the slowest one's count).
    pub fn everywhere(&self) -> u64 {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Resolves after the next [`Progress::delivered`] (or at once if one happened since the
    /// last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_subscriber_sets_the_pace() {
        let p = Progress::new(3);
        p.delivered(0);
        p.delivered(0);
        p.delivered(1);
        assert_eq!(p.everywhere(), 0);
        p.delivered(2);
        assert_eq!(p.everywhere(), 1);
        assert_eq!(
            Progress::new(0).everywhere(),
            u64::MAX,
            "nobody to wait for"
        );
    }
}
