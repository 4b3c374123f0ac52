//! The durability promise on the real binary with a real client library: rumqttc publishes
//! QoS 1 messages for a persistent subscriber and waits for each PUBACK, tern is killed with
//! SIGKILL, started again on the same data directory, and the subscriber (rumqttc, clean
//! session 0) gets its session back with every message.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(port: u16, data_dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tern")
}

/// A rumqttc client whose CONNACK came (retrying while tern starts); the session-present flag.
async fn connect(port: u16, id: &str, clean: bool) -> (AsyncClient, EventLoop, bool) {
    for _ in 0..100 {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_clean_session(clean)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    return (client, eventloop, ack.session_present)
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tern did not accept {id}");
}

/// Polls until `want` says an event is the one awaited.
async fn until(eventloop: &mut EventLoop, mut want: impl FnMut(&Incoming) -> bool) {
    let wait = async {
        loop {
            if let Event::Incoming(incoming) = eventloop.poll().await.expect("connected") {
                if want(&incoming) {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_finds_every_acknowledged_message_after_sigkill() {
    let data = std::env::temp_dir().join(format!("tern-data-rumqttc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = free_port();
    let mut tern = spawn(port, &data);

    let (sub, mut sub_events, _) = connect(port, "rumqttc-sub", false).await;
    sub.subscribe("k/#", QoS::AtLeastOnce).await.unwrap();
    until(&mut sub_events, |i| matches!(i, Incoming::SubAck(_))).await;
    sub.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), sub_events.poll()).await;

    let (publisher, mut pub_events, _) = connect(port, "rumqttc-pub", true).await;
    for n in 0..20 {
        publisher
            .publish(format!("k/{n}"), QoS::AtLeastOnce, false, format!("m{n}"))
            .await
            .unwrap();
        until(&mut pub_events, |i| matches!(i, Incoming::PubAck(_))).await;
    }
    tern.kill().unwrap();
    tern.wait().unwrap();

    let mut tern = spawn(port, &data);
    let (_sub, mut sub_events, present) = connect(port, "rumqttc-sub", false).await;
    assert!(present, "the persistent session did not survive SIGKILL");
    let mut got = Vec::new();
    until(&mut sub_events, |i| {
        if let Incoming::Publish(p) = i {
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
        got.len() == 20
    })
    .await;
    let expected: Vec<String> = (0..20).map(|n| format!("m{n}")).collect();
    assert_eq!(got, expected);
    tern.kill().unwrap();
    tern.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
