//! `tern-bench`: MQTT load against any broker on loopback, every message verified.
//!
//! ```sh
//! cargo run --release -p tern-bench -- fan-in --qos 2 --publishers 8 --seconds 10
//! cargo run --release -p tern-bench -- idle --connections 10000 --broker-pid "$(pidof tern)"
//! ```
//!
//! Exit status 1 when a QoS 1/2 message the broker acknowledged did not reach a subscriber,
//! a QoS 2 message came twice, a publisher's messages came out of order, a delivery came at
//! another QoS or to the wrong subscriber, or a message was never acknowledged; 2 when the run
//! could not be made (a refused connection or subscription, a closed socket).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use tern::codec::ProtocolVersion;
use tern::types::QoS;
use tern_bench::scenario::{self, Plan, Shape};

#[derive(Debug, Parser)]
#[command(about = "MQTT load generator that verifies every message")]
struct Args {
    /// The broker's MQTT address.
    #[arg(long, default_value = "127.0.0.1:1883", global = true)]
    broker: SocketAddr,
    /// MQTT version of every client.
    #[arg(long, value_enum, default_value = "3.1.1", global = true)]
    mqtt: Mqtt,
    /// QoS of every publish and subscription.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2), global = true)]
    qos: u8,
    /// Payload bytes (at least 20: the stamp).
    #[arg(long, default_value_t = 64, global = true)]
    payload: usize,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 100, global = true)]
    window: usize,
    /// Fixed total rate in messages per second (for latency); default: as fast as possible.
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0, global = true)]
    seconds: f64,
    #[arg(long, default_value_t = 1.0, global = true)]
    warmup: f64,
    /// Seconds allowed after the last publish for acknowledgements and deliveries.
    #[arg(long, default_value_t = 5.0, global = true)]
    drain: f64,
    /// The broker's process id: its CPU and memory are read from /proc.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    #[command(subcommand)]
    shape: ShapeArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mqtt {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Subcommand)]
enum ShapeArg {
    /// Many publishers, one subscriber, one topic.
    FanIn {
        #[arg(long, default_value_t = 8)]
        publishers: u32,
    },
    /// One publisher, many subscribers, one topic.
    FanOut {
        #[arg(long, default_value_t = 8)]
        subscribers: u32,
    },
    /// Pairs of one publisher and one subscriber, each pair on its own topic.
    P2p {
        #[arg(long, default_value_t = 8)]
        pairs: u32,
    },
    /// Idle connections (keep alive 60, one subscription each): broker memory per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: u32,
    },
}

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = match args.shape {
        ShapeArg::FanIn { publishers } => Shape::FanIn { publishers },
        ShapeArg::FanOut { subscribers } => Shape::FanOut { subscribers },
        ShapeArg::P2p { pairs } => Shape::PointToPoint { pairs },
        ShapeArg::Idle { connections } => Shape::Idle { connections },
    };
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    let plan = Plan {
        addr: args.broker,
        version: match args.mqtt {
            Mqtt::V311 => ProtocolVersion::V3_1_1,
            Mqtt::V5 => ProtocolVersion::V5,
        },
        shape,
        qos: QoS::from_bits(args.qos).expect("checked by clap"),
        payload_bytes: args.payload,
        window: args.window,
        rate: args.rate,
        warmup: Duration::from_secs_f64(args.warmup),
        seconds: Duration::from_secs_f64(args.seconds),
        drain: Duration::from_secs_f64(args.drain),
        broker_pid: args.broker_pid,
        prefix: format!("tern-bench/{}-{nonce}", std::process::id()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(scenario::run(&plan))?;
    println!("{report}");
    if report.failed() {
        std::process::exit(1);
    }
    Ok(())
}
