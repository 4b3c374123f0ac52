//! Conformance: the real broker over real loopback TCP, driven by real third-party clients.
//!
//! The simulation proves the broker against Tern's own scripted clients; users run other
//! people's. Each case in [`cases`] is written once against the small [`client::Client`]
//! trait and runs on every client library that supports it: rumqttc (pure Rust) and paho-mqtt
//! (the Eclipse Paho C library), each in MQTT 3.1.1 and 5.0, plus a raw client built on Tern's
//! codec. [`proxy`] injects real network faults (stall, sever without FIN) between a client
//! and the broker. [`matrix`] runs everything and renders the client x case table.

pub mod broker;
pub mod cases;
pub mod client;
mod inbox;
pub mod matrix;
pub mod paho_client;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod raw_client;
pub mod rumqttc_client;
