//! The unit that flows through the gateway: one accepted MQTT publish, as stored in the buffer.
//!
//! Encoding (version 1), all integers little-endian, strings UTF-8 with a u16 length prefix:
//! `version u8 | flags u8 (bit0 retain, bit1 client id, bit2 content type) | qos u8 | topic |
//! [client id] | [content type] | property count u16 | (name, value)* | payload (the rest)`.

use bytes::Bytes;

const VERSION: u8 = 1;
const RETAIN: u8 = 1;
const HAS_CLIENT: u8 = 2;
const HAS_CONTENT_TYPE: u8 = 4;

/// One accepted MQTT publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// The publishing client, where the broker reports it.
    pub client_id: Option<String>,
    /// MQTT 5 content type.
    pub content_type: Option<String>,
    /// MQTT 5 user properties, in order.
    pub user_properties: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record is truncated")]
    Truncated,
    #[error("event record has unknown version {0}")]
    Version(u8),
    #[error("event record holds invalid UTF-8")]
    Utf8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} is longer than 65535 bytes")]
pub struct EncodeError {
    what: &'static str,
}

fn put_str(buf: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError { what })?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }
}

impl Event {
    /// Appends the encoded event to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut flags = 0;
        if self.retain {
            flags |= RETAIN;
        }
        if self.client_id.is_some() {
            flags |= HAS_CLIENT;
        }
        if self.content_type.is_some() {
            flags |= HAS_CONTENT_TYPE;
        }
        buf.extend_from_slice(&[VERSION, flags, self.qos]);
        put_str(buf, &self.topic, "topic")?;
        if let Some(c) = &self.client_id {
            put_str(buf, c, "client id")?;
        }
        if let Some(c) = &self.content_type {
            put_str(buf, c, "content type")?;
        }
        let n = u16::try_from(self.user_properties.len()).map_err(|_| EncodeError {
            what: "user property list",
        })?;
        buf.extend_from_slice(&n.to_le_bytes());
        for (k, v) in &self.user_properties {
            put_str(buf, k, "user property name")?;
            put_str(buf, v, "user property value")?;
        }
        buf.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Decodes an event; the payload shares `record`'s memory.
    pub fn decode(record: &Bytes) -> Result<Event, DecodeError> {
        let mut c = Cursor(record);
        let version = c.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags = c.u8()?;
        let qos = c.u8()?;
        let topic = c.string()?;
        let client_id = if flags & HAS_CLIENT != 0 {
            Some(c.string()?)
        } else {
            None
        };
        let content_type = if flags & HAS_CONTENT_TYPE != 0 {
            Some(c.string()?)
        } else {
            None
        };
        let n = c.u16()?;
        let mut user_properties = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            user_properties.push((c.string()?, c.string()?));
        }
        let payload = record.slice(record.len() - c.0.len()..);
        Ok(Event {
            topic,
            payload,
            qos,
            retain: flags & RETAIN != 0,
            client_id,
            content_type,
            user_properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let e = Event {
            topic: "plant/line1/temp".into(),
            payload: Bytes::from_static(b"21.5"),
            qos: 1,
            retain: true,
            client_id: Some("plc-7".into()),
            content_type: Some("text/plain".into()),
            user_properties: vec![("unit".into(), "degC".into())],
        };
        let mut buf = Vec::new();
        e.encode(&mut buf).expect("encodes");
        let bytes = Bytes::from(buf);
        assert_eq!(Event::decode(&bytes), Ok(e));
        for cut in 0..bytes.len() - 4 {
            assert!(
                Event::decode(&bytes.slice(..cut)).is_err(),
                "cut at {cut} decoded"
            );
        }
    }
}
