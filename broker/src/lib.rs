//! Tern: an MQTT 3.1.1 and 5.0 broker whose behaviour can be replayed deterministically.
//!
//! Where things are (see `ARCHITECTURE.md` at the repository root):
//! - [`codec`]: the byte layout of every MQTT control packet, both protocol versions;
//! - [`types`]: small value types whose constructors enforce the spec (QoS, packet ids).
//! - [`topic`]: topic name and filter rules.
//! - [`core`]: the sans-IO broker state machine.
//! - [`limits`]: every limit, with its default and why.
//! - [`net`]: the tokio driver, generic over the listener.
//! - [`config`]: the TOML configuration file.

pub mod auth;
pub mod codec;
pub mod config;
pub mod core;
pub mod limits;
pub mod log_limit;
pub mod metrics;
pub mod net;
pub mod planted;
pub mod store;
pub mod topic;
pub mod types;
