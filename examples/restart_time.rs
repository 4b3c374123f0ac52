//! How long a restart takes with a large store, and how many bytes each stored item costs.
//!
//! Writes a store of N persistent sessions (one subscription each, one queued QoS 1 message
//! each) and M retained messages (64-byte payloads) in batches of 10,000 ops, then measures
//! what a restart does: open the database, load it, rebuild the broker from it.
//!
//! ```sh
//! cargo run --release --example restart_time -- 100000 1000000
//! ```

// A benchmark measures wall-clock time; the clock ban is for the broker.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use bytes::Bytes;
use tern::codec::{ByteStr, Properties, ProtocolVersion, SubscriptionOptions};
use tern::core::{Broker, Config, EntryRecord, EntryState, SessionRecord, StoreOp, StoredMessage};
use tern::store::{RedbStore, Store, DATABASE_FILE};
use tern::types::QoS;

const BATCH_OPS: usize = 10_000;
const WALL_MS: u64 = 1_700_000_000_000;

fn s(text: &str) -> ByteStr {
    ByteStr::new(text).expect("valid")
}

fn message(topic: &str) -> StoredMessage {
    StoredMessage {
        topic: s(topic),
        payload: Bytes::from(vec![b'x'; 64]),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::new(),
        publisher: s("bench"),
        expires_at: None,
    }
}

fn commit_in_batches(store: &mut RedbStore, ops: impl Iterator<Item = StoreOp>) {
    let mut batch = Vec::with_capacity(BATCH_OPS);
    for op in ops {
        batch.push(op);
        if batch.len() == BATCH_OPS {
            store.commit(&[std::mem::take(&mut batch)]).expect("commit");
        }
    }
    if !batch.is_empty() {
        store.commit(&[batch]).expect("commit");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir, sessions, retained] = &args[..] {
        if flag == "--write-and-die" {
            let (sessions, retained) = (sessions.parse().unwrap(), retained.parse().unwrap());
            let store = write(std::path::Path::new(dir), sessions, retained);
            // No destructors: the store is left as a crash leaves it.
            std::mem::forget(store);
            std::process::exit(0);
        }
    }
    let sessions: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let retained: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("tern-restart-time-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    drop(write(&dir, sessions, retained));
    println!("after a clean close:");
    restart(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--write-and-die", dir.to_str().unwrap()])
        .args([sessions.to_string(), retained.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    println!("after the writer died without closing the store:");
    restart(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

fn write(dir: &std::path::Path, sessions: usize, retained: usize) -> RedbStore {
    let started = Instant::now();
    let mut store = RedbStore::open(dir).expect("open");
    commit_in_batches(
        &mut store,
        (0..sessions).flat_map(|n| {
            let client_id = s(&format!("client-{n:06}"));
            let record = SessionRecord {
                client_id: client_id.clone(),
                version: ProtocolVersion::V3_1_1,
                expiry_secs: u32::MAX,
                expires_at: Some(WALL_MS + 3_600_000),
                subscriptions: vec![(
                    s(&format!("devices/{n}/cmd")),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                    None,
                )],
                pending_will: None,
                login: Default::default(),
            };
            let entry = EntryRecord {
                message: message(&format!("devices/{n}/cmd")),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
                state: EntryState::Queued,
            };
            [
                StoreOp::PutSession(record),
                StoreOp::PutEntry {
                    client_id,
                    key: 0,
                    entry,
                },
            ]
        }),
    );
    let sessions_written = started.elapsed();
    let file = dir.join(DATABASE_FILE);
    let after_sessions = std::fs::metadata(&file).map_or(0, |m| m.len());
    commit_in_batches(
        &mut store,
        (0..retained)
            .map(|n| StoreOp::PutRetained(message(&format!("sensors/{}/{}", n / 1000, n % 1000)))),
    );
    let written = started.elapsed();
    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
    println!(
        "wrote {sessions} sessions (one subscription, one queued message each) in {sessions_written:.1?} and {retained} retained messages, {written:.1?} in all: {bytes} bytes"
    );
    println!(
        "bytes per session with its message: {:.0}; per retained message (64-byte payload): {:.0}",
        after_sessions as f64 / sessions.max(1) as f64,
        (bytes - after_sessions) as f64 / retained.max(1) as f64
    );

    store
}

fn restart(dir: &std::path::Path) {
    let restart = Instant::now();
    let mut store = RedbStore::open(dir).expect("open");
    let opened = restart.elapsed();
    let snapshot = store.load().expect("load");
    let loaded = restart.elapsed();
    let mut config = Config::default();
    config.limits.sessions_max = 10_000_000;
    config.limits.retained_messages_max = 100_000_000;
    let mut broker = Broker::new(config);
    broker.restore(snapshot, WALL_MS, tern::core::Instant::ZERO);
    let restored = restart.elapsed();
    println!(
        "restart: open {opened:.2?}, load {:.2?}, restore {:.2?}: {restored:.2?} in all ({} sessions, {} retained)",
        loaded - opened,
        restored - loaded,
        broker.session_count(),
        broker.retained_count()
    );
}
