//! What each payload carries: the publisher's index, its sequence number and when it was
//! (meant to be) sent, in the first 20 bytes; the rest is padding up to the payload size.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes the stamp takes; smaller payloads are raised to this.
pub const STAMP_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    /// Nanoseconds since the run's start.
    pub sent_ns: u64,
}

impl Stamp {
    /// The payload of `size` bytes (at least [`STAMP_BYTES`]) carrying this stamp.
    pub fn payload(&self, size: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(size.max(STAMP_BYTES));
        out.put_u32(self.publisher);
        out.put_u64(self.seq);
        out.put_u64(self.sent_ns);
        out.resize(size.max(STAMP_BYTES), b'.');
        out.freeze()
    }

    /// The stamp in `payload`, if it has one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let bytes = payload.get(..STAMP_BYTES)?;
        let word = |range: std::ops::Range<usize>| {
            bytes[range]
                .iter()
                .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
        };
        Some(Stamp {
            publisher: u32::try_from(word(0..4)).ok()?,
            seq: word(4..12),
            sent_ns: word(12..20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_its_payload() {
        let stamp = Stamp {
            publisher: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        for size in [0, 20, 64, 1000] {
            let payload = stamp.payload(size);
            assert_eq!(payload.len(), size.max(STAMP_BYTES));
            assert_eq!(Stamp::read(&payload), Some(stamp));
        }
        assert_eq!(Stamp::read(b"short"), None);
    }
}
