//! Just enough MQTT for the front end: framing, CONNECT parse/rewrite, PUBLISH → [`Event`],
//! CONNACK refusals. Packets other than CONNECT are forwarded byte for byte.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{self, Packet, Protocol, v4::V4, v5::V5};

use crate::event::Event;

pub(crate) const CONNECT: u8 = 1;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const DISCONNECT: u8 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V4,
    V5,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed remaining length")]
    BadLength,
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("unsupported protocol {0:?} level {1}")]
    UnsupportedProtocol(String, u8),
    #[error("payload of {0} bytes exceeds mqtt.max_payload_bytes")]
    PayloadTooLarge(usize),
    #[error("topic alias {0} was never set")]
    UnknownAlias(u16),
}

impl From<protocol::Error> for CodecError {
    fn from(e: protocol::Error) -> Self {
        CodecError::Malformed(e.to_string())
    }
}

/// Packet type of a frame.
pub(crate) fn packet_type(frame: &[u8]) -> u8 {
    frame.first().map(|b| b >> 4).unwrap_or(0)
}

/// (remaining length, bytes of the fixed header) if `buf` holds the whole fixed header.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((len, 2 + i)));
        }
    }
    Err(CodecError::BadLength)
}

/// Length of the first complete packet in `buf`, if there is one.
pub(crate) fn frame_len(buf: &[u8], max_remaining: usize) -> Result<Option<usize>, CodecError> {
    let Some((remaining, header)) = fixed_header(buf)? else {
        return Ok(None);
    };
    if remaining > max_remaining {
        return Err(CodecError::TooLarge(remaining));
    }
    let total = header + remaining;
    Ok((buf.len() >= total).then_some(total))
}

/// Protocol of a CONNECT frame: MQTT 3.1.1 (level 4) or 5.
pub(crate) fn connect_version(frame: &[u8]) -> Result<Version, CodecError> {
    let (_, header) = fixed_header(frame)?.ok_or(CodecError::BadLength)?;
    let body = &frame[header..];
    let malformed = || CodecError::Malformed("short CONNECT".into());
    let name_len = u16::from_be_bytes([
        *body.first().ok_or_else(malformed)?,
        *body.get(1).ok_or_else(malformed)?,
    ]) as usize;
    let name = body.get(2..2 + name_len).ok_or_else(malformed)?;
    let level = *body.get(2 + name_len).ok_or_else(malformed)?;
    match (name, level) {
        (b"MQTT", 4) => Ok(Version::V4),
        (b"MQTT", 5) => Ok(Version::V5),
        _ => Err(CodecError::UnsupportedProtocol(
            String::from_utf8_lossy(name).into_owned(),
            level,
        )),
    }
}

/// What the front end needs from a CONNECT.
pub(crate) struct ConnectInfo {
    pub(crate) client_id: String,
    pub(crate) login: Option<(String, String)>,
    /// The will as the event to record if the client vanishes.
    pub(crate) will: Option<Event>,
    packet: Packet,
}

fn read(version: Version, frame: &[u8], max: usize) -> Result<Packet, CodecError> {
    let mut b = BytesMut::from(frame);
    Ok(match version {
        Version::V4 => V4.read_mut(&mut b, max)?,
        Version::V5 => V5.read_mut(&mut b, max)?,
    })
}

pub(crate) fn parse_connect(
    version: Version,
    frame: &[u8],
    max: usize,
) -> Result<ConnectInfo, CodecError> {
    let packet = read(version, frame, max)?;
    let Packet::Connect(connect, _, will, will_props, login) = &packet else {
        return Err(CodecError::Malformed("first packet is not CONNECT".into()));
    };
    let client_id = connect.client_id.clone();
    let will = match will {
        Some(w) => {
            let topic = String::from_utf8(w.topic.to_vec())
                .map_err(|_| CodecError::Malformed("will topic is not UTF-8".into()))?;
            Some(Event {
                topic,
                payload: w.message.clone(),
                qos: w.qos as u8,
                retain: w.retain,
                client_id: (!client_id.is_empty()).then(|| client_id.clone()),
                content_type: will_props.as_ref().and_then(|p| p.content_type.clone()),
                user_properties: will_props
                    .as_ref()
                    .map(|p| p.user_properties.clone())
                    .unwrap_or_default(),
            })
        }
        None => None,
    };
    let login = login
        .as_ref()
        .map(|l| (l.username.clone(), l.password.clone()));
    Ok(ConnectInfo {
        client_id,
        login,
        will,
        packet,
    })
}

/// Re-encodes the CONNECT for the internal router: our credentials instead of the client's
/// (checked already), and keep-alive 0 ("none", which rumqttd refuses) as the maximum.
pub(crate) fn rewrite_connect(
    version: Version,
    info: ConnectInfo,
    user: &str,
    password: &str,
) -> Result<BytesMut, CodecError> {
    let mut packet = info.packet;
    if let Packet::Connect(connect, _, _, _, login) = &mut packet {
        if connect.keep_alive == 0 {
            connect.keep_alive = u16::MAX;
        }
        *login = Some(protocol::Login {
            username: user.to_string(),
            password: password.to_string(),
        });
    }
    let mut out = BytesMut::new();
    match version {
        Version::V4 => V4.write(packet, &mut out)?,
        Version::V5 => V5.write(packet, &mut out)?,
    };
    Ok(out)
}

/// Per-connection PUBLISH decoding state (MQTT 5 topic aliases).
#[derive(Default)]
pub(crate) struct PublishDecoder {
    aliases: HashMap<u16, String>,
}

impl PublishDecoder {
    /// The event for a PUBLISH frame. QoS and retain come from the fixed header.
    pub(crate) fn event(
        &mut self,
        version: Version,
        frame: &[u8],
        client_id: &str,
        max_packet: usize,
        max_payload: usize,
    ) -> Result<Event, CodecError> {
        let byte1 = frame.first().copied().unwrap_or(0);
        let qos = (byte1 >> 1) & 3;
        if qos == 3 {
            return Err(CodecError::Malformed("PUBLISH with QoS 3".into()));
        }
        let Packet::Publish(publish, props) = read(version, frame, max_packet)? else {
            return Err(CodecError::Malformed("not a PUBLISH".into()));
        };
        if publish.payload.len() > max_payload {
            return Err(CodecError::PayloadTooLarge(publish.payload.len()));
        }
        let mut topic = String::from_utf8(publish.topic.to_vec())
            .map_err(|_| CodecError::Malformed("topic is not UTF-8".into()))?;
        let (content_type, user_properties, alias) = match props {
            Some(p) => (p.content_type, p.user_properties, p.topic_alias),
            None => (None, Vec::new(), None),
        };
        if let Some(alias) = alias {
            if topic.is_empty() {
                topic = self
                    .aliases
                    .get(&alias)
                    .cloned()
                    .ok_or(CodecError::UnknownAlias(alias))?;
            } else {
                self.aliases.insert(alias, topic.clone());
            }
        }
        if topic.is_empty() {
            return Err(CodecError::Malformed("empty topic".into()));
        }
        Ok(Event {
            topic,
            payload: publish.payload,
            qos,
            retain: byte1 & 1 == 1,
            client_id: (!client_id.is_empty()).then(|| client_id.to_string()),
            content_type,
            user_properties,
        })
    }
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnsupportedVersion,
    BadClientId,
    ServerUnavailable,
    BadCredentials,
    NotAuthorized,
}

/// A refusing CONNACK in the client's protocol.
pub(crate) fn connack_refusal(version: Version, why: Refusal) -> Bytes {
    let (v4, v5) = match why {
        Refusal::UnsupportedVersion => (0x01, 0x84),
        Refusal::BadClientId => (0x02, 0x85),
        Refusal::ServerUnavailable => (0x03, 0x89),
        Refusal::BadCredentials => (0x04, 0x86),
        Refusal::NotAuthorized => (0x05, 0x87),
    };
    match version {
        Version::V4 => Bytes::from(vec![0x20, 0x02, 0x00, v4]),
        Version::V5 => Bytes::from(vec![0x20, 0x03, 0x00, v5, 0x00]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_connect(client: &str, keep_alive: u16, login: Option<(&str, &str)>) -> BytesMut {
        let packet = Packet::Connect(
            protocol::Connect {
                keep_alive,
                client_id: client.into(),
                clean_session: true,
            },
            None,
            Some(protocol::LastWill {
                topic: Bytes::from_static(b"dead/plc"),
                message: Bytes::from_static(b"gone"),
                qos: protocol::QoS::AtLeastOnce,
                retain: true,
            }),
            None,
            login.map(|(u, p)| protocol::Login {
                username: u.into(),
                password: p.into(),
            }),
        );
        let mut b = BytesMut::new();
        V4.write(packet, &mut b).expect("encode");
        b
    }

    #[test]
    fn framing() {
        assert_eq!(frame_len(&[0x30], 100).expect("ok"), None);
        assert_eq!(frame_len(&[0x30, 0x02, 0, 0], 100).expect("ok"), Some(4));
        assert_eq!(frame_len(&[0x30, 0x03, 0, 0], 100).expect("ok"), None);
        assert!(matches!(
            frame_len(&[0x30, 0x80, 0x01], 100),
            Err(CodecError::TooLarge(128))
        ));
        assert!(frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX).is_err());
    }

    #[test]
    fn connect_parse_and_rewrite() {
        let frame = v4_connect("plc-1", 0, Some(("u", "p")));
        assert_eq!(connect_version(&frame).expect("version"), Version::V4);
        let info = parse_connect(Version::V4, &frame, 1 << 20).expect("parse");
        assert_eq!(info.client_id, "plc-1");
        assert_eq!(info.login, Some(("u".into(), "p".into())));
        let will = info.will.clone().expect("will");
        assert_eq!(
            (will.topic.as_str(), will.qos, will.retain),
            ("dead/plc", 1, true)
        );
        let out = rewrite_connect(Version::V4, info, "internal", "secret").expect("rewrite");
        let again = parse_connect(Version::V4, &out, 1 << 20).expect("reparse");
        assert_eq!(again.login, Some(("internal".into(), "secret".into())));
        let Packet::Connect(c, ..) = again.packet else {
            panic!("connect")
        };
        assert_eq!(c.keep_alive, u16::MAX);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            &connack_refusal(Version::V4, Refusal::BadCredentials)[..],
            &[0x20, 2, 0, 4]
        );
        assert_eq!(
            &connack_refusal(Version::V5, Refusal::NotAuthorized)[..],
            &[0x20, 3, 0, 0x87, 0]
        );
    }
}
