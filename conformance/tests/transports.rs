//! Every client kind connects over its transport and gets a message through: the quick
//! check that the TLS and WebSocket listeners work before the matrix runs its cases on them.

use std::time::Duration;

use tern_conformance::broker::Broker;
use tern_conformance::client::{ConnectOptions, Kind, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_round_trips_a_message_over_its_transport() {
    let broker = Broker::start(tern::core::Config::default()).await.unwrap();
    let mut failures = Vec::new();
    for kind in Kind::ALL {
        let result = tokio::time::timeout(Duration::from_secs(20), async {
            let topic = format!("transports/{}", kind.slug());
            let mut client = kind
                .connect(
                    broker.addr,
                    ConnectOptions::new(format!("{}-t", kind.slug())),
                )
                .await?;
            client.subscribe(&topic, 1).await?;
            client.publish(Message::new(&topic, "hello", 1)).await?;
            let got = client.recv(Duration::from_secs(5)).await;
            anyhow::ensure!(
                got.as_ref().is_some_and(|m| m.payload == b"hello"),
                "got {got:?}"
            );
            client.disconnect().await
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(format!("{kind}: {error:#}")),
            Err(_) => failures.push(format!("{kind}: timed out")),
        }
    }
    broker.server.shutdown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
