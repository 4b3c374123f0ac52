//! Rebuilding the broker from what the store held, once, before the first connection.
//!
//! Sessions come back disconnected: their subscriptions in the trees, their QoS 1/2 messages
//! in the queue or (with their packet ids) in the window, to be resent with DUP when the client
//! returns; their expiry and delayed will on the timers, from the wall-clock deadlines stored.
//! A session whose client was connected at the crash has no deadline stored: its expiry counts
//! from the restart, as if the connection had just been lost.

use std::time::Duration;

use super::durable::{Journal, Snapshot, StoreOp, StoredSession, WallMs};
use super::publish::Durability;
use super::session::{DeliveryParams, Queued, Session};
use super::subscription_tree::Subscription;
use super::{Broker, Instant, SessionId, Timer};

impl Broker {
    /// Turns persistence on (`Instant::ZERO` is `wall_at_zero` on the wall clock) and rebuilds
    /// what `snapshot` holds. Every change from now on is journalled (see `durable.rs`).
    pub fn restore(&mut self, snapshot: Snapshot, wall_at_zero: WallMs, now: Instant) {
        assert!(
            self.conns.is_empty() && self.sessions.is_empty() && self.retained.len() == 0,
            "restore comes before anything else"
        );
        self.journal = Journal::new(wall_at_zero);
        let mut gone = Vec::new();
        for stored in snapshot.retained {
            let message = self.journal.message(stored, now);
            if message.is_expired(now) {
                // Expired while the broker was down: out of the store too.
                gone.push(message.content.to_topic());
            } else {
                // One beyond limits lowered since is not served, but stays in the store.
                self.store_retained(&message, Durability::Stored);
            }
        }
        // What storing them journalled is in the store already; what expired leaves it.
        self.journal.discard();
        for topic in gone {
            self.journal
                .record_lazily(StoreOp::DeleteRetained { topic });
        }
        for stored in snapshot.sessions {
            self.restore_session(stored, now);
        }
        // Sessions whose client was connected at the crash now have a deadline: stored, so
        // that another restart does not postpone it again.
        self.after_input(now);
        tracing::info!(
            sessions = self.sessions.len(),
            retained = self.retained.len(),
            "restored from the store"
        );
        let (held, budget) = (self.stats.held_bytes(), self.config.limits.memory_bytes_max);
        if held > budget {
            // The limit was lowered since: nothing is dropped, but QoS 1/2 publishes are
            // refused (for memory) until enough is delivered.
            tracing::warn!(
                held,
                budget,
                "the store holds more than memory_bytes_max: new QoS 1/2 messages are refused until it drains"
            );
        }
    }

    fn restore_session(&mut self, stored: StoredSession, now: Instant) {
        let StoredSession {
            record,
            entries,
            incoming_ids,
        } = stored;
        let params = DeliveryParams {
            version: record.version,
            inflight_max: self.config.limits.inflight_count_max.max(1),
            packet_bytes_max: None,
            bridge: false,
        };
        // The broker's cap now, which may have been lowered since the session was stored.
        let expiry_secs = record
            .expiry_secs
            .min(self.config.limits.session_expiry_max_secs);
        let login = record.login.clone();
        let mut session = Session::new(record.client_id.clone(), login, params, expiry_secs);
        session.mark_stored();
        for (key, entry) in entries {
            let item = Queued {
                message: self.journal.message(entry.message, now),
                qos: entry.qos,
                retain: entry.retain,
                subscription_ids: entry.subscription_ids,
                enqueued_at: now,
                group: None,
            };
            session.restore_entry(key, item, entry.state, now, &mut self.stats);
        }
        session.restore_awaiting_pubrel(incoming_ids);
        let session_id = SessionId(self.next_session_id);
        self.next_session_id += 1;
        for (filter, options, id) in record.subscriptions {
            let subscription = Subscription { options, id };
            session.subscribe(filter.clone(), subscription);
            self.add_subscription(&filter, session_id, subscription);
        }
        if let Some((will, at)) = record.pending_will {
            let at = self.journal.instant_of(at, now);
            session.hold_will(will, at);
            self.timers.schedule(at, Timer::WillDelay(session_id));
        }
        if expiry_secs != u32::MAX {
            let cap = now + Duration::from_secs(u64::from(expiry_secs));
            let stored = record.expires_at.map(|at| self.journal.instant_of(at, now));
            let at = stored.map_or(cap, |at| at.min(cap));
            session.expire_at(at);
            self.timers.schedule(at, Timer::SessionExpiry(session_id));
            if stored != Some(at) {
                // A new deadline (connected at the crash, or a cap lowered since): stored, so
                // that another restart does not postpone it again.
                session.save(&mut self.journal);
            }
        }
        self.by_client_id.insert(record.client_id, session_id);
        self.sessions.insert(session_id, Box::new(session));
    }
}
