//! Just enough MQTT for the front end: framing, CONNECT parse/rewrite, PUBLISH → [`Event`],
//! CONNACK refusals. Packets other than CONNECT are forwarded byte for byte.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{self, Packet, Protocol, v4::V4, v5::V5};

use crate::event::Event;

pub(crate) const CONNECT: u8 = 1;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PINGRESP: u8 = 13;
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

/// Re-encodes the CONNECT as MQTT 5 for the internal router: our credentials instead of the
/// client's (checked already), and keep-alive 0 ("none", which rumqttd refuses) as the maximum.
pub(crate) fn rewrite_connect(
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
    V5.write(packet, &mut out)?;
    Ok(out)
}

// Every client talks MQTT 5 to the internal router: rumqttd 0.20 panics (`unreachable!` in its
// v4 encoder) when it forwards a publish that carries MQTT 5 properties to a 3.1.1 subscriber,
// killing that subscriber's connection. So 3.1.1 clients are translated here, which for the
// packets a client and a router exchange is only adding or removing empty properties.

fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.extend_from_slice(&[b]);
        if n == 0 {
            return;
        }
    }
}

/// (value, bytes used) of a variable byte integer at the start of `b`.
fn varint(b: &[u8]) -> Result<(usize, usize), CodecError> {
    let mut n = 0usize;
    for i in 0..4 {
        let byte = *b
            .get(i)
            .ok_or_else(|| CodecError::Malformed("short property length".into()))?;
        n |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((n, i + 1));
        }
    }
    Err(CodecError::BadLength)
}

fn put_frame(out: &mut BytesMut, byte1: u8, parts: &[&[u8]]) {
    out.extend_from_slice(&[byte1]);
    put_varint(out, parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
}

fn body(frame: &[u8]) -> Result<&[u8], CodecError> {
    let (_, header) = fixed_header(frame)?.ok_or(CodecError::BadLength)?;
    Ok(&frame[header..])
}

/// Length of PUBLISH topic plus packet id at the start of `body`.
fn publish_head(byte1: u8, body: &[u8]) -> Result<usize, CodecError> {
    let short = || CodecError::Malformed("short PUBLISH".into());
    let topic_len = u16::from_be_bytes([
        *body.first().ok_or_else(short)?,
        *body.get(1).ok_or_else(short)?,
    ]) as usize;
    let head = 2 + topic_len + if (byte1 >> 1) & 3 > 0 { 2 } else { 0 };
    if body.len() < head {
        return Err(short());
    }
    Ok(head)
}

/// One MQTT 3.1.1 client packet (not CONNECT) as MQTT 5, appended to `out`.
pub(crate) fn v4_to_v5(frame: &[u8], out: &mut BytesMut) -> Result<(), CodecError> {
    let byte1 = frame[0];
    let b = body(frame)?;
    // Where MQTT 5 expects a property length: after the topic and packet id of a PUBLISH,
    // after the packet id of (UN)SUBSCRIBE. Acks, PINGREQ and DISCONNECT are valid as they are.
    let at = match byte1 >> 4 {
        PUBLISH => publish_head(byte1, b)?,
        8 | 10 if b.len() >= 2 => 2,
        8 | 10 => return Err(CodecError::Malformed("short SUBSCRIBE".into())),
        _ => {
            out.extend_from_slice(frame);
            return Ok(());
        }
    };
    put_frame(out, byte1, &[&b[..at], &[0], &b[at..]]);
    Ok(())
}

/// One MQTT 5 router packet as MQTT 3.1.1, appended to `out`; `false` for a server
/// DISCONNECT, which 3.1.1 expresses by closing the connection.
pub(crate) fn v5_to_v4(frame: &[u8], out: &mut BytesMut) -> Result<bool, CodecError> {
    let byte1 = frame[0];
    let b = body(frame)?;
    let short = || CodecError::Malformed(format!("short packet type {}", byte1 >> 4));
    match byte1 >> 4 {
        PUBLISH => {
            let head = publish_head(byte1, b)?;
            let (props, used) = varint(&b[head..])?;
            let payload = b.get(head + used + props..).ok_or_else(short)?;
            put_frame(out, byte1, &[&b[..head], payload]);
        }
        // CONNACK: map the reason code onto the six 3.1.1 return codes.
        2 => {
            let flags = *b.first().ok_or_else(short)?;
            let code = match *b.get(1).ok_or_else(short)? {
                0 => 0,
                0x84 => 1,
                0x85 => 2,
                0x86 => 4,
                0x87 | 0x8c => 5,
                _ => 3,
            };
            put_frame(out, 0x20, &[&[flags & 1, code]]);
        }
        // PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK: packet id only.
        4..=7 | 11 => put_frame(out, byte1, &[b.get(..2).ok_or_else(short)?]),
        // SUBACK: drop properties; failures become 0x80.
        9 => {
            let pkid = b.get(..2).ok_or_else(short)?;
            let (props, used) = varint(&b[2..])?;
            let codes: Vec<u8> = b
                .get(2 + used + props..)
                .ok_or_else(short)?
                .iter()
                .map(|&c| if c <= 2 { c } else { 0x80 })
                .collect();
            put_frame(out, 0x90, &[pkid, &codes]);
        }
        DISCONNECT => return Ok(false),
        // AUTH does not exist in 3.1.1.
        15 => {}
        _ => out.extend_from_slice(frame),
    }
    Ok(true)
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
    use rumqttd::protocol::PublishProperties;

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
        let out = rewrite_connect(info, "internal", "secret").expect("rewrite");
        assert_eq!(connect_version(&out).expect("version"), Version::V5);
        let again = parse_connect(Version::V5, &out, 1 << 20).expect("reparse");
        assert_eq!(again.login, Some(("internal".into(), "secret".into())));
        let Packet::Connect(c, ..) = again.packet else {
            panic!("connect")
        };
        assert_eq!(c.keep_alive, u16::MAX);
    }

    #[test]
    fn v4_v5_translation_round_trips() {
        let mut p = BytesMut::new();
        V4.write(
            Packet::Publish(
                {
                    let mut p = protocol::Publish::new(
                        Bytes::from_static(b"a/b"),
                        Bytes::from_static(b"xyz"),
                        true,
                    );
                    p.retain = true;
                    p
                },
                None,
            ),
            &mut p,
        )
        .expect("encode");
        let mut v5 = BytesMut::new();
        v4_to_v5(&p, &mut v5).expect("to v5");
        let Packet::Publish(pub5, props) =
            V5.read_mut(&mut v5.clone(), 1 << 20).expect("v5 parses")
        else {
            panic!("publish")
        };
        assert_eq!(
            (&pub5.topic[..], &pub5.payload[..], pub5.retain, props),
            (&b"a/b"[..], &b"xyz"[..], true, None)
        );
        let mut back = BytesMut::new();
        assert!(v5_to_v4(&v5, &mut back).expect("to v4"));
        assert_eq!(back, p);
        // SUBSCRIBE gains an empty property length after the packet id.
        let sub = [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1];
        let mut v5 = BytesMut::new();
        v4_to_v5(&sub, &mut v5).expect("sub");
        assert_eq!(&v5[..], &[0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'#', 1]);
        // Router acks and CONNACK lose reason codes and properties.
        let mut out = BytesMut::new();
        v5_to_v4(&[0x20, 3, 0, 0, 0], &mut out).expect("connack");
        v5_to_v4(&[0x40, 4, 0, 7, 0, 0], &mut out).expect("puback");
        v5_to_v4(&[0x90, 5, 0, 2, 0, 1, 0x87], &mut out).expect("suback");
        assert_eq!(
            &out[..],
            &[0x20, 2, 0, 0, 0x40, 2, 0, 7, 0x90, 4, 0, 2, 1, 0x80]
        );
        assert!(!v5_to_v4(&[0xe0, 1, 0x8e], &mut out).expect("disconnect"));
    }

    #[test]
    fn mqtt5_topic_alias_is_resolved() {
        let publish = |topic: &'static [u8], alias: u16, payload: &'static [u8]| {
            let props = PublishProperties {
                topic_alias: Some(alias),
                content_type: Some("a/b".into()),
                ..Default::default()
            };
            let mut b = BytesMut::new();
            V5.write(
                Packet::Publish(
                    protocol::Publish::new(
                        Bytes::from_static(topic),
                        Bytes::from_static(payload),
                        false,
                    ),
                    Some(props),
                ),
                &mut b,
            )
            .expect("encode");
            b
        };
        let mut d = PublishDecoder::default();
        let first = d
            .event(
                Version::V5,
                &publish(b"plant/t", 3, b"1"),
                "c",
                1 << 20,
                1 << 20,
            )
            .expect("first");
        assert_eq!(
            (first.topic.as_str(), first.content_type.as_deref()),
            ("plant/t", Some("a/b"))
        );
        let second = d
            .event(Version::V5, &publish(b"", 3, b"2"), "c", 1 << 20, 1 << 20)
            .expect("aliased");
        assert_eq!(
            (second.topic.as_str(), &second.payload[..]),
            ("plant/t", &b"2"[..])
        );
        assert!(matches!(
            d.event(Version::V5, &publish(b"", 4, b"3"), "c", 1 << 20, 1 << 20),
            Err(CodecError::UnknownAlias(4))
        ));
        assert!(matches!(
            d.event(
                Version::V5,
                &publish(b"plant/t", 3, b"big"),
                "c",
                1 << 20,
                2
            ),
            Err(CodecError::PayloadTooLarge(3))
        ));
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
