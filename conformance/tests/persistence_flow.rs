//! How the driver and the core treat clients while the store commits, over real TCP: no
//! acknowledgement leaves before its commit, and a client that pipelines more requests than
//! its outbound queue holds is paused while its replies wait for the store, never cut off.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tern::codec::*;
use tern::core::{Snapshot, StoreOp};
use tern::net::Server;
use tern::store::{MemoryStore, Store, StoreError};
use tern::types::QoS;
use tern_conformance::broker::Broker;
use tern_conformance::raw::{connect_packet, publish, RawClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

/// A store whose commits wait until the test opens the gate (or take `delay` each).
struct GatedStore {
    inner: MemoryStore,
    gate: Arc<(Mutex<bool>, Condvar)>,
    delay: Duration,
}

impl Store for GatedStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn commit(&mut self, batches: &[Vec<StoreOp>]) -> Result<(), StoreError> {
        let (open, changed) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = changed.wait(open).unwrap();
        }
        std::thread::sleep(self.delay);
        self.inner.commit(batches)
    }
}

async fn start(gate: Arc<(Mutex<bool>, Condvar)>, delay: Duration) -> Server {
    let store = GatedStore {
        inner: MemoryStore::default(),
        gate,
        delay,
    };
    Broker::start_with_store(Box::new(store))
        .await
        .unwrap()
        .server
}

fn open(gate: &(Mutex<bool>, Condvar), is_open: bool) {
    *gate.0.lock().unwrap() = is_open;
    gate.1.notify_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledgement_leaves_before_its_commit() {
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let server = start(gate.clone(), Duration::ZERO).await;
    let addr = server.local_addrs()[0];
    let mut sub = RawClient::connected(addr, connect_packet(V3, "sub", false)).await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connected(addr, connect_packet(V3, "pub", true)).await;
    open(&gate, false);
    publisher
        .send(publish("t", b"m", QoS::AtLeastOnce, 1, false))
        .await;
    let early = publisher.recv_within(Duration::from_millis(500)).await;
    assert!(
        matches!(early, Err(())),
        "a reply before the commit: {early:?}"
    );
    open(&gate, true);
    match publisher.recv_within(Duration::from_secs(5)).await {
        Ok(Some(Packet::PubAck(ack))) => assert_eq!(ack.packet_id.get(), 1),
        other => panic!("expected the PUBACK once committed, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_publisher_is_paused_by_a_slow_store_not_cut_off() {
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let server = start(gate, Duration::from_millis(20)).await;
    let addr = server.local_addrs()[0];
    let mut sub = RawClient::connected(addr, connect_packet(V3, "sub", false)).await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    drop(sub);
    // Three times the outbound queue (1024) of QoS 1 PUBLISHes in one write, none of whose
    // PUBACKs can leave before a 20 ms commit.
    let count: u16 = 3000;
    let publisher = RawClient::connected(addr, connect_packet(V3, "pub", true)).await;
    let (mut stream, mut buf) = publisher.into_parts();
    let mut out = BytesMut::new();
    for id in 1..=count {
        encode(
            &publish("t", b"m", QoS::AtLeastOnce, id, false),
            V3,
            &mut out,
        )
        .unwrap();
    }
    let (mut reader, mut writer) = stream.split();
    let write = async { writer.write_all(&out).await.unwrap() };
    let read = async {
        let mut acks = 0;
        while acks < count {
            while let Some(packet) = decode(&mut buf, V3, PACKET_BYTES_MAX).unwrap() {
                assert!(matches!(packet, Packet::PubAck(_)), "{packet:?}");
                acks += 1;
            }
            if acks == count {
                break;
            }
            let read = tokio::time::timeout(Duration::from_secs(20), reader.read_buf(&mut buf));
            let n = read.await.expect("PUBACKs keep coming").unwrap();
            assert!(
                n > 0,
                "the broker closed the publisher after {acks} PUBACKs"
            );
        }
        acks
    };
    let ((), acks) = tokio::join!(write, read);
    assert_eq!(acks, count);
    let stats = server.shutdown().await;
    assert_eq!(stats.slow_consumers_disconnected, 0);
}
