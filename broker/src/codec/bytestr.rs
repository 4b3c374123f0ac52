//! `ByteStr`: an MQTT UTF-8 string that shares the packet's buffer instead of copying it.
//!
//! Topic names, client ids and string properties are decoded as slices of the read buffer, so a
//! PUBLISH routed to a thousand subscribers never copies its topic. The invariant, checked by every
//! constructor, is the MQTT string rule: well-formed UTF-8 (which excludes surrogates), no U+0000,
//! at most 65535 bytes.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Why bytes are not an MQTT UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrError {
    /// Ill-formed UTF-8, including encoded surrogates (U+D800..U+DFFF).
    InvalidUtf8,
    /// The string contains U+0000.
    NullCharacter,
    /// Longer than the 65535 bytes a two-byte length prefix can carry.
    TooLong,
}

/// A string that satisfies the MQTT UTF-8 string rules, backed by shared `Bytes`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteStr(Bytes);

/// The longest string a two-byte length prefix can carry.
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;

impl ByteStr {
    /// Validates `bytes` as an MQTT string without copying them.
    #[inline]
    pub fn from_bytes(bytes: Bytes) -> Result<ByteStr, StrError> {
        check(&bytes)?;
        Ok(ByteStr(bytes))
    }

    /// Checks `bytes` against the MQTT string rules and notes on the way whether any byte is
    /// `special` (an ASCII byte: it cannot occur inside a multi-byte character). For a plain
    /// ASCII string, the common case, the check and the search are one pass (a topic name's
    /// wildcard scan).
    #[inline]
    pub fn check_noting(bytes: &[u8], special: impl Fn(u8) -> bool) -> Result<bool, StrError> {
        debug_assert!((0..=255u8).all(|b| !special(b) || b.is_ascii()));
        let (plain_ascii, found) = bytes.iter().fold((true, false), |(plain, found), &b| {
            (plain & is_plain_ascii(b), found | special(b))
        });
        if !(plain_ascii && bytes.len() <= STRING_BYTES_MAX) {
            check(bytes)?;
        }
        Ok(found)
    }

    /// Bytes the caller has already checked with [`ByteStr::check_noting`] (a topic inside a
    /// `Content`, a will's topic): no second pass over them.
    ///
    /// # Safety
    ///
    /// `bytes` must satisfy the MQTT string rules: [`ByteStr::as_str`] relies on it.
    pub(super) unsafe fn from_checked(bytes: Bytes) -> ByteStr {
        debug_assert_eq!(check(&bytes), Ok(()));
        ByteStr(bytes)
    }

    /// Copies a Rust string after checking the MQTT rules (Rust strings may hold U+0000).
    pub fn new(s: &str) -> Result<ByteStr, StrError> {
        ByteStr::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A string known at compile time; panics on a string that breaks the MQTT rules, which
    /// is a bug in the caller, never a consequence of input.
    pub fn from_static(s: &'static str) -> ByteStr {
        let checked = ByteStr::from_bytes(Bytes::from_static(s.as_bytes()));
        checked.expect("static MQTT string must be valid")
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor validated the bytes as UTF-8 (`from_checked`'s callers
        // promise they did) and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// The MQTT string rules (see the module comment).
#[inline]
fn check(bytes: &[u8]) -> Result<(), StrError> {
    if bytes.len() > STRING_BYTES_MAX {
        return Err(StrError::TooLong);
    }
    // Fast path, one vectorisable pass: ASCII without U+0000 is valid as it stands.
    let plain_ascii = bytes.iter().fold(true, |ok, &b| ok & is_plain_ascii(b));
    if plain_ascii {
        return Ok(());
    }
    std::str::from_utf8(bytes).map_err(|_| StrError::InvalidUtf8)?;
    if bytes.contains(&0) {
        return Err(StrError::NullCharacter);
    }
    Ok(())
}

/// An ASCII byte other than U+0000: a string of these is valid as it stands.
#[inline]
fn is_plain_ascii(b: u8) -> bool {
    b.wrapping_sub(1) < 0x7F
}

impl Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ByteStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ByteStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // spec: [MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-1.5.3-3] [MQTT-4.7.3-3] (v3.1.1),
    // spec: [MQTT-1.5.4-1] [MQTT-1.5.4-2] [MQTT-1.5.4-3] [MQTT-4.7.3-3] (v5)
    #[test]
    fn mqtt_string_rules() {
        // Encoded surrogate U+D800.
        assert_eq!(
            ByteStr::from_bytes(Bytes::from_static(b"\xED\xA0\x80")),
            Err(StrError::InvalidUtf8)
        );
        assert_eq!(ByteStr::new("a\0b"), Err(StrError::NullCharacter));
        // A BOM stays where it is.
        let bom = ByteStr::from_bytes(Bytes::from_static(b"\xEF\xBB\xBFx")).unwrap();
        assert_eq!(bom.as_bytes().as_ref(), b"\xEF\xBB\xBFx");
        assert_eq!(ByteStr::new(&"x".repeat(65536)), Err(StrError::TooLong));
        assert_eq!(ByteStr::new(&"x".repeat(65535)).unwrap().len(), 65535);
    }

    /// The one-pass check with a search is exactly as strict as `from_bytes`, at the edges of
    /// plain ASCII too, and finds the special bytes in and out of it.
    #[test]
    fn noting_special_bytes_keeps_the_string_rules() {
        let wildcard = |b: u8| b == b'+' || b == b'#';
        let cases: [&[u8]; 10] = [
            b"a/b",
            b"a/+",
            b"\x7f",
            b"\x01#",
            b"\x80",
            b"\0",
            b"a\0#",
            b"\xff/#",
            "caf\u{e9}/#".as_bytes(),
            "caf\u{e9}".as_bytes(),
        ];
        for bytes in cases {
            let bytes = Bytes::from_static(bytes);
            let noted = ByteStr::check_noting(&bytes, wildcard);
            let plain = ByteStr::from_bytes(bytes.clone());
            assert_eq!(noted.map(|_| ()), plain.map(|_| ()), "{bytes:?}");
            if let Ok(found) = noted {
                assert_eq!(found, bytes.iter().any(|&b| wildcard(b)), "{bytes:?}");
            }
        }
        let long = "x".repeat(65536);
        assert_eq!(
            ByteStr::check_noting(long.as_bytes(), wildcard),
            Err(StrError::TooLong)
        );
    }
}
