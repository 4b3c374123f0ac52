//! The byte form of what the store keeps: sessions, message entries, retained messages.
//!
//! Every value starts with [`RECORD_VERSION`]; a value of another version is refused with a
//! clear error rather than misread. Integers are big-endian, strings and byte strings carry
//! their length, MQTT 5 properties are in their wire form (the codec writes and checks them).
//! The database adds its own checksums; these records only have to be unambiguous.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::{
    decode_properties, encode_properties, ByteStr, Properties, PropertyContext, ProtocolVersion,
    RetainHandling, SubscriptionOptions, Will,
};
use crate::core::{EntryRecord, EntryState, Login, SessionRecord, StoredMessage};
use crate::types::{PacketId, QoS};

/// The layout version of every stored value.
pub const RECORD_VERSION: u8 = 1;

/// A stored value that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record layout version {found}, this build reads {RECORD_VERSION}")]
    Version { found: u8 },
    #[error("record ends inside its {field}")]
    Truncated { field: &'static str },
    #[error("invalid {field} in record")]
    Invalid { field: &'static str },
    #[error("{len} bytes left over after the record")]
    Trailing { len: usize },
}

pub fn encode_message(message: &StoredMessage) -> Vec<u8> {
    let mut out = Writer::new();
    out.message(message);
    out.finish()
}

pub fn decode_message(bytes: &[u8]) -> Result<StoredMessage, RecordError> {
    let mut input = Reader::new(bytes)?;
    let message = input.message()?;
    input.finish()?;
    Ok(message)
}

pub fn encode_entry(entry: &EntryRecord) -> Vec<u8> {
    let mut out = Writer::new();
    out.message(&entry.message);
    out.qos(entry.qos);
    out.buf.put_u8(u8::from(entry.retain));
    out.buf.put_u32(entry.subscription_ids.len() as u32);
    for id in &entry.subscription_ids {
        out.buf.put_u32(*id);
    }
    out.finish()
}

/// An entry without its state, which is kept apart (it changes as the flow goes on).
pub fn decode_entry(bytes: &[u8], state: EntryState) -> Result<EntryRecord, RecordError> {
    let mut input = Reader::new(bytes)?;
    let message = input.message()?;
    let qos = input.qos()?;
    let retain = input.flag("retain")?;
    let count = input.u32("subscription identifier count")?;
    let mut subscription_ids = Vec::new();
    for _ in 0..count {
        subscription_ids.push(input.u32("subscription identifier")?);
    }
    input.finish()?;
    Ok(EntryRecord {
        message,
        qos,
        retain,
        subscription_ids,
        state,
    })
}

/// Entry states as one integer: the kind in the high half, the packet id in the low.
pub fn encode_state(state: EntryState) -> u32 {
    match state {
        EntryState::Queued => 0,
        EntryState::Sent(id) => 1 << 16 | u32::from(id.get()),
        EntryState::Released(id) => 2 << 16 | u32::from(id.get()),
    }
}

pub fn decode_state(value: u32) -> Result<EntryState, RecordError> {
    let id = || PacketId::new(value as u16).ok_or(RecordError::Invalid { field: "packet id" });
    match value >> 16 {
        0 if value == 0 => Ok(EntryState::Queued),
        1 => Ok(EntryState::Sent(id()?)),
        2 => Ok(EntryState::Released(id()?)),
        _ => Err(RecordError::Invalid {
            field: "entry state",
        }),
    }
}

pub fn encode_session(record: &SessionRecord) -> Vec<u8> {
    let mut out = Writer::new();
    out.string(&record.client_id);
    out.buf.put_u8(record.version.level());
    out.buf.put_u32(record.expiry_secs);
    out.optional_u64(record.expires_at);
    out.buf.put_u32(record.subscriptions.len() as u32);
    for (filter, options, id) in &record.subscriptions {
        out.string(filter);
        out.qos(options.qos);
        out.buf.put_u8(u8::from(options.no_local));
        out.buf.put_u8(u8::from(options.retain_as_published));
        out.buf.put_u8(options.retain_handling as u8);
        out.optional_u32(*id);
    }
    match &record.pending_will {
        None => out.buf.put_u8(0),
        Some((will, at)) => {
            out.buf.put_u8(1);
            out.string(&will.topic);
            out.bytes(&will.payload);
            out.qos(will.qos);
            out.buf.put_u8(u8::from(will.retain));
            out.properties(&will.properties);
            out.buf.put_u64(*at);
        }
    }
    // Added after the first release of this layout: a record without it reads as an
    // anonymous login on the first listener.
    out.buf.put_u16(record.login.listener);
    match &record.login.user {
        None => out.buf.put_u8(0),
        Some(user) => {
            out.buf.put_u8(1);
            out.string(user);
        }
    }
    out.finish()
}

pub fn decode_session(bytes: &[u8]) -> Result<SessionRecord, RecordError> {
    let mut input = Reader::new(bytes)?;
    let client_id = input.string("client id")?;
    let version = match input.u8("protocol version")? {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        5 => ProtocolVersion::V5,
        _ => {
            return Err(RecordError::Invalid {
                field: "protocol version",
            })
        }
    };
    let expiry_secs = input.u32("session expiry")?;
    let expires_at = input.optional_u64("session deadline")?;
    let count = input.u32("subscription count")?;
    let mut subscriptions = Vec::new();
    for _ in 0..count {
        subscriptions.push(decode_subscription(&mut input)?);
    }
    let pending_will = match input.u8("will flag")? {
        0 => None,
        1 => Some(decode_pending_will(&mut input)?),
        _ => return Err(RecordError::Invalid { field: "will flag" }),
    };
    let login = decode_login(&mut input)?;
    input.finish()?;
    Ok(SessionRecord {
        client_id,
        version,
        expiry_secs,
        expires_at,
        subscriptions,
        pending_will,
        login,
    })
}

type StoredSubscription = (ByteStr, SubscriptionOptions, Option<u32>);

fn decode_subscription(input: &mut Reader) -> Result<StoredSubscription, RecordError> {
    let filter = input.string("topic filter")?;
    let mut options = SubscriptionOptions::new(input.qos()?);
    options.no_local = input.flag("no local")?;
    options.retain_as_published = input.flag("retain as published")?;
    options.retain_handling = match input.u8("retain handling")? {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtNewSubscribe,
        2 => RetainHandling::DoNotSend,
        _ => {
            return Err(RecordError::Invalid {
                field: "retain handling",
            })
        }
    };
    let id = input.optional_u32("subscription identifier")?;
    Ok((filter, options, id))
}

/// A will waiting for its delay, and its wall-clock deadline.
fn decode_pending_will(input: &mut Reader) -> Result<(Will, u64), RecordError> {
    let topic = input.string("will topic")?;
    let payload = input.bytes("will payload")?;
    let qos = input.qos()?;
    let retain = input.flag("will retain")?;
    let properties = input.properties(PropertyContext::Will)?;
    let at = input.u64("will deadline")?;
    let will = Will {
        topic,
        payload,
        qos,
        retain,
        properties,
    };
    Ok((will, at))
}

/// The session's login; records written before logins were stored have none (unknown).
fn decode_login(input: &mut Reader) -> Result<Login, RecordError> {
    if input.buf.is_empty() {
        return Ok(Login {
            unknown: true,
            ..Login::default()
        });
    }
    let listener = input.u16("login listener")?;
    let user = match input.u8("login user flag")? {
        0 => None,
        1 => Some(input.string("login user")?),
        _ => {
            return Err(RecordError::Invalid {
                field: "login user flag",
            })
        }
    };
    Ok(Login {
        listener,
        user,
        ..Login::default()
    })
}

struct Writer {
    buf: BytesMut,
}

impl Writer {
    fn new() -> Writer {
        let mut buf = BytesMut::new();
        buf.put_u8(RECORD_VERSION);
        Writer { buf }
    }

    fn finish(self) -> Vec<u8> {
        self.buf.to_vec()
    }

    fn string(&mut self, s: &ByteStr) {
        // A ByteStr is at most 65535 bytes.
        self.buf.put_u16(s.len() as u16);
        self.buf.put_slice(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.put_u32(b.len() as u32);
        self.buf.put_slice(b);
    }

    fn qos(&mut self, qos: QoS) {
        self.buf.put_u8(qos.bits());
    }

    fn optional_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.buf.put_u8(0),
            Some(value) => {
                self.buf.put_u8(1);
                self.buf.put_u64(value);
            }
        }
    }

    fn optional_u32(&mut self, value: Option<u32>) {
        match value {
            None => self.buf.put_u8(0),
            Some(value) => {
                self.buf.put_u8(1);
                self.buf.put_u32(value);
            }
        }
    }

    fn properties(&mut self, properties: &Properties) {
        // They were decoded from a packet, so they encode.
        encode_properties(properties, &mut self.buf).expect("received properties encode");
    }

    fn message(&mut self, message: &StoredMessage) {
        self.string(&message.topic);
        self.bytes(&message.payload);
        self.qos(message.qos);
        self.buf.put_u8(u8::from(message.retain));
        self.properties(&message.properties);
        self.string(&message.publisher);
        self.optional_u64(message.expires_at);
    }
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn new(bytes: &[u8]) -> Result<Reader, RecordError> {
        let mut reader = Reader {
            buf: Bytes::copy_from_slice(bytes),
        };
        let version = reader.u8("version")?;
        if version != RECORD_VERSION {
            return Err(RecordError::Version { found: version });
        }
        Ok(reader)
    }

    fn finish(self) -> Result<(), RecordError> {
        match self.buf.len() {
            0 => Ok(()),
            len => Err(RecordError::Trailing { len }),
        }
    }

    fn need(&self, len: usize, field: &'static str) -> Result<(), RecordError> {
        if self.buf.len() < len {
            return Err(RecordError::Truncated { field });
        }
        Ok(())
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        self.need(8, field)?;
        Ok(self.buf.get_u64())
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, RecordError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordError::Invalid { field }),
        }
    }

    fn qos(&mut self) -> Result<QoS, RecordError> {
        let value = self.u8("qos")?;
        QoS::from_bits(value).ok_or(RecordError::Invalid { field: "qos" })
    }

    fn string(&mut self, field: &'static str) -> Result<ByteStr, RecordError> {
        let len = usize::from(self.u16(field)?);
        self.need(len, field)?;
        ByteStr::from_bytes(self.buf.split_to(len)).map_err(|_| RecordError::Invalid { field })
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, RecordError> {
        let len = self.u32(field)? as usize;
        self.need(len, field)?;
        Ok(self.buf.split_to(len))
    }

    fn optional_u64(&mut self, field: &'static str) -> Result<Option<u64>, RecordError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.u64(field)?)),
            _ => Err(RecordError::Invalid { field }),
        }
    }

    fn optional_u32(&mut self, field: &'static str) -> Result<Option<u32>, RecordError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.u32(field)?)),
            _ => Err(RecordError::Invalid { field }),
        }
    }

    fn properties(&mut self, context: PropertyContext) -> Result<Properties, RecordError> {
        let (properties, used) =
            decode_properties(self.buf.clone(), context).map_err(|_| RecordError::Invalid {
                field: "properties",
            })?;
        self.buf.advance(used);
        Ok(properties)
    }

    fn message(&mut self) -> Result<StoredMessage, RecordError> {
        Ok(StoredMessage {
            topic: self.string("topic")?,
            payload: self.bytes("payload")?,
            qos: self.qos()?,
            retain: self.flag("retain")?,
            properties: self.properties(PropertyContext::Publish)?,
            publisher: self.string("publisher")?,
            expires_at: self.optional_u64("message deadline")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Property;

    fn s(text: &str) -> ByteStr {
        ByteStr::new(text).unwrap()
    }

    fn message() -> StoredMessage {
        StoredMessage {
            topic: s("a/b"),
            payload: Bytes::from_static(b"\x00payload\xff"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: vec![
                Property::ContentType(s("text/plain")),
                Property::UserProperty(s("k"), s("v")),
                Property::UserProperty(s("k"), s("v2")),
            ]
            .into(),
            publisher: s("pub"),
            expires_at: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn messages_entries_and_sessions_read_back_as_written() {
        let m = message();
        assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
        let entry = EntryRecord {
            message: m.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![1, 268_435_455],
            state: EntryState::Released(PacketId::new(65535).unwrap()),
        };
        assert_eq!(
            decode_entry(&encode_entry(&entry), entry.state).unwrap(),
            entry
        );
        let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
        options.no_local = true;
        options.retain_handling = RetainHandling::DoNotSend;
        let record = SessionRecord {
            client_id: s("client"),
            version: ProtocolVersion::V5,
            expiry_secs: u32::MAX,
            expires_at: None,
            subscriptions: vec![
                (s("$share/g/a/#"), options, Some(7)),
                (s("b"), SubscriptionOptions::new(QoS::AtMostOnce), None),
            ],
            login: Login {
                listener: 2,
                user: Some(s("alice")),
                ..Login::default()
            },
            pending_will: Some((
                Will {
                    topic: s("will"),
                    payload: Bytes::from_static(b"gone"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: vec![Property::WillDelayInterval(30)].into(),
                },
                1_700_000_030_000,
            )),
        };
        assert_eq!(decode_session(&encode_session(&record)).unwrap(), record);
        // A record written before logins were stored (no trailing login) reads as anonymous
        // on the first listener; a damaged login is refused.
        let bytes = encode_session(&record);
        let login_bytes = 2 + 1 + 2 + "alice".len();
        let old = decode_session(&bytes[..bytes.len() - login_bytes]).unwrap();
        assert!(old.login.unknown, "adopted by the first login");
        assert!(decode_session(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn states_pack_into_one_integer_and_back() {
        let id = PacketId::new(513).unwrap();
        for state in [
            EntryState::Queued,
            EntryState::Sent(id),
            EntryState::Released(id),
        ] {
            assert_eq!(decode_state(encode_state(state)), Ok(state));
        }
        assert!(decode_state(1 << 16).is_err(), "packet id 0");
        assert!(decode_state(3 << 16 | 1).is_err());
        assert!(decode_state(5).is_err(), "queued with an id");
    }

    #[test]
    fn damaged_records_are_refused_with_what_is_wrong() {
        let bytes = encode_message(&message());
        assert_eq!(
            decode_message(&bytes[..bytes.len() - 3]),
            Err(RecordError::Truncated {
                field: "message deadline"
            })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_message(&longer),
            Err(RecordError::Trailing { len: 1 })
        );
        let mut newer = bytes.clone();
        newer[0] = RECORD_VERSION + 1;
        assert_eq!(
            decode_message(&newer),
            Err(RecordError::Version {
                found: RECORD_VERSION + 1
            })
        );
        // Every prefix is refused, never misread or a panic.
        for len in 0..bytes.len() {
            assert!(decode_message(&bytes[..len]).is_err());
        }
    }
}
