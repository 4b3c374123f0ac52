//! The MQTT data representations (spec section 1.5): integers, variable byte integers, strings
//! and binary data, read from a packet body and written to a sink.
//!
//! Writing goes through the [`Sink`] trait so that the same encoder code first measures a packet
//! ([`Counter`]) and then writes it: the remaining length in the fixed header is known before
//! the body is written, and the two can never disagree.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::bytestr::{ByteStr, StrError};
use super::error::{DecodeError, EncodeError};
use super::packet::PacketType;

/// The largest value a variable byte integer can hold (four bytes).
pub const VARINT_MAX: u32 = 268_435_455;

/// Reads the fields of one packet body. The body is the packet split off the read buffer, so
/// strings and payloads come out as zero-copy slices. The reader keeps a position rather than
/// advancing the buffer, so that a PUBLISH can take its body from the topic on, once its
/// fields are read ([`Reader::rest_from`]).
pub struct Reader {
    body: Body,
    /// The offset of the next byte to read in `body`; never more than its length.
    pos: usize,
    packet: PacketType,
}

/// A reader's bytes: the packet as split off the read buffer, frozen into shared `Bytes` when
/// a field is first taken as a slice of it. Not frozen at once: `BytesMut::freeze` (not
/// inlined) reads the split-off buffer back right after the split wrote it, a store the CPU
/// cannot forward to the load: freezing later took a 64-byte PUBLISH's decoding from about
/// 65 to about 48 ns (alternated criterion runs).
enum Body {
    Packet(BytesMut),
    Shared(Bytes),
}

impl Body {
    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Packet(packet) => packet,
            Body::Shared(shared) => shared,
        }
    }

    /// The body as shared `Bytes` (frozen now if it was not yet).
    #[inline(always)]
    fn shared(&mut self) -> &Bytes {
        if let Body::Packet(_) = self {
            self.freeze();
        }
        match self {
            Body::Shared(shared) => shared,
            Body::Packet(_) => unreachable!("frozen above"),
        }
    }

    /// Once per packet at most: out of line, so that every `shared` stays small.
    #[inline(never)]
    fn freeze(&mut self) {
        if let Body::Packet(packet) = self {
            *self = Body::Shared(std::mem::take(packet).freeze());
        }
    }

    #[inline(always)]
    fn into_shared(self) -> Bytes {
        match self {
            Body::Packet(packet) => packet.freeze(),
            Body::Shared(shared) => shared,
        }
    }
}

impl Reader {
    pub fn new(body: Bytes, packet: PacketType) -> Reader {
        Reader {
            body: Body::Shared(body),
            pos: 0,
            packet,
        }
    }

    /// A reader of a whole packet as split off the read buffer, from position `pos` (after
    /// the fixed header the caller has read).
    #[inline(always)]
    pub fn of_packet(packet_bytes: BytesMut, pos: usize, packet: PacketType) -> Reader {
        assert!(
            pos <= packet_bytes.len(),
            "reader starts at {pos} of {}",
            packet_bytes.len()
        );
        Reader {
            body: Body::Packet(packet_bytes),
            pos,
            packet,
        }
    }

    pub fn packet(&self) -> PacketType {
        self.packet
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.body.bytes().len() - self.pos
    }

    /// Where the reader is: an offset into the buffer it was given (which may begin with a
    /// fixed header the reader started after, see [`Reader::of_packet`]).
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    fn need(&self, len: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                packet: self.packet,
                field,
            });
        }
        Ok(())
    }

    /// The next `len` bytes, which the caller checked are there.
    #[inline]
    fn advance(&mut self, len: usize) -> &[u8] {
        let start = self.pos;
        self.pos += len;
        &self.body.bytes()[start..self.pos]
    }

    #[inline]
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.advance(1)[0])
    }

    #[inline]
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        let bytes = self.advance(2);
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    #[inline]
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        let bytes = self.advance(4);
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    #[inline]
    pub fn varint(&mut self, field: &'static str, strict: bool) -> Result<u32, DecodeError> {
        match read_varint(&self.body.bytes()[self.pos..], strict)? {
            Some((value, used)) => {
                self.pos += used;
                Ok(value)
            }
            None => Err(DecodeError::Truncated {
                packet: self.packet,
                field,
            }),
        }
    }

    /// The next `len` bytes, unread but in place, for a caller that checks them before
    /// [`Reader::skip`]ping them.
    #[inline]
    pub fn peek(&self, len: usize, field: &'static str) -> Result<&[u8], DecodeError> {
        self.need(len, field)?;
        Ok(&self.body.bytes()[self.pos..self.pos + len])
    }

    #[inline]
    pub fn skip(&mut self, len: usize, field: &'static str) -> Result<(), DecodeError> {
        self.need(len, field)?;
        self.pos += len;
        Ok(())
    }

    #[inline(always)]
    pub fn take(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(len, field)?;
        let start = self.pos;
        self.pos += len;
        Ok(self.body.shared().slice(start..self.pos))
    }

    /// The body from position `start` (at most the current one) to its end; the reader is
    /// left at the end. Takes the body's handle rather than making another: a PUBLISH's
    /// topic and payload come out of one buffer with one reference count.
    #[inline(always)]
    pub fn rest_from(&mut self, start: usize) -> Bytes {
        assert!(
            start <= self.pos,
            "rest_from({start}) behind position {}",
            self.pos
        );
        let mut body = std::mem::replace(&mut self.body, Body::Shared(Bytes::new())).into_shared();
        self.pos = 0;
        body.advance(start);
        body
    }

    /// Binary data: a two-byte length, then that many bytes.
    #[inline]
    pub fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)? as usize;
        self.take(len, field)
    }

    /// A UTF-8 encoded string, checked against the MQTT string rules.
    #[inline]
    pub fn string(&mut self, field: &'static str) -> Result<ByteStr, DecodeError> {
        let bytes = self.binary(field)?;
        ByteStr::from_bytes(bytes).map_err(|e| string_error(e, field))
    }

    /// Splits off the next `len` bytes as a reader of their own (a property block).
    pub fn sub_reader(&mut self, len: usize, field: &'static str) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(len, field)?, self.packet))
    }

    /// The body must be fully consumed once the last field is read.
    #[inline]
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                count: self.remaining(),
            })
        }
    }
}

/// The decode error for a string field that breaks the MQTT string rules.
pub fn string_error(error: StrError, field: &'static str) -> DecodeError {
    match error {
        StrError::InvalidUtf8 => DecodeError::InvalidUtf8 { field },
        StrError::NullCharacter => DecodeError::NullCharacter { field },
        StrError::TooLong => unreachable!("a u16 length prefix cannot exceed 65535"),
    }
}

/// Reads a variable byte integer from the front of `buf`: `Ok(None)` when `buf` ends before
/// the last byte, otherwise the value and the number of bytes it used. `strict` rejects
/// encodings longer than needed (MQTT 5; 3.1.1 states no such rule).
#[inline]
pub fn read_varint(buf: &[u8], strict: bool) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let used = i + 1;
            if strict && used > 1 && byte == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, used)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::VarIntTooLong);
    }
    Ok(None)
}

pub fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Where encoded bytes go: a [`Counter`] that only measures, or a `BytesMut`.
pub trait Sink {
    fn put_u8(&mut self, value: u8);
    fn put_u16(&mut self, value: u16);
    fn put_u32(&mut self, value: u32);
    fn put_slice(&mut self, bytes: &[u8]);

    fn put_varint(&mut self, mut value: u32) {
        debug_assert!(value <= VARINT_MAX);
        loop {
            let mut byte = (value & 0x7F) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            self.put_u8(byte);
            if value == 0 {
                break;
            }
        }
    }

    fn put_binary(&mut self, field: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong {
            field,
            len: bytes.len(),
        })?;
        self.put_u16(len);
        self.put_slice(bytes);
        Ok(())
    }

    fn put_string(&mut self, field: &'static str, s: &str) -> Result<(), EncodeError> {
        self.put_binary(field, s.as_bytes())
    }
}

/// A sink that counts bytes: the measuring pass of the encoder.
#[derive(Default)]
pub struct Counter(pub usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn put_varint(&mut self, value: u32) {
        self.0 += varint_len(value);
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, value: u8) {
        BufMut::put_u8(self, value);
    }
    fn put_u16(&mut self, value: u16) {
        BufMut::put_u16(self, value);
    }
    fn put_u32(&mut self, value: u32) {
        BufMut::put_u32(self, value);
    }
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for value in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX,
        ] {
            let mut buf = BytesMut::new();
            buf.put_varint(value);
            assert_eq!(buf.len(), varint_len(value));
            assert_eq!(read_varint(&buf, true), Ok(Some((value, buf.len()))));
        }
    }

    // spec: [MQTT-1.5.5-1] (v5)
    #[test]
    fn varint_non_minimal_and_overlong() {
        assert_eq!(
            read_varint(&[0x80, 0x00], true),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(read_varint(&[0x80, 0x00], false), Ok(Some((0, 2))));
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x01], false),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(read_varint(&[0x80, 0x80], false), Ok(None));
    }
}
