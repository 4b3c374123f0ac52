//! Tern: an MQTT 3.1.1 and 5.0 broker whose behaviour can be replayed deterministically.
//!
//! Where things are (see `ARCHITECTURE.md` at the repository root):
//! - [`codec`]: the byte layout of every MQTT control packet, both protocol versions;
//! - [`types`]: small value types whose constructors enforce the spec (QoS, packet ids).

pub mod codec;
pub mod types;
