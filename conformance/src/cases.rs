//! The conformance cases, each written once against [`Client`] and run for every [`Kind`].
//!
//! Topics and client ids are prefixed with the kind and case, so every case of every kind can
//! run at the same time against one broker.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};

use crate::client::{BoxFuture, Client, ConnectOptions, Kind, Library, Message, Props};
use crate::proxy::Proxy;
use crate::raw::RawClient;

/// How long a case waits for a message that should come.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a case waits to be sure a message does not come.
const QUIET: Duration = Duration::from_millis(500);

/// What a case runs against.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    /// The broker with default configuration.
    pub broker: SocketAddr,
    /// A broker that refuses anonymous clients and knows user "alice" with password "secret".
    pub auth_broker: SocketAddr,
}

pub struct Case {
    pub name: &'static str,
    /// The spec statements the case checks (with the version it covers).
    pub spec: &'static str,
    /// MQTT 5 only.
    pub v5_only: bool,
    pub run: fn(Env, Kind) -> BoxFuture<'static, anyhow::Result<()>>,
}

pub const CASES: &[Case] = &[
    Case {
        name: "wildcard subscription (walkthrough 1)",
        spec: "[MQTT-3.3.2-3] [MQTT-4.7.1-3]",
        v5_only: false,
        run: |e, k| Box::pin(wildcards(e, k)),
    },
    Case {
        name: "retained message (walkthrough 2)",
        spec: "[MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-10]",
        v5_only: false,
        run: |e, k| Box::pin(retained(e, k)),
    },
    Case {
        name: "offline queue (walkthrough 3)",
        spec: "[MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2]",
        v5_only: false,
        run: |e, k| Box::pin(offline_queue(e, k)),
    },
    Case {
        name: "will on network loss (walkthrough 4)",
        spec: "[MQTT-3.1.2-8] [MQTT-3.1.2-17] [MQTT-3.1.2-24]",
        v5_only: false,
        run: |e, k| Box::pin(will_on_network_loss(e, k)),
    },
    Case {
        name: "QoS 0/1/2 round trips, 0 B to 1 MiB",
        spec: "[MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1]",
        v5_only: false,
        run: |e, k| Box::pin(round_trips(e, k)),
    },
    Case {
        name: "in-flight QoS 1/2 resumed after network loss",
        spec: "[MQTT-4.4.0-1] [MQTT-4.3.3-2]",
        v5_only: false,
        run: |e, k| Box::pin(inflight_resumed(e, k)),
    },
    Case {
        name: "keep alive",
        spec: "[MQTT-3.1.2-23] [MQTT-3.1.2-24]",
        v5_only: false,
        run: |e, k| Box::pin(keep_alive(e, k)),
    },
    Case {
        name: "session takeover",
        spec: "[MQTT-3.1.4-2]",
        v5_only: false,
        run: |e, k| Box::pin(takeover(e, k)),
    },
    Case {
        name: "unsubscribe",
        spec: "[MQTT-3.10.4-2] [MQTT-3.10.4-4]",
        v5_only: false,
        run: |e, k| Box::pin(unsubscribe(e, k)),
    },
    Case {
        name: "refused CONNECT",
        spec: "[MQTT-3.2.2-4] [MQTT-3.2.2-5] [MQTT-3.1.2-2]",
        v5_only: false,
        run: |e, k| Box::pin(refused_connect(e, k)),
    },
    Case {
        name: "v5 properties end to end",
        spec: "[MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]",
        v5_only: true,
        run: |e, k| Box::pin(v5_properties(e, k)),
    },
];

fn id(kind: Kind, what: &str) -> String {
    format!("{}-{what}", kind.slug())
}

fn topic(kind: Kind, what: &str) -> String {
    format!("conformance/{}/{what}", kind.slug())
}

async fn connect(env: Env, kind: Kind, client_id: &str) -> anyhow::Result<Box<dyn Client>> {
    kind.connect(env.broker, ConnectOptions::new(client_id))
        .await
}

async fn expect(client: &mut dyn Client, payload: &[u8]) -> anyhow::Result<Message> {
    let message = client
        .recv(PATIENCE)
        .await
        .with_context(|| format!("expected {:?}", String::from_utf8_lossy(payload)))?;
    ensure!(
        message.payload == payload,
        "expected {:?}, got {:?}",
        String::from_utf8_lossy(payload),
        String::from_utf8_lossy(&message.payload)
    );
    Ok(message)
}

async fn expect_nothing(client: &mut dyn Client) -> anyhow::Result<()> {
    if let Some(message) = client.recv(QUIET).await {
        bail!("expected nothing, got {message:?}");
    }
    Ok(())
}

async fn wildcards(env: Env, kind: Kind) -> anyhow::Result<()> {
    let mut sub = connect(env, kind, &id(kind, "w-sub")).await?;
    sub.subscribe(&topic(kind, "sensor/+/temperature"), 0)
        .await?;
    let mut p1 = connect(env, kind, &id(kind, "w-p1")).await?;
    let mut p2 = connect(env, kind, &id(kind, "w-p2")).await?;
    p1.publish(Message::new(
        topic(kind, "sensor/1/temperature"),
        r#"{"msg": "17.2"}"#,
        0,
    ))
    .await?;
    expect(sub.as_mut(), br#"{"msg": "17.2"}"#).await?;
    p2.publish(Message::new(
        topic(kind, "sensor/2/temperature"),
        r#"{"msg": "18.2"}"#,
        0,
    ))
    .await?;
    expect(sub.as_mut(), br#"{"msg": "18.2"}"#).await?;
    p2.publish(Message::new(topic(kind, "sensor/2/humidity"), "40", 0))
        .await?;
    expect_nothing(sub.as_mut()).await?;
    for c in [sub, p1, p2] {
        c.disconnect().await?;
    }
    Ok(())
}

async fn retained(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "retained_message");
    let mut p = connect(env, kind, &id(kind, "r-pub")).await?;
    p.publish(Message::new(&t, "first", 1).retained()).await?;
    p.publish(Message::new(&t, "second", 1).retained()).await?;
    let mut late = connect(env, kind, &id(kind, "r-late")).await?;
    late.subscribe(&t, 1).await?;
    let got = expect(late.as_mut(), b"second").await?;
    ensure!(
        got.retain,
        "a retained message sent on subscribe has RETAIN set"
    );
    expect_nothing(late.as_mut()).await?;
    // An empty retained message clears it.
    p.publish(Message::new(&t, "", 1).retained()).await?;
    expect(late.as_mut(), b"").await?;
    let mut later = connect(env, kind, &id(kind, "r-later")).await?;
    later.subscribe(&t, 1).await?;
    expect_nothing(later.as_mut()).await?;
    for c in [p, late, later] {
        c.disconnect().await?;
    }
    Ok(())
}

async fn offline_queue(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "clean_session_false");
    let options = ConnectOptions::new(id(kind, "q-sub")).persistent();
    let mut sub = kind.connect(env.broker, options.clone()).await?;
    sub.subscribe(&t, 1).await?;
    sub.disconnect().await?;
    let mut p = connect(env, kind, &id(kind, "q-pub")).await?;
    for text in ["one", "two", "three"] {
        p.publish(Message::new(&t, text, 1)).await?;
    }
    let mut sub = kind.connect(env.broker, options).await?;
    ensure!(sub.session_present(), "session present after reconnect");
    for text in ["one", "two", "three"] {
        expect(sub.as_mut(), text.as_bytes()).await?;
    }
    sub.disconnect().await?;
    p.disconnect().await
}

async fn will_on_network_loss(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "last_will");
    let mut watcher = connect(env, kind, &id(kind, "will-watch")).await?;
    watcher.subscribe(&t, 1).await?;
    let proxy = Proxy::start(env.broker).await?;
    let mut options = ConnectOptions::new(id(kind, "will-device"));
    options.keep_alive = Duration::from_secs(5);
    options.will = Some(Message::new(&t, "offline", 1).retained());
    let _device = kind.connect(proxy.addr, options).await?;
    // The device's network vanishes: no FIN, no DISCONNECT, nothing at all.
    proxy.stall();
    let got = watcher
        .recv(Duration::from_secs(10))
        .await
        .context("will within 1.5x keep alive")?;
    ensure!(
        got.payload == b"offline" && got.topic == t,
        "unexpected {got:?}"
    );
    let mut late = connect(env, kind, &id(kind, "will-late")).await?;
    late.subscribe(&t, 1).await?;
    let retained = expect(late.as_mut(), b"offline").await?;
    ensure!(retained.retain);
    watcher.disconnect().await?;
    late.disconnect().await
}

async fn round_trips(env: Env, kind: Kind) -> anyhow::Result<()> {
    let mut sub = connect(env, kind, &id(kind, "rt-sub")).await?;
    let mut publisher = connect(env, kind, &id(kind, "rt-pub")).await?;
    for qos in 0..=2u8 {
        let t = topic(kind, &format!("qos{qos}"));
        sub.subscribe(&t, qos).await?;
        for size in [0usize, 1024, 1024 * 1024] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            publisher
                .publish(Message::new(&t, payload.clone(), qos))
                .await?;
            let got = sub
                .recv(PATIENCE)
                .await
                .with_context(|| format!("QoS {qos}, {size} B"))?;
            ensure!(got.qos == qos, "QoS {qos} delivered as {}", got.qos);
            ensure!(
                got.payload == payload,
                "QoS {qos}, {size} B payload changed"
            );
        }
    }
    sub.disconnect().await?;
    publisher.disconnect().await
}

async fn inflight_resumed(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "inflight");
    let proxy = Proxy::start(env.broker).await?;
    let options = ConnectOptions::new(id(kind, "if-sub")).persistent();
    let mut sub = kind.connect(proxy.addr, options.clone()).await?;
    sub.subscribe(&t, 2).await?;
    // The network fails: the broker's PUBLISHes go nowhere and are never acknowledged.
    proxy.stall();
    let mut p = connect(env, kind, &id(kind, "if-pub")).await?;
    p.publish(Message::new(&t, "q1", 1)).await?;
    p.publish(Message::new(&t, "q2", 2)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.sever();
    drop(sub);
    let mut sub = kind.connect(env.broker, options).await?;
    ensure!(sub.session_present());
    let mut got = Vec::new();
    while let Some(m) = sub.recv(Duration::from_secs(2)).await {
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    ensure!(
        got.iter().filter(|g| *g == "q1").count() >= 1,
        "QoS 1 delivered at least once: {got:?}"
    );
    ensure!(
        got.iter().filter(|g| *g == "q2").count() == 1,
        "QoS 2 delivered exactly once: {got:?}"
    );
    sub.disconnect().await?;
    p.disconnect().await
}

async fn keep_alive(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "keep_alive");
    let mut options = ConnectOptions::new(id(kind, "ka"));
    options.keep_alive = Duration::from_secs(5);
    let mut client = kind.connect(env.broker, options).await?;
    client.subscribe(&t, 1).await?;
    // Idle for longer than 1.5x the keep alive: the library's PINGREQs keep it connected.
    if let Some(m) = client.recv(Duration::from_secs(8)).await {
        bail!("unexpected {m:?}");
    }
    let mut p = connect(env, kind, &id(kind, "ka-pub")).await?;
    p.publish(Message::new(&t, "still here", 1)).await?;
    expect(client.as_mut(), b"still here").await?;
    client.disconnect().await?;
    p.disconnect().await
}

async fn takeover(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "takeover");
    let mut first = connect(env, kind, &id(kind, "to")).await?;
    first.subscribe(&t, 1).await?;
    let mut second = connect(env, kind, &id(kind, "to")).await?;
    ensure!(
        first.closed_by_broker(PATIENCE).await,
        "the first connection is closed"
    );
    second.subscribe(&t, 1).await?;
    let mut p = connect(env, kind, &id(kind, "to-pub")).await?;
    p.publish(Message::new(&t, "to the new one", 1)).await?;
    expect(second.as_mut(), b"to the new one").await?;
    second.disconnect().await?;
    p.disconnect().await
}

async fn unsubscribe(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "unsubscribe");
    let mut sub = connect(env, kind, &id(kind, "u-sub")).await?;
    let mut p = connect(env, kind, &id(kind, "u-pub")).await?;
    sub.subscribe(&t, 1).await?;
    p.publish(Message::new(&t, "before", 1)).await?;
    expect(sub.as_mut(), b"before").await?;
    sub.unsubscribe(&t).await?;
    p.publish(Message::new(&t, "after", 1)).await?;
    expect_nothing(sub.as_mut()).await?;
    sub.disconnect().await?;
    p.disconnect().await
}

async fn refused_connect(env: Env, kind: Kind) -> anyhow::Result<()> {
    if kind.library == Library::Raw {
        // Only a raw client can send a protocol level no broker speaks: CONNECT "MQTT" level 9.
        let mut raw = RawClient::open(env.broker, tern::codec::ProtocolVersion::V3_1_1).await;
        raw.send_raw(&[
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x3C, 0x00, 0x01,
            b'x',
        ])
        .await;
        match raw.recv_within(PATIENCE).await {
            // spec: [MQTT-3.1.2-2] (3.1.1: return code 0x01, then close)
            Ok(Some(tern::codec::Packet::ConnAck(ack))) => {
                ensure!(ack.reason_code.to_v3_connack() == 1)
            }
            other => bail!("expected CONNACK 0x01, got {other:?}"),
        }
        ensure!(
            matches!(raw.recv_within(PATIENCE).await, Ok(None)),
            "closed after the refusal"
        );
    }
    let mut options = ConnectOptions::new(id(kind, "refused"));
    options.credentials = Some(("alice".into(), "wrong".into()));
    ensure!(
        kind.connect(env.auth_broker, options.clone())
            .await
            .is_err(),
        "a bad password is refused"
    );
    options.credentials = Some(("alice".into(), "secret".into()));
    let client = kind
        .connect(env.auth_broker, options)
        .await
        .context("the right password is accepted")?;
    client.disconnect().await
}

async fn v5_properties(env: Env, kind: Kind) -> anyhow::Result<()> {
    let t = topic(kind, "properties");
    let mut sub = connect(env, kind, &id(kind, "p-sub")).await?;
    sub.subscribe(&t, 1).await?;
    let mut p = connect(env, kind, &id(kind, "p-pub")).await?;
    let props = Props {
        user: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
        response_topic: Some(topic(kind, "reply")),
        correlation_data: Some(vec![0, 1, 2, 0xFF]),
        content_type: Some("application/json".into()),
    };
    let mut message = Message::new(&t, "{}", 1);
    message.props = props.clone();
    p.publish(message).await?;
    let got = expect(sub.as_mut(), b"{}").await?;
    ensure!(
        got.props == props,
        "properties changed: sent {props:?}, got {:?}",
        got.props
    );
    sub.disconnect().await?;
    p.disconnect().await
}
