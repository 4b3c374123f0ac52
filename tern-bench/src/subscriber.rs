//! A subscriber: receives stamped messages, acknowledges them as their QoS asks (PUBACK;
//! PUBREC then PUBCOMP on PUBREL), records each in its ledger, and measures latency and
//! throughput inside the measured window. It stops when told everything it is owed arrived,
//! or at its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use tern::codec::{Ack, Packet};
use tern::types::QoS;
use tokio::sync::watch;

use crate::conn::{Reader, Writer};
use crate::ledger::Ledger;
use crate::progress::Progress;
use crate::report::latency_histogram;
use crate::stamp::Stamp;

/// Subscribers connect with this keep alive (seconds) and ping when they have sent nothing for
/// half of it (at QoS 0 a subscriber sends nothing else).
pub const KEEP_ALIVE_SECS: u16 = 4;
const PING_AFTER_SILENCE: Duration = Duration::from_secs(KEEP_ALIVE_SECS as u64 / 2);

#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// By publisher index: that publisher's progress and this subscriber's slot in it (None:
    /// a publisher this subscriber does not hear).
    pub progress: Vec<Option<(Arc<Progress>, usize)>>,
    /// The publishers this subscriber hears (by index), of how many in the run.
    pub heard: Vec<u32>,
    pub publishers: usize,
    /// The QoS every delivery must have.
    pub qos: QoS,
    pub start: Instant,
    /// Deliveries between these count for throughput and latency (the warm-up is before).
    pub measure_from: Instant,
    pub measure_until: Instant,
    /// Given up at this instant whatever is missing.
    pub deadline: Instant,
}

/// What a subscriber saw.
#[derive(Debug)]
pub struct Received {
    pub ledger: Ledger,
    /// Deliveries inside the measured window.
    pub measured: u64,
    /// Publish-to-delivery latency in microseconds, inside the measured window.
    pub latency_us: Histogram<u64>,
}

/// Runs until `owed` (once the publishers are done, the number of distinct messages this
/// subscriber must have) is reached, or the deadline.
pub async fn run(
    spec: SubscriberSpec,
    mut reader: Reader,
    mut writer: Writer,
    mut owed: watch::Receiver<Option<u64>>,
) -> anyhow::Result<Received> {
    let mut received = Received {
        ledger: Ledger::new(spec.publishers, &spec.heard),
        measured: 0,
        latency_us: latency_histogram(),
    };
    let mut last_sent = Instant::now();
    loop {
        if owed
            .borrow()
            .is_some_and(|owed| received.ledger.received() >= owed)
        {
            return Ok(received);
        }
        tokio::select! {
            biased;
            // What a client does at half its keep alive: the keep alive counts what the
            // client sends, not what it receives.
            _ = tokio::time::sleep_until((last_sent + PING_AFTER_SILENCE).into()) => {
                writer.queue(&Packet::PingReq);
                writer.flush().await?;
                last_sent = Instant::now();
            }
            read = reader.fill() => {
                read?;
                while let Some(packet) = reader.try_next()? {
                    deliver(packet, &spec, &mut received, &mut writer)?;
                }
                if writer.queued() > 0 {
                    writer.flush().await?;
                    last_sent = Instant::now();
                }
            }
            changed = owed.changed() => {
                if changed.is_err() {
                    return Ok(received);
                }
            }
            _ = tokio::time::sleep_until(spec.deadline.into()) => return Ok(received),
        }
    }
}

fn deliver(
    packet: Packet,
    spec: &SubscriberSpec,
    received: &mut Received,
    writer: &mut Writer,
) -> anyhow::Result<()> {
    match packet {
        Packet::Publish(publish) => {
            let Some(stamp) = Stamp::read(publish.payload()) else {
                bail!("a message without a stamp on {}", publish.topic());
            };
            let now = Instant::now();
            if publish.qos != spec.qos {
                received.ledger.wrong_qos();
            }
            if received.ledger.record(stamp.publisher, stamp.seq) {
                let heard = spec.progress.get(stamp.publisher as usize);
                if let Some(Some((progress, slot))) = heard {
                    progress.delivered(*slot);
                }
            }
            if (spec.measure_from..spec.measure_until).contains(&now) {
                received.measured += 1;
                let sent = spec.start + Duration::from_nanos(stamp.sent_ns);
                let micros = now.saturating_duration_since(sent).as_micros() as u64;
                received.latency_us.saturating_record(micros.max(1));
            }
            match (publish.qos, publish.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => writer.queue(&Packet::PubAck(Ack::new(id))),
                (QoS::ExactlyOnce, Some(id)) => writer.queue(&Packet::PubRec(Ack::new(id))),
                _ => {}
            }
        }
        Packet::PubRel(rel) => writer.queue(&Packet::PubComp(Ack::new(rel.packet_id))),
        Packet::Disconnect(d) => bail!("the broker disconnected: {}", d.reason_code.description()),
        _ => {}
    }
    Ok(())
}
