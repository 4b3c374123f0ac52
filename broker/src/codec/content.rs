//! `Content`: a PUBLISH's topic name and payload, held as one shared buffer when they arrived
//! in one.
//!
//! Every `Bytes` handle is a reference count: making one, and dropping it, is an atomic
//! operation on a cache line the connection task and the broker task both touch. A decoded
//! PUBLISH used to carry two handles (topic and payload); `Content` carries one, the packet's
//! body, with the offsets of both. A 64-byte PUBLISH decodes about 10% faster for it, the
//! message made of it takes the handle over, and every delivery or retry of it costs one count
//! instead of two.
//!
//! The invariant of both forms: the topic is a valid MQTT string (as [`ByteStr`] requires).
//! A `Split` content holds a `ByteStr`; a `Joined` one is made by the decoder, which checked
//! the topic first ([`Content::joined`] is `unsafe` for that reason), by [`Content::packed`],
//! which checks it, or with an empty topic (`Default`, [`Content::without_topic`]).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::bytestr::{ByteStr, StrError};

/// A topic name and a payload (see the module comment).
#[derive(Clone)]
pub struct Content(Form);

#[derive(Clone)]
enum Form {
    /// The topic is `bytes[..topic_len]`, the payload `bytes[payload_start..]`; what lies
    /// between (a PUBLISH's packet id and properties) is never read.
    Joined {
        bytes: Bytes,
        topic_len: u16,
        payload_start: u32,
    },
    /// Topic and payload from different places (a will, a `$SYS` value, a message restored
    /// from the store, a resolved topic alias, a test).
    /// Behind one `Arc` so that a copy costs one count, as a `Joined` one does, and the
    /// common form stays small (a `Content` is 40 bytes).
    Split(Arc<(ByteStr, Bytes)>),
}

impl Content {
    /// Topic and payload as they are, without copying either.
    pub fn new(topic: ByteStr, payload: Bytes) -> Content {
        Content(Form::Split(Arc::new((topic, payload))))
    }

    /// Content packed in one buffer: the topic is `bytes[..topic_len]` (checked here against
    /// the MQTT string rules), the payload the rest. Panics if `topic_len` is beyond `bytes`,
    /// a bug in the caller.
    pub fn packed(bytes: Bytes, topic_len: usize) -> Result<Content, StrError> {
        assert!(
            topic_len <= bytes.len(),
            "topic of {topic_len} bytes in {}",
            bytes.len()
        );
        ByteStr::check_noting(&bytes[..topic_len], |_| false)?;
        // SAFETY: checked on the line above.
        Ok(unsafe { Content::joined(bytes, topic_len, topic_len) })
    }

    /// Content read out of one buffer: the topic is `bytes[..topic_len]` and the payload
    /// starts at `payload_start`. The decoder checks a topic before the fields after it (so
    /// that errors come in wire order), so it is not checked again here.
    ///
    /// # Safety
    ///
    /// `bytes[..topic_len]` must satisfy the MQTT string rules ([`ByteStr::check_noting`]):
    /// [`Content::topic`] relies on it.
    // Always inlined: called on every PUBLISH, and a call moves the `Bytes` through memory.
    #[inline(always)]
    pub(super) unsafe fn joined(bytes: Bytes, topic_len: usize, payload_start: usize) -> Content {
        assert!(
            topic_len <= payload_start && payload_start <= bytes.len(),
            "content offsets out of order: topic {topic_len}, payload at {payload_start} of {}",
            bytes.len()
        );
        debug_assert_eq!(
            ByteStr::check_noting(&bytes[..topic_len], |_| false),
            Ok(false)
        );
        // A two-byte length prefix bounds the one, an MQTT packet (268,435,460 bytes) the other.
        let topic_len = u16::try_from(topic_len).expect("a string's length fits 16 bits");
        let payload_start = u32::try_from(payload_start).expect("a packet's size fits 32 bits");
        Content(Form::Joined {
            bytes,
            topic_len,
            payload_start,
        })
    }

    pub fn topic(&self) -> &str {
        match &self.0 {
            Form::Joined {
                bytes, topic_len, ..
            } => {
                // SAFETY: these bytes were checked as an MQTT string (valid UTF-8) before the
                // content was made (see `joined`), or are empty (`Default`, `without_topic`);
                // neither `bytes` nor `topic_len` changes after.
                unsafe { std::str::from_utf8_unchecked(&bytes[..usize::from(*topic_len)]) }
            }
            Form::Split(split) => split.0.as_str(),
        }
    }

    pub fn payload(&self) -> &[u8] {
        match &self.0 {
            Form::Joined {
                bytes,
                payload_start,
                ..
            } => &bytes[*payload_start as usize..],
            Form::Split(split) => &split.1,
        }
    }

    /// The topic as a string of its own, sharing this content's buffer.
    pub fn to_topic(&self) -> ByteStr {
        match &self.0 {
            Form::Joined {
                bytes, topic_len, ..
            } => {
                let topic = bytes.slice(..usize::from(*topic_len));
                // SAFETY: the bytes `topic` returns as a `str` (see there).
                unsafe { ByteStr::from_checked(topic) }
            }
            Form::Split(split) => split.0.clone(),
        }
    }

    /// The payload as `Bytes` of its own, sharing this content's buffer.
    pub fn to_payload(&self) -> Bytes {
        match &self.0 {
            Form::Joined {
                bytes,
                payload_start,
                ..
            } => bytes.slice(*payload_start as usize..),
            Form::Split(split) => split.1.clone(),
        }
    }

    /// The same payload under another topic (a topic alias resolved, or replaced by one).
    pub fn with_topic(&self, topic: ByteStr) -> Content {
        Content::new(topic, self.to_payload())
    }

    /// The same payload with an empty topic (a topic alias stands in for it). Keeps the one
    /// shared buffer: an empty topic is a `Joined` topic of length 0.
    pub fn without_topic(&self) -> Content {
        match &self.0 {
            Form::Joined {
                bytes,
                payload_start,
                ..
            } => Content(Form::Joined {
                bytes: bytes.clone(),
                topic_len: 0,
                payload_start: *payload_start,
            }),
            Form::Split(split) => Content::new(ByteStr::default(), split.1.clone()),
        }
    }
}

/// An empty topic and payload, without an allocation.
impl Default for Content {
    fn default() -> Content {
        Content(Form::Joined {
            bytes: Bytes::new(),
            topic_len: 0,
            payload_start: 0,
        })
    }
}

/// Equal when topic and payload are, however each is held.
impl PartialEq for Content {
    fn eq(&self, other: &Content) -> bool {
        self.topic() == other.topic() && self.payload() == other.payload()
    }
}

impl Eq for Content {}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Content")
            .field("topic", &self.topic())
            .field("payload", &Escaped(self.payload()))
            .finish()
    }
}

/// Bytes shown as `Bytes` shows them (`b"..."`), without copying them into one.
struct Escaped<'a>(&'a [u8]);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(topic: &'static str, payload: &'static [u8]) -> Content {
        Content::new(ByteStr::from_static(topic), Bytes::from_static(payload))
    }

    /// A packet-like buffer: a topic, two bytes that are neither (a packet id), a payload.
    fn joined() -> Content {
        // SAFETY: "a/b" is a valid MQTT string.
        unsafe { Content::joined(Bytes::from_static(b"a/b\x00\x07hello"), 3, 5) }
    }

    #[test]
    fn a_content_is_small() {
        assert_eq!(std::mem::size_of::<Content>(), 40);
    }

    #[test]
    fn both_forms_give_the_same_topic_and_payload() {
        let (one, other) = (joined(), split("a/b", b"hello"));
        for content in [&one, &other] {
            assert_eq!(content.topic(), "a/b");
            assert_eq!(content.payload(), b"hello");
            assert_eq!(content.to_topic(), "a/b");
            assert_eq!(&content.to_payload()[..], b"hello");
        }
        assert_eq!(one, other);
        assert_ne!(one, split("a/b", b"hellO"));
        assert_ne!(one, split("a/c", b"hello"));
        assert_eq!(format!("{one:?}"), format!("{other:?}"));
        assert_eq!(
            format!("{one:?}"),
            r#"Content { topic: "a/b", payload: b"hello" }"#
        );
    }

    #[test]
    fn the_topic_can_go_and_be_replaced() {
        for content in [joined(), split("a/b", b"hello")] {
            let bare = content.without_topic();
            assert_eq!((bare.topic(), bare.payload()), ("", &b"hello"[..]));
            let named = bare.with_topic(ByteStr::from_static("x/y"));
            assert_eq!((named.topic(), named.payload()), ("x/y", &b"hello"[..]));
        }
        let empty = Content::default();
        assert_eq!((empty.topic(), empty.payload()), ("", &b""[..]));
    }

    #[test]
    fn packed_checks_the_topic() {
        let content = Content::packed(Bytes::from_static(b"t/1payload"), 3).unwrap();
        assert_eq!(
            (content.topic(), content.payload()),
            ("t/1", &b"payload"[..])
        );
        let bad = Bytes::from_static(b"t\xC0/payload");
        assert_eq!(Content::packed(bad, 3), Err(StrError::InvalidUtf8));
        let null = Bytes::from_static(b"t\x00/payload");
        assert_eq!(Content::packed(null, 3), Err(StrError::NullCharacter));
    }

    #[test]
    #[should_panic(expected = "content offsets out of order")]
    fn joined_offsets_must_be_in_order() {
        // SAFETY: "a/b" is a valid MQTT string (the offsets are what is wrong).
        unsafe { Content::joined(Bytes::from_static(b"a/bxx"), 3, 6) };
    }
}
