//! The task that owns the store: it commits the core's `Persist` batches and reports them
//! durable (see `core/durable.rs`).
//!
//! Group commit: it takes every batch waiting in its channel and commits them as one
//! transaction with one fsync, then reports the highest. Idle, a batch waits one fsync; under
//! load, one fsync covers everything that arrived during the previous one. The broker task
//! bounds how many batches may wait (`PENDING_BATCHES_MAX`). A failed commit is fatal: the
//! task reports the error and ends, the broker stops serving, and what was not reported
//! durable was never acknowledged (the next start recovers from the store).

use tokio::sync::{mpsc, oneshot, watch};

use crate::core::StoreOp;
use crate::store::Store;

/// How many batches one commit takes at most, so one commit's latency stays bounded.
const BATCHES_PER_COMMIT_MAX: usize = 4096;

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
}

impl StorageTask {
    pub async fn run(mut self) {
        let mut store = Some(self.store);
        let mut group = Vec::new();
        while let Some((mut last, ops)) = self.batches.recv().await {
            group.push(ops);
            while group.len() < BATCHES_PER_COMMIT_MAX {
                let Ok((batch, ops)) = self.batches.try_recv() else {
                    break;
                };
                last = batch;
                group.push(ops);
            }
            let taken = store
                .take()
                .expect("the store is put back after each commit");
            let group = std::mem::take(&mut group);
            match commit(taken, group, self.blocking_commits).await {
                Ok(back) => store = Some(back),
                Err(error) => {
                    tracing::error!(%error, "store commit failed: stopping");
                    let _ = self.failed.send(error);
                    return;
                }
            }
            self.durable.send_replace(last);
        }
    }
}

/// Commits `group`, on the blocking pool or here; gives the store back, or says why not.
async fn commit(
    mut store: Box<dyn Store>,
    group: Vec<Vec<StoreOp>>,
    blocking: bool,
) -> Result<Box<dyn Store>, String> {
    if !blocking {
        return match store.commit(&group) {
            Ok(()) => Ok(store),
            Err(error) => Err(error.to_string()),
        };
    }
    let joined = tokio::task::spawn_blocking(move || {
        let result = store.commit(&group);
        (store, result)
    })
    .await;
    match joined {
        Ok((store, Ok(()))) => Ok(store),
        Ok((_, Err(error))) => Err(error.to_string()),
        Err(error) => Err(format!("the commit task failed: {error}")),
    }
}
