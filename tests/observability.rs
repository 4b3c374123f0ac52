//! What an operator sees, checked with tools an operator uses: `/metrics` fetched by a real
//! HTTP client (ureq) and read by an independent Prometheus text-format parser
//! (prometheus-parse); the `$SYS` tree read by a real MQTT client (rumqttc). Both must move
//! with the traffic, and agree with what the clients did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tern::core::Config;
use tern::net::{Endpoint, Persistence, Server};
use tern::store::RedbStore;

const MESSAGES: usize = 5;

/// A broker on loopback with a store in `dir`, `$SYS` every `sys_interval`, and `/metrics`.
async fn start(dir: &std::path::Path, sys_interval: Duration) -> (Server, SocketAddr, SocketAddr) {
    let _ = std::fs::remove_dir_all(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config {
        sys_interval,
        ..Config::default()
    };
    let persistence = Persistence {
        store: Box::new(RedbStore::open(dir).unwrap()),
        wall_clock_ms: 1_700_000_000_000,
        blocking_commits: true,
    };
    let mut server = Server::start_with_store(
        vec![Endpoint::plain(listener)],
        config,
        Box::new(tern::auth::OsEntropy),
        Some(persistence),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let metrics_addr = server.serve_metrics(metrics).unwrap();
    (server, addr, metrics_addr)
}

fn client(addr: SocketAddr, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(clean);
    AsyncClient::new(options, 100)
}

/// Polls `events` until `done` says so (or 10 s pass: the test fails).
async fn poll_until(events: &mut EventLoop, mut done: impl FnMut(&Event) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.poll().await.expect("the connection holds");
            if done(&event) {
                return;
            }
        }
    })
    .await
    .expect("within 10 s");
}

/// `MESSAGES` QoS 1 messages from a publisher to a persistent subscriber, all received.
async fn traffic(addr: SocketAddr) -> (AsyncClient, EventLoop) {
    let (subscriber, mut sub_events) = client(addr, "watcher-sub", false);
    subscriber
        .subscribe("plant/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut sub_events, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await;
    let (publisher, mut pub_events) = client(addr, "watcher-pub", true);
    for n in 0..MESSAGES {
        publisher
            .publish(
                "plant/line1",
                QoS::AtLeastOnce,
                false,
                format!("reading {n}"),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    poll_until(&mut pub_events, |e| {
        acked += usize::from(matches!(e, Event::Incoming(Packet::PubAck(_))));
        acked == MESSAGES
    })
    .await;
    let mut received = 0;
    poll_until(&mut sub_events, |e| {
        received += usize::from(matches!(e, Event::Incoming(Packet::Publish(_))));
        received == MESSAGES
    })
    .await;
    // The publisher stays connected: two clients are connected while the counters are read.
    tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    (subscriber, sub_events)
}

/// GET `path` with ureq (blocking, off the runtime's threads): status, content type, body.
async fn get(metrics: SocketAddr, path: &str) -> (u16, String, String) {
    let url = format!("http://{metrics}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut response = agent
            .get(&url)
            .call()
            .expect("the metrics listener answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.body_mut().read_to_string().unwrap();
        (status, content_type, body)
    })
    .await
    .unwrap()
}

/// The value of `metric` with exactly `labels`, from a parsed scrape.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {metric}{labels:?} in the scrape"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{metric} is not a number: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_that_counts_what_clients_did() {
    let dir = std::env::temp_dir().join(format!("tern-metrics-{}", std::process::id()));
    let (server, addr, metrics) = start(&dir, Duration::ZERO).await;
    let (_subscriber, _sub_events) = traffic(addr).await;

    let (status, content_type, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let n = MESSAGES as f64;
    assert_eq!(
        value(&scrape, "tern_messages_received_total", &[("qos", "1")]),
        n
    );
    assert_eq!(
        value(&scrape, "tern_messages_received_total", &[("qos", "0")]),
        0.0
    );
    assert_eq!(
        value(&scrape, "tern_messages_sent_total", &[("qos", "1")]),
        n
    );
    assert_eq!(value(&scrape, "tern_deliveries_total", &[]), n);
    assert_eq!(value(&scrape, "tern_clients_connected", &[]), 2.0);
    assert_eq!(value(&scrape, "tern_sessions", &[]), 2.0);
    assert_eq!(value(&scrape, "tern_subscriptions", &[]), 1.0);
    assert_eq!(value(&scrape, "tern_connections_accepted_total", &[]), 2.0);
    let bytes = "reading 0".len() as f64 * n;
    assert_eq!(
        value(&scrape, "tern_publish_received_bytes_total", &[]),
        bytes
    );
    let listener = format!("mqtt://{addr}");
    let on_listener = [("listener", listener.as_str())];
    assert_eq!(
        value(&scrape, "tern_listener_open_sockets", &on_listener),
        2.0
    );
    assert!(value(&scrape, "tern_received_bytes_total", &on_listener) > bytes);
    assert!(value(&scrape, "tern_sent_bytes_total", &on_listener) > bytes);
    for reason in ["queue_full", "memory", "expired", "session_ended"] {
        let dropped = value(
            &scrape,
            "tern_messages_dropped_total",
            &[("reason", reason)],
        );
        assert_eq!(dropped, 0.0, "{reason}");
    }
    // The persistent subscription and each QoS 1 message went through the store.
    let commits = scrape
        .samples
        .iter()
        .find(|s| s.metric == "tern_store_commit_duration_seconds")
        .expect("the commit histogram");
    let prometheus_parse::Value::Histogram(buckets) = &commits.value else {
        panic!("not a histogram: {:?}", commits.value);
    };
    let infinite = buckets.last().expect("buckets");
    assert!(infinite.less_than.is_infinite());
    assert!(infinite.count >= 1.0, "{buckets:?}");
    // Every metric the README lists is in the scrape, and the other way round.
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in tern::metrics::prometheus::names() {
        let base = name.as_str();
        assert!(
            names.contains(base) || names.iter().any(|n| n.starts_with(&format!("{base}_"))),
            "{name} is not in the scrape"
        );
    }

    let (status, _, _) = get(metrics, "/").await;
    assert_eq!(status, 404);
    let snapshot = server.probe().snapshot().await.unwrap();
    assert_eq!(snapshot.core.unaccounted_deliveries(), 0, "{snapshot:#?}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// spec: [MQTT-4.7.2-1]: `#` never matches a `$SYS` topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_move_with_traffic_and_never_reach_hash_subscribers() {
    let dir = std::env::temp_dir().join(format!("tern-sys-{}", std::process::id()));
    let (server, addr, _) = start(&dir, Duration::from_millis(200)).await;
    // A client subscribed to everything, polled by a task of its own from the start.
    let (everything, mut everything_events) = client(addr, "hash", true);
    everything.subscribe("#", QoS::AtMostOnce).await.unwrap();
    let (subscribed, is_subscribed) = tokio::sync::oneshot::channel();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let collector = {
        let seen = seen.clone();
        let mut subscribed = Some(subscribed);
        tokio::spawn(async move {
            while let Ok(event) = everything_events.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        let _ = subscribed.take().map(|s| s.send(()));
                    }
                    Event::Incoming(Packet::Publish(p)) => seen.lock().unwrap().push(p.topic),
                    _ => {}
                }
            }
        })
    };
    is_subscribed.await.unwrap();
    let (watcher, mut watcher_events) = client(addr, "sys-watcher", true);
    watcher.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();
    let mut sys: BTreeMap<String, String> = BTreeMap::new();
    let received = "$SYS/broker/publish/messages/received";
    // The retained values arrive at once: the version, and nothing received yet.
    poll_until(&mut watcher_events, |e| {
        if let Event::Incoming(Packet::Publish(p)) = e {
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            sys.insert(p.topic.clone(), payload);
        }
        sys.contains_key("$SYS/broker/version") && sys.contains_key(received)
    })
    .await;
    assert!(sys["$SYS/broker/version"].starts_with("tern version "));
    assert_eq!(sys[received], "0");
    let (_subscriber, _sub_events) = traffic(addr).await;
    poll_until(&mut watcher_events, |e| {
        if let Event::Incoming(Packet::Publish(p)) = e {
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            sys.insert(p.topic.clone(), payload);
        }
        let value = |topic: &str| sys.get(topic).map(String::as_str);
        // Values of one interval arrive one by one: wait for all three.
        value(received) == Some("5")
            && value("$SYS/broker/clients/connected") == Some("4")
            && value("$SYS/broker/bytes/received").is_some_and(|b| b != "0")
    })
    .await;
    assert!(sys["$SYS/broker/uptime"].ends_with(" seconds"));
    // The `#` subscriber gets the five plant messages, and, three more intervals on, still no
    // `$SYS` topic at all.
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen.lock().unwrap().len() < MESSAGES {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the # subscriber got the messages");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let topics = seen.lock().unwrap().clone();
    collector.abort();
    assert!(topics.iter().all(|t| !t.starts_with('$')), "{topics:?}");
    assert_eq!(topics.len(), MESSAGES, "{topics:?}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's tables name every metric and every `$SYS` topic the broker serves.
#[test]
fn the_readme_lists_every_metric_and_sys_topic() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for name in tern::metrics::prometheus::names() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in the README"
        );
    }
    for topic in tern::metrics::sys::topics() {
        let name = topic.strip_prefix("$SYS/broker/").unwrap();
        // The load rows name their series literally, or as the brace product of one row.
        let series = name
            .strip_prefix("load/")
            .and_then(|load| load.rsplit_once('/'))
            .map(|(series, _)| series);
        let listed = match series {
            Some(series) => {
                let product = ["messages", "publish", "bytes"]
                    .iter()
                    .flat_map(|kind| ["received", "sent"].map(|dir| format!("{kind}/{dir}")))
                    .any(|one| one == series);
                readme.contains(&format!("`load/{series}/...`"))
                    || product
                        && readme.contains(
                            "`load/{messages,publish,bytes}/{received,sent}/{1min,5min,15min}`",
                        )
            }
            None => readme.contains(&format!("`{name}`")),
        };
        assert!(listed, "{topic} is not in the README");
    }
}
