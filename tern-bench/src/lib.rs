//! `tern-bench`: an MQTT load generator that checks every message it sends.
//!
//! Publishers stamp each payload with who sent it, its sequence number and when; subscribers
//! read the stamps back, acknowledge as MQTT asks, and keep a ledger per publisher. At the end
//! every message the broker acknowledged (PUBACK, PUBCOMP) must have reached every subscriber
//! meant to get it: once for QoS 2, at least once for QoS 1, in each publisher's order. Loss,
//! a QoS 2 duplicate or a reordering fails the run (exit status 1). It works against any broker
//! on loopback; with `--broker-pid` it also reads the broker's CPU time and memory.
//!
//! - `conn.rs`: an MQTT connection over Tern's codec (framing only, no policy);
//! - `stamp.rs`: what each payload carries;
//! - `publisher.rs`, `subscriber.rs`: the two roles and their QoS flows;
//! - `ledger.rs`: what a subscriber received, judged at the end;
//! - `progress.rs`: the end-to-end window (the load never outruns the slowest subscriber);
//! - `scenario.rs`: fan-in, fan-out, point-to-point and idle connections;
//! - `procstat.rs`: the broker's CPU and RSS from `/proc`;
//! - `report.rs`: the numbers a run prints.

pub mod conn;
pub mod ledger;
pub mod procstat;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod scenario;
pub mod stamp;
pub mod subscriber;
