//! The task that owns the store: it commits the core's `Persist` batches and reports them
//! durable (see `core/durable.rs`).
//!
//! Group commit: it takes every batch waiting in its channel and commits them as one
//! transaction with one fsync, then reports the highest. Idle, a batch waits one fsync; under
//! load, one fsync covers everything that arrived during the previous one. The broker task
//! bounds how many batches may wait (`PENDING_BATCHES_MAX`). A failed commit is fatal: the
//! task reports the error and ends, the broker stops serving, and what was not reported
//! durable was never acknowledged (the next start recovers from the store). Except a full
//! disk: the task says so (the broker then refuses new persistent work) and tries the same
//! commit again every second, with whatever arrived meanwhile, until there is room.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::core::StoreOp;
use crate::metrics::DriverMetrics;
use crate::store::{Store, StoreError};

/// How many batches one commit takes at most, so one commit's latency stays bounded.
const BATCHES_PER_COMMIT_MAX: usize = 4096;

/// How often a commit is tried again while the disk is full.
const FULL_RETRY: Duration = Duration::from_secs(1);

pub(super) struct StorageTask {
    pub store: Box<dyn Store>,
    pub batches: mpsc::UnboundedReceiver<(u64, Vec<StoreOp>)>,
    /// The highest batch durable so far.
    pub durable: watch::Sender<u64>,
    /// Commit on tokio's blocking pool (a real disk): an fsync must not stall a runtime worker.
    /// The simulation's disk is memory, and its tasks must stay on the simulated host.
    pub blocking_commits: bool,
    /// Where a fatal error goes, as text (the server's owner stops on it).
    pub failed: oneshot::Sender<String>,
    /// Whether the disk is full (commits are being retried).
    pub full: watch::Sender<bool>,
    /// Commit durations and sizes.
    pub metrics: Arc<DriverMetrics>,
}

impl StorageTask {
    pub async fn run(mut self) {
        let mut store = self.store;
        // Batches waiting for the next commit, and the highest of them.
        let mut group: Vec<Vec<StoreOp>> = Vec::new();
        let mut last = 0;
        loop {
            if group.is_empty() {
                let Some((batch, ops)) = self.batches.recv().await else {
                    return;
                };
                group.push(ops);
                last = batch;
            }
            // Disconnected: the broker task has stopped, nothing more will come.
            let mut finished = false;
            while group.len() < BATCHES_PER_COMMIT_MAX {
                match self.batches.try_recv() {
                    Ok((batch, ops)) => {
                        last = batch;
                        group.push(ops);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        finished = true;
                        break;
                    }
                }
            }
            let ops: usize = group.iter().map(Vec::len).sum();
            let started = tokio::time::Instant::now();
            let (back, result) = commit(store, &mut group, self.blocking_commits).await;
            match &result {
                Ok(()) => self.metrics.store.committed(ops, started.elapsed()),
                Err(_) => self.metrics.store.commit_failed(),
            }
            store = match (back, result) {
                (Some(back), Ok(())) => {
                    group.clear();
                    if *self.full.borrow() {
                        tracing::info!("the store has room again");
                        self.full.send_replace(false);
                    }
                    self.durable.send_replace(last);
                    back
                }
                (Some(_), Err(Failure::Full(why))) if finished => {
                    // Shutting down with a full disk: what was not committed was never
                    // acknowledged; waiting for room would hang the shutdown.
                    tracing::error!(%why, "store full at shutdown: the last changes are not stored");
                    let _ = self.failed.send(why);
                    return;
                }
                (Some(back), Err(Failure::Full(why))) => {
                    // Nothing of the group was applied: it waits (and grows) until there is
                    // room; meanwhile the broker refuses new persistent work.
                    if !*self.full.borrow() {
                        tracing::error!(%why, "store full: retrying every {FULL_RETRY:?}");
                        self.full.send_replace(true);
                    }
                    tokio::time::sleep(FULL_RETRY).await;
                    back
                }
                (_, Err(Failure::Fatal(why))) | (None, Err(Failure::Full(why))) => {
                    tracing::error!(%why, "store commit failed: stopping");
                    let _ = self.failed.send(why);
                    return;
                }
                (None, Ok(())) => unreachable!("a commit that succeeded gives the store back"),
            };
        }
    }
}

/// Why a commit did not happen.
enum Failure {
    /// The disk is full: try again later.
    Full(String),
    /// Anything else: the broker stops.
    Fatal(String),
}

/// Commits `group`, on the blocking pool or here; gives the store back (unless the blocking
/// task itself failed).
async fn commit(
    mut store: Box<dyn Store>,
    group: &mut Vec<Vec<StoreOp>>,
    blocking: bool,
) -> (Option<Box<dyn Store>>, Result<(), Failure>) {
    let judge = |result: Result<(), StoreError>| {
        result.map_err(|error| match error.is_full() {
            true => Failure::Full(error.to_string()),
            false => Failure::Fatal(error.to_string()),
        })
    };
    if !blocking {
        let result = store.commit(group);
        return (Some(store), judge(result));
    }
    let batches = std::mem::take(group);
    let joined = tokio::task::spawn_blocking(move || {
        let result = store.commit(&batches);
        (store, batches, result)
    })
    .await;
    match joined {
        Ok((store, batches, result)) => {
            *group = batches;
            (Some(store), judge(result))
        }
        Err(error) => (
            None,
            Err(Failure::Fatal(format!("the commit task failed: {error}"))),
        ),
    }
}
