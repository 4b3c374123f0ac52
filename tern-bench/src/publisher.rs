//! A publisher: sends stamped messages on one topic until its deadline, as fast as its
//! in-flight window allows or at a fixed rate, and completes each QoS flow (PUBACK; PUBREC,
//! PUBREL, PUBCOMP). Its result says which messages the broker acknowledged: those are owed
//! to every subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tern::codec::{Ack, ByteStr, Content, Packet, Properties, Publish};
use tern::types::{PacketId, QoS};

use crate::conn::{Reader, Writer};
use crate::ledger::SeqSet;
use crate::progress::Progress;
use crate::stamp::Stamp;

/// Encoded bytes a publisher gathers before one write.
const WRITE_BATCH_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct PublisherSpec {
    pub index: u32,
    pub topic: ByteStr,
    pub qos: QoS,
    pub payload_bytes: usize,
    /// Messages sent and not yet received by every subscriber that hears this publisher, at
    /// most (so also unacknowledged ones: at most 65,535, the packet id space).
    pub window: usize,
    /// What the subscribers received of this publisher's messages.
    pub progress: Arc<Progress>,
    /// Messages per second; None: as fast as the window allows.
    pub rate: Option<f64>,
    /// The run's clock zero (stamps count from it).
    pub start: Instant,
    /// No message is sent after this.
    pub stop: Instant,
    /// How long after `stop` acknowledgements are waited for.
    pub drain: Duration,
}

/// What a publisher did.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub sent: u64,
    /// The messages the broker acknowledged (QoS 1: PUBACK, QoS 2: PUBCOMP); QoS 0: all sent.
    pub acked: SeqSet,
    /// Still waiting for the broker's acknowledgement when the drain ran out (fails the run).
    pub unacknowledged: u64,
}

/// The flows under way: packet id to sequence number.
struct Window {
    inflight: HashMap<u16, u64>,
    next_id: u16,
}

impl Window {
    fn take_id(&mut self, seq: u64) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_id) {
                self.inflight.insert(self.next_id, seq);
                return PacketId::new(self.next_id).expect("ids start at 1");
            }
        }
    }
}

pub async fn run(
    spec: PublisherSpec,
    mut reader: Reader,
    mut writer: Writer,
) -> anyhow::Result<Published> {
    let window_max = spec.window.clamp(1, usize::from(u16::MAX));
    let interval = spec
        .rate
        .map(|rate| Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut published = Published::default();
    let mut window = Window {
        inflight: HashMap::new(),
        next_id: 0,
    };
    let mut next_due = spec.start;
    let drain_until = spec.stop + spec.drain;
    loop {
        let now = Instant::now();
        let sending = now < spec.stop;
        let outstanding = |sent: u64| sent.saturating_sub(spec.progress.everywhere());
        while sending
            && window.inflight.len() < window_max
            && outstanding(published.sent) < window_max as u64
            && writer.queued() < WRITE_BATCH_BYTES
            && interval.is_none_or(|_| next_due <= now)
        {
            let seq = published.sent;
            // A fixed rate is measured from when each message was due (no coordinated omission).
            let sent_at = if interval.is_some() { next_due } else { now };
            let stamp = Stamp {
                publisher: spec.index,
                seq,
                sent_ns: sent_at.duration_since(spec.start).as_nanos() as u64,
            };
            let packet_id = (spec.qos != QoS::AtMostOnce).then(|| window.take_id(seq));
            writer.queue(&Packet::Publish(Publish {
                dup: false,
                qos: spec.qos,
                retain: false,
                content: Content::new(spec.topic.clone(), stamp.payload(spec.payload_bytes)),
                packet_id,
                properties: Properties::new(),
            }));
            published.sent += 1;
            if spec.qos == QoS::AtMostOnce {
                published.acked.insert(seq);
            }
            if let Some(interval) = interval {
                next_due += interval;
            }
        }
        writer.flush().await?;
        if !sending && window.inflight.is_empty() {
            return Ok(published);
        }
        if Instant::now() >= drain_until {
            published.unacknowledged = window.inflight.len() as u64;
            return Ok(published);
        }
        let window_open = window.inflight.len() < window_max
            && outstanding(published.sent) < window_max as u64
            && interval.is_none();
        if sending && window_open {
            // Only the write batch was full: go on sending.
            continue;
        }
        // At a fixed rate the next due time matters only if the window has room; otherwise
        // progress or an acknowledgement wakes the publisher (not a spin on a past due time).
        let room =
            window.inflight.len() < window_max && outstanding(published.sent) < window_max as u64;
        let wake = if sending {
            match interval {
                Some(_) if room => next_due.min(spec.stop),
                _ => spec.stop,
            }
        } else {
            drain_until
        };
        // QoS 0 gets no acknowledgements: only the subscribers' progress frees its window.
        let acks = spec.qos != QoS::AtMostOnce;
        tokio::select! {
            biased;
            read = reader.fill(), if acks => {
                read?;
                while let Some(packet) = reader.try_next()? {
                    acknowledge(packet, &mut window, &mut published, &mut writer)?;
                }
            }
            _ = spec.progress.changed() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// An error if the broker refused the message this acknowledgement is about.
fn refused(ack: &Ack) -> anyhow::Result<()> {
    if ack.reason_code.is_error() {
        bail!(
            "the broker refused a message: {}",
            ack.reason_code.description()
        );
    }
    Ok(())
}

/// Completes one step of a QoS flow.
fn acknowledge(
    packet: Packet,
    window: &mut Window,
    published: &mut Published,
    writer: &mut Writer,
) -> anyhow::Result<()> {
    match packet {
        Packet::PubAck(ack) | Packet::PubComp(ack) => {
            refused(&ack)?;
            match window.inflight.remove(&ack.packet_id.get()) {
                Some(seq) => {
                    published.acked.insert(seq);
                }
                None => bail!("acknowledgement for unknown packet id {}", ack.packet_id),
            }
        }
        Packet::PubRec(ack) => {
            refused(&ack)?;
            writer.queue(&Packet::PubRel(Ack::new(ack.packet_id)));
        }
        Packet::Disconnect(d) => bail!("the broker disconnected: {}", d.reason_code.description()),
        _ => {}
    }
    Ok(())
}
