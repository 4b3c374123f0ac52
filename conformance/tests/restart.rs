//! Persistence with real client libraries: rumqttc and paho-mqtt, MQTT 3.1.1 and 5.0, against
//! a broker that is stopped and started again on the same data directory. What the broker
//! acknowledged must be there afterwards: the persistent session, its subscription, the
//! messages queued for it, and a retained message.

use std::time::Duration;

use tern::net::Server;
use tern::store::RedbStore;
use tern_conformance::broker::Broker;
use tern_conformance::client::{ConnectOptions, Kind, Library, Message, Version};

/// A broker on `dir`'s store, on a fresh loopback port.
async fn start(dir: &std::path::Path) -> Server {
    let store = Box::new(RedbStore::open(dir).unwrap());
    Broker::start_with_store(store).await.unwrap().server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_keeps_what_it_acknowledged_for_every_client() {
    for library in [Library::Rumqttc, Library::Paho] {
        for version in [Version::V311, Version::V5] {
            let kind = Kind {
                library,
                version,
                net: tern_conformance::client::Net::Tcp,
            };
            restart_keeps_sessions_and_messages(kind).await;
        }
    }
}

async fn restart_keeps_sessions_and_messages(kind: Kind) {
    let dir = std::env::temp_dir().join(format!(
        "tern-restart-{}-{}",
        kind.slug(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let topic = format!("restart/{}", kind.slug());
    let sub_id = format!("{}-sub", kind.slug());

    let server = start(&dir).await;
    let addr = server.local_addrs()[0];
    let mut sub = kind
        .connect(addr, ConnectOptions::new(&sub_id).persistent())
        .await
        .unwrap();
    sub.subscribe(&topic, 1).await.unwrap();
    sub.disconnect().await.unwrap();
    let mut publisher = kind
        .connect(addr, ConnectOptions::new(format!("{}-pub", kind.slug())))
        .await
        .unwrap();
    for n in 0..20 {
        // Returns once the PUBACK (QoS 1) or PUBCOMP (QoS 2) has come.
        let qos = if n % 2 == 0 { 1 } else { 2 };
        publisher
            .publish(Message::new(&topic, format!("m{n}"), qos))
            .await
            .unwrap();
    }
    publisher
        .publish(Message::new(format!("{topic}/retained"), "kept", 1).retained())
        .await
        .unwrap();
    publisher.disconnect().await.unwrap();
    server.shutdown().await;

    let server = start(&dir).await;
    let addr = server.local_addrs()[0];
    let mut sub = kind
        .connect(addr, ConnectOptions::new(&sub_id).persistent())
        .await
        .unwrap();
    assert!(sub.session_present(), "{kind}: the session did not survive");
    let mut got = Vec::new();
    while let Some(m) = sub.recv(Duration::from_secs(5)).await {
        got.push(String::from_utf8(m.payload).unwrap());
        if got.len() == 20 {
            break;
        }
    }
    let expected: Vec<String> = (0..20).map(|n| format!("m{n}")).collect();
    assert_eq!(got, expected, "{kind}: queued messages after the restart");
    let mut late = kind
        .connect(addr, ConnectOptions::new(format!("{}-late", kind.slug())))
        .await
        .unwrap();
    late.subscribe(&format!("{topic}/retained"), 1)
        .await
        .unwrap();
    let retained = late.recv(Duration::from_secs(5)).await;
    assert!(
        retained.is_some_and(|m| m.retain && m.payload == b"kept"),
        "{kind}: the retained message did not survive"
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
