//! Decoding: framing a byte stream into packets, and each packet type's variable header and
//! payload, with the checks the specifications make on them.

use bytes::{Bytes, BytesMut};

use super::error::{DecodeError, malformed, protocol_error};
use super::packet::*;
use super::properties::{self as props, Prop};
use super::read::{Reader, Vbi, read_vbi};
use super::spec::{self, *};

/// Which side of the connection decodes: the checks on packet order and direction differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

/// Frames and decodes the packets of one connection.
///
/// After an error the connection must be closed: the decoder's state is then unspecified.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_packet_size: usize,
    protocol: Option<Protocol>,
    role: Role,
}

impl Decoder {
    /// A server's decoder: the first packet must be a CONNECT, which fixes the protocol.
    /// `max_packet_size` counts the whole packet, fixed header included, as MQTT 5's Maximum
    /// Packet Size does.
    pub fn new(max_packet_size: usize) -> Decoder {
        Decoder {
            max_packet_size,
            protocol: None,
            role: Role::Server,
        }
    }

    /// A client's decoder (tests, test clients): decodes what a server sends, in `protocol`.
    /// No check on order (CONNACK first) is made.
    pub fn client(protocol: Protocol, max_packet_size: usize) -> Decoder {
        Decoder {
            max_packet_size,
            protocol: Some(protocol),
            role: Role::Client,
        }
    }

    /// The connection's protocol: known from the CONNECT's protocol level on, also when the
    /// rest of that CONNECT was refused, so that the refusal can be answered in its format.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Changes the limit, e.g. from a small one for the CONNECT to the configured one after it.
    pub fn set_max_packet_size(&mut self, max_packet_size: usize) {
        self.max_packet_size = max_packet_size;
    }

    /// Takes one packet off the front of `buf`. `Ok(None)`: `buf` does not hold a whole packet
    /// yet and nothing was consumed. A packet over the maximum size is refused as soon as its
    /// fixed header is readable; its type, flags and place in the connection as soon as its
    /// first byte is.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let kind = first >> 4;
        let name = packet_name(kind);
        self.check_first_byte(first)
            .map_err(|e| e.in_packet(name))?;
        let (remaining, header_len) = match read_vbi(buf.get(1..).unwrap_or_default()) {
            Vbi::Done(len, n) => (len as usize, 1 + n),
            Vbi::Incomplete => return Ok(None),
            Vbi::TooLong => {
                return Err(malformed("remaining length of more than 4 bytes").in_packet(name));
            }
        };
        let size = header_len + remaining;
        if size > self.max_packet_size {
            return Err(DecodeError::TooLarge {
                packet: name,
                size,
                max: self.max_packet_size,
            });
        }
        if buf.len() < size {
            return Ok(None);
        }
        let frame = buf.split_to(size).freeze();
        let mut r = Reader::new(&frame, header_len);
        let protocol = self.protocol.unwrap_or_default();
        body(kind, first & 0x0F, protocol, &mut r, &mut self.protocol)
            .map(Some)
            .map_err(|e| e.in_packet(name))
    }

    /// Type and flags [MQTT-2.1.3-1], then whether this packet may come now from this side.
    fn check_first_byte(&self, first: u8) -> Result<(), DecodeError> {
        let kind = first >> 4;
        check_type_and_flags(kind, first & 0x0F, self.protocol)?;
        match (self.role, self.protocol, kind) {
            // [MQTT-3.1.0-1]
            (Role::Server, None, CONNECT) => Ok(()),
            (Role::Server, None, _) => Err(protocol_error("the first packet must be CONNECT")),
            // [MQTT-3.1.0-2]
            (Role::Server, Some(_), CONNECT) => {
                Err(protocol_error("second CONNECT on the connection"))
            }
            (Role::Server, Some(_), CONNACK | SUBACK | UNSUBACK | PINGRESP) => {
                Err(protocol_error("a packet only a server sends"))
            }
            (Role::Client, _, CONNECT | SUBSCRIBE | UNSUBSCRIBE | PINGREQ) => {
                Err(protocol_error("a packet only a client sends"))
            }
            _ => Ok(()),
        }
    }
}

/// Decodes one whole packet, fixed header included, with no check on direction or order (for
/// tests and tools). A CONNECT is decoded in the protocol its own level names.
pub fn decode_packet(protocol: Protocol, frame: &[u8]) -> Result<Packet, DecodeError> {
    let Some(&first) = frame.first() else {
        return Err(malformed("empty frame").in_packet("packet"));
    };
    let kind = first >> 4;
    let name = packet_name(kind);
    let result = (|| {
        check_type_and_flags(kind, first & 0x0F, Some(protocol))?;
        let header_len = match read_vbi(frame.get(1..).unwrap_or_default()) {
            Vbi::Done(len, n) if frame.len() - 1 - n == len as usize => 1 + n,
            Vbi::Done(..) => {
                return Err(malformed("frame length differs from the remaining length"));
            }
            Vbi::Incomplete => return Err(malformed("frame ends inside the remaining length")),
            Vbi::TooLong => return Err(malformed("remaining length of more than 4 bytes")),
        };
        let frame = Bytes::copy_from_slice(frame);
        let mut r = Reader::new(&frame, header_len);
        body(kind, first & 0x0F, protocol, &mut r, &mut None)
    })();
    result.map_err(|e| e.in_packet(name))
}

/// Reserved types and the fixed header flags each type must carry.
fn check_type_and_flags(
    kind: u8,
    flags: u8,
    protocol: Option<Protocol>,
) -> Result<(), DecodeError> {
    match kind {
        0 => return Err(malformed("reserved packet type 0")),
        AUTH if protocol == Some(Protocol::V311) => {
            return Err(malformed("packet type 15 is reserved in MQTT 3.1.1"));
        }
        _ => {}
    }
    match spec::required_flags(kind) {
        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1] and the zeros of [MQTT-2.1.3-1].
        Some(required) if flags != required => Err(malformed(format!(
            "fixed header flags 0b{flags:04b} (must be 0b{required:04b})"
        ))),
        Some(_) => Ok(()),
        None => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                // [MQTT-3.3.1-4]
                return Err(malformed("QoS 3"));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                // [MQTT-3.3.1-2]
                return Err(malformed("DUP set on a QoS 0 message"));
            }
            Ok(())
        }
    }
}

fn body(
    kind: u8,
    flags: u8,
    protocol: Protocol,
    r: &mut Reader<'_>,
    connect_protocol: &mut Option<Protocol>,
) -> Result<Packet, DecodeError> {
    let v5 = protocol == Protocol::V5;
    let packet = match kind {
        CONNECT => Packet::Connect(connect(r, connect_protocol)?),
        CONNACK => Packet::ConnAck(connack(r, v5)?),
        PUBLISH => Packet::Publish(publish(r, flags, v5)?),
        PUBACK => Packet::PubAck(pub_resp(r, kind, v5)?),
        PUBREC => Packet::PubRec(pub_resp(r, kind, v5)?),
        PUBREL => Packet::PubRel(pub_resp(r, kind, v5)?),
        PUBCOMP => Packet::PubComp(pub_resp(r, kind, v5)?),
        SUBSCRIBE => Packet::Subscribe(subscribe(r, v5)?),
        SUBACK => Packet::SubAck(suback(r, v5)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(r, v5)?),
        UNSUBACK => Packet::UnsubAck(unsuback(r, v5)?),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect(disconnect(r, v5)?),
        AUTH => Packet::Auth(auth(r)?),
        _ => return Err(malformed("reserved packet type")),
    };
    r.finish()?;
    Ok(packet)
}

/// A packet identifier where one is required: never 0 ([MQTT-2.2.1-3] for PUBLISH, SUBSCRIBE
/// and UNSUBSCRIBE; acknowledgements carry the same, [MQTT-2.2.1-5]/-6).
fn packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16("packet identifier")? {
        0 => Err(protocol_error("packet identifier 0")),
        id => Ok(id),
    }
}

fn reason_code(r: &mut Reader<'_>, kind: u8) -> Result<u8, DecodeError> {
    let code = r.u8("reason code")?;
    if spec::valid_reason(kind, code) {
        Ok(code)
    } else {
        Err(malformed(format!(
            "reason code 0x{code:02X} is not one this packet has"
        )))
    }
}

fn connect(
    r: &mut Reader<'_>,
    connect_protocol: &mut Option<Protocol>,
) -> Result<Connect, DecodeError> {
    // Name and level first: a client of another protocol is told so, whatever else it sent.
    let name = r.string("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (name.as_str(), level) {
        ("MQTT", 4) => Protocol::V311,
        ("MQTT", 5) => Protocol::V5,
        // [MQTT-3.1.2-1], [MQTT-3.1.2-2]; MQTT 3.1 ("MQIsdp", 3) included.
        _ => {
            let name = name.chars().take(16).collect();
            return Err(DecodeError::UnsupportedProtocol { name, level });
        }
    };
    *connect_protocol = Some(protocol);
    let v5 = protocol == Protocol::V5;

    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        // [MQTT-3.1.2-3]
        return Err(malformed("reserved connect flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && will_qos != 0 {
        // [MQTT-3.1.2-11] (5.0), [MQTT-3.1.2-13] (3.1.1)
        return Err(malformed("will QoS without the will flag"));
    }
    if !will_flag && will_retain {
        // [MQTT-3.1.2-13] (5.0), [MQTT-3.1.2-15] (3.1.1)
        return Err(malformed("will retain without the will flag"));
    }
    let Some(will_qos) = QoS::from_u8(will_qos) else {
        // [MQTT-3.1.2-12] (5.0), [MQTT-3.1.2-14] (3.1.1)
        return Err(malformed("will QoS 3"));
    };
    if !v5 && password_flag && !username_flag {
        // [MQTT-3.1.2-22] (3.1.1 only: MQTT 5 allows a password alone)
        return Err(malformed("password flag without the user name flag"));
    }
    let keep_alive = r.u16("keep alive")?;

    let mut properties = ConnectProperties {
        // Absent means 1 (3.1.2.11.7).
        request_problem_information: true,
        ..ConnectProperties::default()
    };
    if v5 {
        let p = &mut properties;
        props::read(r, &props::CONNECT, |prop| {
            match prop {
                Prop::SessionExpiryInterval(v) => p.session_expiry_interval = v,
                Prop::ReceiveMaximum(v) => p.receive_maximum = Some(v),
                Prop::MaximumPacketSize(v) => p.maximum_packet_size = Some(v),
                Prop::TopicAliasMaximum(v) => p.topic_alias_maximum = v,
                Prop::RequestResponseInformation(v) => p.request_response_information = v,
                Prop::RequestProblemInformation(v) => p.request_problem_information = v,
                Prop::UserProperty(k, v) => p.user_properties.push((k, v)),
                Prop::AuthenticationMethod(v) => p.authentication_method = Some(v),
                Prop::AuthenticationData(v) => p.authentication_data = Some(v),
                _ => return Err(props::unexpected()),
            }
            Ok(())
        })?;
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            // 3.1.2.11.10
            return Err(protocol_error(
                "authentication data without an authentication method",
            ));
        }
    }

    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let mut wp = WillProperties::default();
        if v5 {
            let p = &mut wp;
            props::read(r, &props::WILL, |prop| {
                match prop {
                    Prop::WillDelayInterval(v) => p.will_delay_interval = v,
                    Prop::PayloadFormatIndicator(v) => p.payload_format_indicator = Some(v),
                    Prop::MessageExpiryInterval(v) => p.message_expiry_interval = Some(v),
                    Prop::ContentType(v) => p.content_type = Some(v),
                    Prop::ResponseTopic(v) => p.response_topic = Some(v),
                    Prop::CorrelationData(v) => p.correlation_data = Some(v),
                    Prop::UserProperty(k, v) => p.user_properties.push((k, v)),
                    _ => return Err(props::unexpected()),
                }
                Ok(())
            })?;
        }
        Some(Will {
            topic: r.string("will topic")?,
            payload: r.binary("will payload")?,
            qos: will_qos,
            retain: will_retain,
            properties: wp,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        username,
        password,
        will,
        properties,
    })
}

fn connack(r: &mut Reader<'_>, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connect acknowledge flags")?;
    if flags & 0xFE != 0 {
        // [MQTT-3.2.2-1]
        return Err(malformed("reserved connect acknowledge flags set"));
    }
    let session_present = flags & 0x01 != 0;
    let mut properties = ConnAckProperties::default();
    let reason = if v5 {
        let reason = reason_code(r, CONNACK)?;
        let p = &mut properties;
        props::read(r, &props::CONNACK, |prop| {
            match prop {
                Prop::SessionExpiryInterval(v) => p.session_expiry_interval = Some(v),
                Prop::ReceiveMaximum(v) => p.receive_maximum = Some(v),
                Prop::MaximumQos(v) => p.maximum_qos = Some(v),
                Prop::RetainAvailable(v) => p.retain_available = Some(v),
                Prop::MaximumPacketSize(v) => p.maximum_packet_size = Some(v),
                Prop::AssignedClientIdentifier(v) => p.assigned_client_identifier = Some(v),
                Prop::TopicAliasMaximum(v) => p.topic_alias_maximum = Some(v),
                Prop::ReasonString(v) => p.reason_string = Some(v),
                Prop::UserProperty(k, v) => p.user_properties.push((k, v)),
                Prop::WildcardSubscriptionAvailable(v) => {
                    p.wildcard_subscription_available = Some(v)
                }
                Prop::SubscriptionIdentifierAvailable(v) => {
                    p.subscription_identifiers_available = Some(v)
                }
                Prop::SharedSubscriptionAvailable(v) => p.shared_subscription_available = Some(v),
                Prop::ServerKeepAlive(v) => p.server_keep_alive = Some(v),
                Prop::ResponseInformation(v) => p.response_information = Some(v),
                Prop::ServerReference(v) => p.server_reference = Some(v),
                Prop::AuthenticationMethod(v) => p.authentication_method = Some(v),
                Prop::AuthenticationData(v) => p.authentication_data = Some(v),
                _ => return Err(props::unexpected()),
            }
            Ok(())
        })?;
        reason
    } else {
        let code = r.u8("return code")?;
        spec::connack_reason_from_v311(code)
            .ok_or_else(|| malformed(format!("reserved return code {code}")))?
    };
    if session_present && reason != reason::SUCCESS {
        // [MQTT-3.2.2-6] (5.0), [MQTT-3.2.2-4] (3.1.1)
        return Err(protocol_error("session present with a refusal"));
    }
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn publish(r: &mut Reader<'_>, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    // Flags were checked with the fixed header: QoS is 0 to 2.
    let qos = QoS::from_u8((flags >> 1) & 0b11).unwrap_or_default();
    // Topic syntax (wildcards, empty with an alias) is the topic module's.
    let topic = r.string("topic name")?;
    // [MQTT-2.2.1-2]: none at QoS 0.
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(packet_id(r)?),
    };
    let mut properties = PublishProperties::default();
    if v5 {
        let p = &mut properties;
        props::read(r, &props::PUBLISH, |prop| {
            match prop {
                Prop::PayloadFormatIndicator(v) => p.payload_format_indicator = Some(v),
                Prop::MessageExpiryInterval(v) => p.message_expiry_interval = Some(v),
                Prop::TopicAlias(v) => p.topic_alias = Some(v),
                Prop::ResponseTopic(v) => p.response_topic = Some(v),
                Prop::CorrelationData(v) => p.correlation_data = Some(v),
                Prop::UserProperty(k, v) => p.user_properties.push((k, v)),
                // From a client it is a protocol error, which the broker answers.
                Prop::SubscriptionIdentifier(v) => p.subscription_identifiers.push(v),
                Prop::ContentType(v) => p.content_type = Some(v),
                _ => return Err(props::unexpected()),
            }
            Ok(())
        })?;
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// Reason string and user properties: the only properties of the acknowledgements.
fn ack_properties(
    r: &mut Reader<'_>,
    reason_string: &mut Option<String>,
    user_properties: &mut Vec<UserProperty>,
) -> Result<(), DecodeError> {
    props::read(r, &props::ACK, |prop| {
        match prop {
            Prop::ReasonString(v) => *reason_string = Some(v),
            Prop::UserProperty(k, v) => user_properties.push((k, v)),
            _ => return Err(props::unexpected()),
        }
        Ok(())
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In MQTT 5 the reason code is absent when the remaining
/// length is 2, the property length when it is 3 (3.4.2.1, 3.4.2.2.1).
fn pub_resp(r: &mut Reader<'_>, kind: u8, v5: bool) -> Result<PubResp, DecodeError> {
    let mut resp = PubResp {
        packet_id: packet_id(r)?,
        ..PubResp::default()
    };
    if v5 && !r.is_empty() {
        resp.reason = reason_code(r, kind)?;
        if !r.is_empty() {
            ack_properties(r, &mut resp.reason_string, &mut resp.user_properties)?;
        }
    }
    Ok(resp)
}

fn subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let mut sub = Subscribe {
        packet_id: packet_id(r)?,
        ..Subscribe::default()
    };
    if v5 {
        let (id, user) = (&mut sub.subscription_identifier, &mut sub.user_properties);
        props::read(r, &props::SUBSCRIBE, |prop| {
            match prop {
                Prop::SubscriptionIdentifier(v) => *id = Some(v),
                Prop::UserProperty(k, v) => user.push((k, v)),
                _ => return Err(props::unexpected()),
            }
            Ok(())
        })?;
    }
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        let options = r.u8("subscription options")?;
        let options = if v5 {
            subscription_options_v5(options)?
        } else {
            // [MQTT-3-8.3-4]: upper 6 bits 0, QoS 0 to 2.
            match (options & 0xFC, QoS::from_u8(options)) {
                (0, Some(qos)) => SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
                _ => return Err(malformed(format!("requested QoS byte 0x{options:02X}"))),
            }
        };
        sub.filters.push((filter, options));
    }
    if sub.filters.is_empty() {
        // [MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1)
        return Err(protocol_error("no topic filter"));
    }
    Ok(sub)
}

/// MQTT 5.0 3.8.3.1.
fn subscription_options_v5(options: u8) -> Result<SubscriptionOptions, DecodeError> {
    if options & 0xC0 != 0 {
        // [MQTT-3.8.3-5]
        return Err(malformed("reserved subscription option bits set"));
    }
    let Some(qos) = QoS::from_u8(options & 0b11) else {
        return Err(protocol_error("subscription maximum QoS 3"));
    };
    let retain_handling = match (options >> 4) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(protocol_error("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: options & 0x04 != 0,
        retain_as_published: options & 0x08 != 0,
        retain_handling,
    })
}

fn suback(r: &mut Reader<'_>, v5: bool) -> Result<SubAck, DecodeError> {
    let mut ack = SubAck {
        packet_id: packet_id(r)?,
        ..SubAck::default()
    };
    if v5 {
        ack_properties(r, &mut ack.reason_string, &mut ack.user_properties)?;
    }
    while !r.is_empty() {
        let code = if v5 {
            reason_code(r, SUBACK)?
        } else {
            // 3.1.1 3.9.3: 0x00, 0x01, 0x02 or 0x80 [MQTT-3.9.3-2].
            match r.u8("return code")? {
                c @ (0..=2 | 0x80) => c,
                c => return Err(malformed(format!("return code 0x{c:02X}"))),
            }
        };
        ack.reasons.push(code);
    }
    if ack.reasons.is_empty() {
        // One per topic filter, and a SUBSCRIBE has at least one.
        return Err(protocol_error("no reason code"));
    }
    Ok(ack)
}

fn unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let mut unsub = Unsubscribe {
        packet_id: packet_id(r)?,
        ..Unsubscribe::default()
    };
    if v5 {
        let user = &mut unsub.user_properties;
        props::read(r, &props::UNSUBSCRIBE, |prop| {
            match prop {
                Prop::UserProperty(k, v) => user.push((k, v)),
                _ => return Err(props::unexpected()),
            }
            Ok(())
        })?;
    }
    while !r.is_empty() {
        unsub.filters.push(r.string("topic filter")?);
    }
    if unsub.filters.is_empty() {
        // [MQTT-3.10.3-2]
        return Err(protocol_error("no topic filter"));
    }
    Ok(unsub)
}

fn unsuback(r: &mut Reader<'_>, v5: bool) -> Result<UnsubAck, DecodeError> {
    let mut ack = UnsubAck {
        packet_id: packet_id(r)?,
        ..UnsubAck::default()
    };
    if v5 {
        ack_properties(r, &mut ack.reason_string, &mut ack.user_properties)?;
        while !r.is_empty() {
            ack.reasons.push(reason_code(r, UNSUBACK)?);
        }
        if ack.reasons.is_empty() {
            return Err(protocol_error("no reason code"));
        }
    }
    Ok(ack)
}

/// MQTT 5: reason code absent with remaining length 0, property length with less than 2
/// (3.14.2.1, 3.14.2.2.1).
fn disconnect(r: &mut Reader<'_>, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    if v5 && !r.is_empty() {
        d.reason = reason_code(r, DISCONNECT)?;
        if !r.is_empty() {
            let p = &mut d;
            props::read(r, &props::DISCONNECT, |prop| {
                match prop {
                    Prop::SessionExpiryInterval(v) => p.session_expiry_interval = Some(v),
                    Prop::ReasonString(v) => p.reason_string = Some(v),
                    Prop::UserProperty(k, v) => p.user_properties.push((k, v)),
                    Prop::ServerReference(v) => p.server_reference = Some(v),
                    _ => return Err(props::unexpected()),
                }
                Ok(())
            })?;
        }
    }
    Ok(d)
}

/// MQTT 5 only. Reason code and property length are both absent (remaining length 0) or both
/// present (3.15.2.1): there is no short form with the reason code alone.
fn auth(r: &mut Reader<'_>) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    if !r.is_empty() {
        a.reason = reason_code(r, AUTH)?;
        let p = &mut a;
        props::read(r, &props::AUTH, |prop| {
            match prop {
                Prop::AuthenticationMethod(v) => p.authentication_method = Some(v),
                Prop::AuthenticationData(v) => p.authentication_data = Some(v),
                Prop::ReasonString(v) => p.reason_string = Some(v),
                Prop::UserProperty(k, v) => p.user_properties.push((k, v)),
                _ => return Err(props::unexpected()),
            }
            Ok(())
        })?;
    }
    Ok(a)
}
