//! The four shapes of load, wired from publishers, subscribers and ledgers: fan-in (many
//! publishers, one subscriber), fan-out (one publisher, many subscribers), point-to-point
//! (pairs on topics of their own) and idle connections (memory per connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tern::codec::{Packet, Properties, ProtocolVersion, Subscribe, SubscriptionOptions};
use tern::types::{PacketId, QoS};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{connect, mqtt_string, Login, Reader, Writer};
use crate::ledger::{SeqSet, Verdict};
use crate::procstat;
use crate::progress::Progress;
use crate::publisher::{self, Published, PublisherSpec};
use crate::report::{latency_histogram, Report};
use crate::subscriber::{self, Received, SubscriberSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    FanIn { publishers: u32 },
    FanOut { subscribers: u32 },
    PointToPoint { pairs: u32 },
    Idle { connections: u32 },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub version: ProtocolVersion,
    pub shape: Shape,
    pub qos: QoS,
    pub payload_bytes: usize,
    /// Unacknowledged QoS 1/2 messages per publisher.
    pub window: usize,
    /// Messages per second over all publishers; None: as fast as the windows allow.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub seconds: Duration,
    /// How long after the last publish the subscribers may take to get what they are owed.
    pub drain: Duration,
    pub broker_pid: Option<u32>,
    /// Topics and client ids start with this, so runs never see each other's messages.
    pub prefix: String,
}

/// Who publishes where, and who must receive what.
struct Routes {
    /// (publisher index, topic)
    publishers: Vec<(u32, String)>,
    /// (filter, the publishers it hears)
    subscribers: Vec<(String, Vec<u32>)>,
}

fn routes(plan: &Plan) -> Routes {
    let topic = |name: &str| format!("{}/{name}", plan.prefix);
    match plan.shape {
        Shape::FanIn { publishers } => Routes {
            publishers: (0..publishers).map(|i| (i, topic("fan-in"))).collect(),
            subscribers: vec![(topic("fan-in"), (0..publishers).collect())],
        },
        Shape::FanOut { subscribers } => Routes {
            publishers: vec![(0, topic("fan-out"))],
            subscribers: (0..subscribers)
                .map(|_| (topic("fan-out"), vec![0]))
                .collect(),
        },
        Shape::PointToPoint { pairs } => Routes {
            publishers: (0..pairs)
                .map(|i| (i, topic(&format!("p2p/{i}"))))
                .collect(),
            subscribers: (0..pairs)
                .map(|i| (topic(&format!("p2p/{i}")), vec![i]))
                .collect(),
        },
        Shape::Idle { .. } => Routes {
            publishers: Vec::new(),
            subscribers: Vec::new(),
        },
    }
}

pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    if let Shape::Idle { connections } = plan.shape {
        return idle(plan, connections).await;
    }
    let routes = routes(plan);
    let login = |role: &str, i: usize| Login {
        client_id: format!("{}-{role}-{i}", plan.prefix.replace('/', "-")),
        version: plan.version,
        // Subscribers ping when silent; publishers never pause long before they end.
        keep_alive: if role == "sub" {
            subscriber::KEEP_ALIVE_SECS
        } else {
            60
        },
    };
    let mut subscribers = Vec::new();
    for (i, (filter, _)) in routes.subscribers.iter().enumerate() {
        let (reader, writer) = connect(plan.addr, &login("sub", i)).await?;
        subscribers.push(subscribe(reader, writer, filter, plan.qos).await?);
    }
    let mut publishers = Vec::new();
    for (i, _) in routes.publishers.iter().enumerate() {
        publishers.push(connect(plan.addr, &login("pub", i)).await?);
    }
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop = measure_from + plan.seconds;
    let usage = plan
        .broker_pid
        .map(|pid| tokio::spawn(broker_usage(pid, measure_from, stop)));
    let progress = progress(&routes);
    let mut owed_by_subscriber = Vec::new();
    let mut receiving = JoinSet::new();
    for (i, (reader, writer)) in subscribers.into_iter().enumerate() {
        let (owed_tx, owed) = watch::channel(None);
        owed_by_subscriber.push(owed_tx);
        let spec = SubscriberSpec {
            progress: progress.slots_of(i, routes.publishers.len()),
            heard: routes.subscribers[i].1.clone(),
            publishers: routes.publishers.len(),
            qos: plan.qos,
            start,
            measure_from,
            measure_until: stop,
            deadline: stop + plan.drain * 2,
        };
        receiving.spawn(async move { (i, subscriber::run(spec, reader, writer, owed).await) });
    }
    let per_publisher_rate = plan.rate.map(|r| r / routes.publishers.len().max(1) as f64);
    let mut sending = JoinSet::new();
    for ((index, topic), (reader, writer)) in routes.publishers.iter().zip(publishers) {
        let spec = PublisherSpec {
            index: *index,
            topic: mqtt_string(topic)?,
            qos: plan.qos,
            payload_bytes: plan.payload_bytes,
            window: plan.window,
            progress: progress.by_publisher[*index as usize].clone(),
            rate: per_publisher_rate,
            start,
            stop,
            drain: plan.drain,
        };
        let index = *index;
        sending.spawn(async move { (index, publisher::run(spec, reader, writer).await) });
    }
    let mut published: Vec<(u32, Published)> = Vec::new();
    while let Some(done) = sending.join_next().await {
        let (index, result) = done?;
        published.push((index, result.with_context(|| format!("publisher {index}"))?));
    }
    published.sort_by_key(|(index, _)| *index);
    let owed = |heard: &[u32]| -> u64 {
        heard
            .iter()
            .map(|p| published[*p as usize].1.acked.len())
            .sum()
    };
    // Each subscriber stops once it has what the publishers it hears got acknowledged.
    for ((_, heard), owed_tx) in routes.subscribers.iter().zip(&owed_by_subscriber) {
        let _ = owed_tx.send(Some(owed(heard)));
    }
    let mut received: Vec<(usize, Received)> = Vec::new();
    while let Some(done) = receiving.join_next().await {
        let (i, result) = done?;
        received.push((i, result.with_context(|| format!("subscriber {i}"))?));
    }
    let usage = match usage {
        Some(task) => Some(task.await??),
        None => None,
    };
    Ok(report(plan, &routes, &published, received, usage))
}

/// Each publisher's progress, and which slot in it each subscriber has.
struct Wiring {
    by_publisher: Vec<Arc<Progress>>,
    /// (subscriber, publisher) -> slot
    slots: HashMap<(usize, u32), usize>,
}

impl Wiring {
    fn slots_of(
        &self,
        subscriber: usize,
        publishers: usize,
    ) -> Vec<Option<(Arc<Progress>, usize)>> {
        (0..publishers as u32)
            .map(|p| {
                let slot = self.slots.get(&(subscriber, p))?;
                Some((self.by_publisher[p as usize].clone(), *slot))
            })
            .collect()
    }
}

fn progress(routes: &Routes) -> Wiring {
    let mut slots = HashMap::new();
    let mut heard_by = vec![0usize; routes.publishers.len()];
    for (subscriber, (_, heard)) in routes.subscribers.iter().enumerate() {
        for p in heard {
            slots.insert((subscriber, *p), heard_by[*p as usize]);
            heard_by[*p as usize] += 1;
        }
    }
    Wiring {
        by_publisher: heard_by
            .into_iter()
            .map(|n| Arc::new(Progress::new(n)))
            .collect(),
        slots,
    }
}

/// Connects, subscribes with `filter` at `qos` and waits for the SUBACK.
async fn subscribe(
    mut reader: Reader,
    mut writer: Writer,
    filter: &str,
    qos: QoS,
) -> anyhow::Result<(Reader, Writer)> {
    writer.queue(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("1 is a packet id"),
        properties: Properties::new(),
        filters: vec![(mqtt_string(filter)?, SubscriptionOptions::new(qos))],
    }));
    writer.flush().await?;
    // The QoS asked for, not a lower one: a QoS 2 run over QoS 1 subscriptions would pass
    // its exactly-once check without testing it.
    match reader.next().await? {
        Some(Packet::SubAck(ack)) if ack.reason_codes.iter().all(|c| *c as u8 == qos as u8) => {
            Ok((reader, writer))
        }
        other => bail!(
            "subscription to {filter} at QoS {} not granted: {other:?}",
            qos as u8
        ),
    }
}

/// The broker's CPU use over [from, until] (cores) and its RSS at `until`.
async fn broker_usage(pid: u32, from: Instant, until: Instant) -> anyhow::Result<(f64, u64)> {
    tokio::time::sleep_until(from.into()).await;
    let before = procstat::read(pid)?;
    tokio::time::sleep_until(until.into()).await;
    let after = procstat::read(pid)?;
    let seconds = until.duration_since(from).as_secs_f64();
    let cpu = (after.cpu_seconds - before.cpu_seconds) / seconds;
    Ok((cpu, after.rss_bytes.max(before.rss_bytes)))
}

fn report(
    plan: &Plan,
    routes: &Routes,
    published: &[(u32, Published)],
    received: Vec<(usize, Received)>,
    usage: Option<(f64, u64)>,
) -> Report {
    let mut verdict = Verdict {
        unacknowledged: published.iter().map(|(_, p)| p.unacknowledged).sum(),
        ..Verdict::default()
    };
    let mut latency_us = latency_histogram();
    let mut measured = 0;
    for (i, got) in received {
        let heard = &routes.subscribers[i].1;
        let expected: Vec<(u32, &SeqSet)> = heard
            .iter()
            .map(|p| (*p, &published[*p as usize].1.acked))
            .collect();
        verdict.add(got.ledger.verdict(&expected));
        measured += got.measured;
        latency_us
            .add(&got.latency_us)
            .expect("histograms with the same bounds");
    }
    Report {
        scenario: shape_name(plan.shape).to_owned(),
        qos: plan.qos,
        sent: published.iter().map(|(_, p)| p.sent).sum(),
        acked: published.iter().map(|(_, p)| p.acked.len()).sum(),
        measured,
        seconds: plan.seconds.as_secs_f64(),
        latency_us,
        verdict,
        broker_cpu: usage.map(|(cpu, _)| cpu),
        broker_rss_bytes: usage.map(|(_, rss)| rss),
        connections: None,
        bytes_per_connection: None,
    }
}

pub fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::FanIn { .. } => "fan-in",
        Shape::FanOut { .. } => "fan-out",
        Shape::PointToPoint { .. } => "point-to-point",
        Shape::Idle { .. } => "idle",
    }
}

/// Connections held at once while they are opened.
const IDLE_OPENING_AT_ONCE: usize = 64;

/// `connections` clients, each with keep alive 60 and one subscription, held for the run's
/// seconds: the broker's RSS growth divided by the connections.
async fn idle(plan: &Plan, connections: u32) -> anyhow::Result<Report> {
    let pid = plan
        .broker_pid
        .context("the idle scenario needs --broker-pid")?;
    let before = procstat::read(pid)?;
    let mut held = Vec::with_capacity(connections as usize);
    let mut opening = JoinSet::new();
    for i in 0..connections as usize {
        if opening.len() >= IDLE_OPENING_AT_ONCE {
            held.push(opening.join_next().await.expect("not empty")??);
        }
        let login = Login {
            client_id: format!("{}-idle-{i}", plan.prefix.replace('/', "-")),
            version: plan.version,
            keep_alive: 60,
        };
        let (addr, filter, qos) = (plan.addr, format!("{}/idle/{i}", plan.prefix), plan.qos);
        opening.spawn(async move {
            let (reader, writer) = connect(addr, &login).await?;
            subscribe(reader, writer, &filter, qos).await
        });
    }
    while let Some(done) = opening.join_next().await {
        held.push(done??);
    }
    // Let the broker settle (buffers released, tasks parked) before reading its memory.
    tokio::time::sleep(plan.warmup.max(Duration::from_secs(2))).await;
    let after = procstat::read(pid)?;
    // A broker that had dropped connections would look cheap: every one must still answer.
    confirm_open(&mut held).await?;
    hold(&mut held, plan.seconds).await?;
    confirm_open(&mut held).await?;
    let growth = after.rss_bytes.saturating_sub(before.rss_bytes) as f64;
    Ok(Report {
        scenario: "idle".into(),
        qos: plan.qos,
        sent: 0,
        acked: 0,
        measured: 0,
        seconds: plan.seconds.as_secs_f64(),
        latency_us: Histogram::new(3).expect("valid precision"),
        verdict: Verdict::default(),
        broker_cpu: None,
        broker_rss_bytes: Some(after.rss_bytes),
        connections: Some(u64::from(connections)),
        bytes_per_connection: Some(growth / f64::from(connections.max(1))),
    })
}

/// How long a held connection may take to answer a PINGREQ.
const PING_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Pings every held connection (all at once, then reads the answers): an error names how many
/// did not answer with a PINGRESP. Run after the memory sample, so it does not disturb it.
pub async fn confirm_open(held: &mut [(Reader, Writer)]) -> anyhow::Result<()> {
    for (_, writer) in held.iter_mut() {
        writer.queue(&Packet::PingReq);
        writer.flush().await?;
    }
    let mut silent = 0usize;
    for (reader, _) in held.iter_mut() {
        let answer = tokio::time::timeout(PING_ANSWER_TIMEOUT, reader.next()).await;
        if !matches!(answer, Ok(Ok(Some(Packet::PingResp)))) {
            silent += 1;
        }
    }
    anyhow::ensure!(
        silent == 0,
        "{silent} of {} idle connections did not answer a PINGREQ: the broker closed them or stopped answering",
        held.len()
    );
    Ok(())
}

/// Keeps the connections open for `seconds`, pinging every 30 s (keep alive is 60) and
/// requiring the answers.
async fn hold(held: &mut [(Reader, Writer)], seconds: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + seconds;
    while Instant::now() < until {
        let next = (Instant::now() + Duration::from_secs(30)).min(until);
        tokio::time::sleep_until(next.into()).await;
        if next < until {
            confirm_open(held).await?;
        }
    }
    Ok(())
}
