//! The MQTT wire format: every control packet of MQTT 3.1, 3.1.1 and 5.0, as pure functions
//! over `bytes` buffers.
//!
//! Only this module knows the byte layout. The broker core sees [`Packet`] values; the driver
//! calls [`decode`] on its read buffer and [`encode`] into its write buffer, in the connection
//! task, outside the core.

mod bytestr;
mod content;
mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reason;
mod wire;

pub use bytestr::{ByteStr, StrError, STRING_BYTES_MAX};
pub use content::Content;
pub use decode::decode;
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{decode_properties, encode_properties, Properties, Property, PropertyContext};
pub use reason::ReasonCode;
pub use wire::VARINT_MAX;

/// The largest packet MQTT can express: a 268,435,455-byte body behind a 5-byte fixed header.
pub const PACKET_BYTES_MAX: usize = VARINT_MAX as usize + 5;

/// The length of the whole packet at the front of `buf` (fixed header included), judged by
/// its fixed header alone; `None` when `buf` does not hold all of it (or the header is
/// malformed). For transports that carry one packet per frame (WebSocket).
pub fn packet_len(buf: &[u8]) -> Option<usize> {
    let (remaining, used) = wire::read_varint(buf.get(1..)?, false).ok()??;
    let len = 1 + used + usize::try_from(remaining).ok()?;
    (buf.len() >= len).then_some(len)
}
