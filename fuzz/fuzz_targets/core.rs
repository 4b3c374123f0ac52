//! Drives the broker core with arbitrary input: the bytes become a sequence of connections
//! opening and closing, packets (well-formed ones from templates, and raw bytes through the
//! decoder), time steps and outbound-queue reports, on up to eight connections.
//!
//! Beyond "no panic" (the core's own assertions included), it checks on every output what
//! holds for all of them: nothing is sent on a connection after its Close, wake-up requests
//! only name open connections, and what waits (queued, retained) never passes the budget.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tern::codec::*;
use tern::core::{Broker, Config, ConnId, Instant, Origin, Output};
use tern::types::{PacketId, QoS};

const CONNS: u8 = 8;

/// Every connection's outbound queue, as the driver would have it.
const OUTBOUND_CAPACITY: usize = 16;

/// Reads the fuzzer's bytes as parameters; runs out gracefully (zeros).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        first
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let len = len.min(self.0.len());
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn string(text: &str) -> ByteStr {
    ByteStr::new(text).expect("template strings are valid")
}

fn topic(input: &mut Input) -> String {
    match input.byte() % 8 {
        0 => "t".into(),
        1 => "a/b".into(),
        2 => "$SYS/x".into(),
        3 => "/".repeat(usize::from(input.byte()) * 4),
        4 => "x".repeat(65_535),
        5 => "s/".repeat(usize::from(input.byte() % 64)) + "e",
        _ => format!("t/{}", input.byte() % 4),
    }
}

fn filter(input: &mut Input) -> String {
    match input.byte() % 8 {
        0 => "#".into(),
        1 => "t/+".into(),
        2 => "$share/g/t/#".into(),
        3 => "+/".repeat(usize::from(input.byte())) + "#",
        4 => "/".repeat(usize::from(input.byte()) * 4),
        5 => "a/#/b".into(),
        _ => topic(input),
    }
}

fn qos(input: &mut Input) -> QoS {
    QoS::from_bits(input.byte() % 3).expect("0..=2")
}

fn packet_id(input: &mut Input) -> PacketId {
    PacketId::new(u16::from(input.byte() % 8) + 1).expect("non-zero")
}

fn template(input: &mut Input) -> Packet {
    let v5 = input.byte() % 2 == 0;
    match input.byte() % 10 {
        0 => {
            let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
            let mut properties = Properties::new();
            if v5 {
                properties.push(Property::SessionExpiryInterval(u32::from(input.byte())));
                properties.push(Property::ReceiveMaximum(u16::from(input.byte() % 4) + 1));
                properties.push(Property::TopicAliasMaximum(u16::from(input.byte() % 4)));
            }
            let will = (input.byte() % 3 == 0).then(|| Will {
                topic: string(&topic(input)),
                payload: Bytes::from_static(b"will"),
                qos: qos(input),
                retain: input.byte() % 2 == 0,
                properties: Properties::new(),
            });
            Packet::Connect(Box::new(Connect {
                protocol: version,
                clean_start: input.byte() % 2 == 0,
                keep_alive: u16::from(input.byte() % 8),
                properties,
                client_id: string(["a", "b", "c", ""][usize::from(input.byte() % 4)]),
                will,
                username: None,
                password: None,
                bridge: false,
            }))
        }
        1..=3 => {
            let qos = qos(input);
            let payload_len = usize::from(input.byte());
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain: input.byte() % 3 == 0,
                content: Content::new(
                    string(&topic(input)),
                    Bytes::copy_from_slice(input.bytes(payload_len)),
                ),
                packet_id: (qos != QoS::AtMostOnce).then(|| packet_id(input)),
                properties: Properties::new(),
            })
        }
        4 => Packet::Subscribe(Subscribe {
            packet_id: packet_id(input),
            properties: Properties::new(),
            filters: vec![(string(&filter(input)), SubscriptionOptions::new(qos(input)))],
        }),
        5 => Packet::Unsubscribe(Unsubscribe {
            packet_id: packet_id(input),
            properties: Properties::new(),
            filters: vec![string(&filter(input))],
        }),
        6 => Packet::PubAck(Ack::new(packet_id(input))),
        7 => Packet::PubRec(Ack::new(packet_id(input))),
        8 => Packet::PubRel(Ack::new(packet_id(input))),
        _ => Packet::PubComp(Ack::new(packet_id(input))),
    }
}

struct Run {
    broker: Broker,
    now: Instant,
    open: BTreeSet<ConnId>,
    closed: BTreeSet<ConnId>,
    next_conn: u64,
    /// Packets in each open connection's modelled outbound queue (the client reads them when
    /// the input says so): a send that does not fit means the core miscounted the room.
    queued: BTreeMap<ConnId, usize>,
}

impl Run {
    fn conn(&self, input: &mut Input) -> Option<ConnId> {
        let index = usize::from(input.byte() % CONNS);
        self.open.iter().nth(index % self.open.len().max(1)).copied()
    }

    fn drain(&mut self) {
        while let Some(output) = self.broker.poll_output() {
            match output {
                Output::Send { conn, .. } => {
                    assert!(!self.closed.contains(&conn), "{conn} sent to after Close");
                    if let Some(queued) = self.queued.get_mut(&conn) {
                        *queued += 1;
                        assert!(*queued <= OUTBOUND_CAPACITY, "{conn}: more sent than fits");
                    }
                }
                Output::Close { conn } => {
                    self.closed.insert(conn);
                    self.open.remove(&conn);
                    self.queued.remove(&conn);
                }
                Output::WakeWhenWritable { conn } => {
                    assert!(!self.closed.contains(&conn), "wake-up for closed {conn}")
                }
                // The fuzzed broker has no store: it never makes a batch.
                Output::Persist { .. } => panic!("a batch from a broker without a store"),
            }
        }
        let stats = self.broker.stats();
        // What waits stays within the budget (sends to ready clients are never refused).
        let waiting = stats.queued_bytes + stats.retained_bytes;
        assert!(waiting <= self.broker.limits().memory_bytes_max);
        // Every delivery is sent, dropped (counted), discarded, moved or still queued.
        assert_eq!(self.broker.sample().unaccounted_deliveries(), 0);
    }

    fn step(&mut self, input: &mut Input) {
        match input.byte() % 8 {
            0 if self.open.len() < usize::from(CONNS) => {
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                self.open.insert(conn);
                self.queued.insert(conn, 0);
                self.broker.connection_opened(conn, Origin::default(), self.now);
            }
            1..=3 => {
                if let Some(conn) = self.conn(input) {
                    let packet = template(input);
                    self.broker.packet_received(conn, packet, self.now);
                }
            }
            4 => {
                // Raw bytes through the decoder, as the driver would hand them over.
                if let Some(conn) = self.conn(input) {
                    let len = usize::from(input.byte());
                    let mut buf = BytesMut::from(input.bytes(len));
                    let version = if input.byte() % 2 == 0 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V3_1_1
                    };
                    loop {
                        match decode(&mut buf, version, 1 << 20) {
                            Ok(Some(packet)) => self.broker.packet_received(conn, packet, self.now),
                            Ok(None) => break,
                            Err(error) => {
                                self.broker.decode_failed(conn, &error, self.now);
                                break;
                            }
                        }
                    }
                }
            }
            5 => {
                if let Some(conn) = self.conn(input) {
                    self.open.remove(&conn);
                    self.closed.insert(conn);
                    self.queued.remove(&conn);
                    self.broker.connection_closed(conn, self.now);
                }
            }
            6 => {
                // The client reads some of its queue; the driver reports the real room.
                if let Some(conn) = self.conn(input) {
                    let queued = self.queued.get_mut(&conn).expect("open connections have one");
                    *queued -= usize::from(input.byte()) % (*queued + 1);
                    let free = OUTBOUND_CAPACITY - *queued;
                    self.broker.outbound_room(conn, free, self.now);
                }
            }
            _ => {
                self.now = self.now + Duration::from_secs(u64::from(input.byte()));
                self.broker.timeout(self.now);
            }
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut config = Config::default();
    config.limits.outbound_queue_packets_max = OUTBOUND_CAPACITY;
    config.limits.queued_messages_max = 8;
    config.limits.inflight_count_max = 4;
    config.limits.memory_bytes_max = 64 * 1024;
    let mut run = Run {
        broker: Broker::new(config),
        now: Instant::ZERO,
        open: BTreeSet::new(),
        closed: BTreeSet::new(),
        next_conn: 0,
        queued: BTreeMap::new(),
    };
    let mut input = Input(data);
    while !input.done() {
        run.step(&mut input);
    }
});
