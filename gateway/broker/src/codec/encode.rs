//! Encoding. Each packet is walked twice by the same code: once into a byte counter, which also
//! checks everything the receiver would refuse, then into the output buffer. So the lengths
//! written up front are exact, and a refused packet leaves the output untouched.

use bytes::{BufMut, BytesMut};

use super::error::{EncodeError, invalid};
use super::packet::*;
use super::properties::{self as props, MAX_SUBSCRIPTION_IDENTIFIER};
use super::read::vbi_len;
use super::spec::{self, *};

/// Appends `packet`, encoded for `protocol`, to `out`. Fields MQTT 3.1.1 cannot carry
/// (properties, reason codes other than CONNACK's and SUBACK's) are left out for it. On error
/// `out` is unchanged.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
    let name = packet.name();
    let first = first_byte(packet, protocol).map_err(|e| e.in_packet(name))?;
    let remaining = remaining_length(packet, protocol).map_err(|e| e.in_packet(name))?;
    let start = out.len();
    out.reserve(1 + vbi_len(remaining) + remaining);
    BufMut::put_u8(out, first);
    Sink::put_vbi(out, remaining);
    if let Err(e) = body(out, packet, protocol) {
        // Not expected: the sizing pass made the same checks.
        out.truncate(start);
        return Err(e.in_packet(name));
    }
    debug_assert_eq!(out.len() - start, 1 + vbi_len(remaining) + remaining);
    Ok(())
}

/// The size `encode` would give `packet`, fixed header included: what to compare with a peer's
/// Maximum Packet Size before sending [MQTT-3.1.2-24].
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let name = packet.name();
    first_byte(packet, protocol).map_err(|e| e.in_packet(name))?;
    let remaining = remaining_length(packet, protocol).map_err(|e| e.in_packet(name))?;
    Ok(1 + vbi_len(remaining) + remaining)
}

fn remaining_length(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let mut len = Len(0);
    body(&mut len, packet, protocol)?;
    if len.0 > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge {
            packet: "",
            size: len.0,
        });
    }
    Ok(len.0)
}

/// Where encoded bytes go: a counter or the output buffer.
trait Sink {
    /// Whether to check what is written (the counting pass) or trust it (the pass after).
    const CHECK: bool;
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, v: &[u8]);
    /// `v` is at most `MAX_REMAINING_LENGTH` (callers check).
    fn put_vbi(&mut self, v: usize);
}

struct Len(usize);

impl Sink for Len {
    const CHECK: bool = true;
    fn put_u8(&mut self, _: u8) {
        self.0 = self.0.saturating_add(1);
    }
    fn put_u16(&mut self, _: u16) {
        self.0 = self.0.saturating_add(2);
    }
    fn put_u32(&mut self, _: u32) {
        self.0 = self.0.saturating_add(4);
    }
    fn put_slice(&mut self, v: &[u8]) {
        self.0 = self.0.saturating_add(v.len());
    }
    fn put_vbi(&mut self, v: usize) {
        self.0 = self.0.saturating_add(vbi_len(v));
    }
}

impl Sink for BytesMut {
    const CHECK: bool = false;
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
    fn put_vbi(&mut self, mut v: usize) {
        loop {
            let byte = (v % 128) as u8;
            v /= 128;
            if v == 0 {
                BufMut::put_u8(self, byte);
                return;
            }
            BufMut::put_u8(self, byte | 0x80);
        }
    }
}

fn check_len(len: usize, field: &'static str) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::TooLong {
            packet: "",
            field,
            len,
        });
    }
    Ok(())
}

/// A UTF-8 encoded string; the receiver refuses U+0000 [MQTT-1.5.4-2].
fn string<S: Sink>(s: &mut S, v: &str, field: &'static str) -> Result<(), EncodeError> {
    if S::CHECK {
        check_len(v.len(), field)?;
        if v.as_bytes().contains(&0) {
            return Err(EncodeError::NulCharacter { packet: "", field });
        }
    }
    s.put_u16(v.len() as u16);
    s.put_slice(v.as_bytes());
    Ok(())
}

fn binary<S: Sink>(s: &mut S, v: &[u8], field: &'static str) -> Result<(), EncodeError> {
    if S::CHECK {
        check_len(v.len(), field)?;
    }
    s.put_u16(v.len() as u16);
    s.put_slice(v);
    Ok(())
}

fn packet_id<S: Sink>(s: &mut S, id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        // [MQTT-2.2.1-3]
        return Err(invalid("packet identifier 0"));
    }
    s.put_u16(id);
    Ok(())
}

fn reason_code<S: Sink>(s: &mut S, kind: u8, code: u8) -> Result<(), EncodeError> {
    if !spec::valid_reason(kind, code) {
        return Err(invalid("reason code not defined for this packet"));
    }
    s.put_u8(code);
    Ok(())
}

fn first_byte(packet: &Packet, protocol: Protocol) -> Result<u8, EncodeError> {
    let kind = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) => {
            if p.dup && p.qos == QoS::AtMostOnce {
                // [MQTT-3.3.1-2]
                return Err(invalid("DUP set on a QoS 0 message"));
            }
            u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain)
        }
        Packet::Auth(_) if protocol == Protocol::V311 => {
            return Err(invalid("AUTH does not exist in MQTT 3.1.1"));
        }
        _ => spec::required_flags(kind).unwrap_or(0),
    };
    Ok(kind << 4 | flags)
}

fn body<S: Sink>(s: &mut S, packet: &Packet, protocol: Protocol) -> Result<(), EncodeError> {
    let v5 = protocol == Protocol::V5;
    match packet {
        Packet::Connect(c) => connect(s, c, protocol),
        Packet::ConnAck(c) => connack(s, c, v5),
        Packet::Publish(p) => publish(s, p, v5),
        Packet::PubAck(r) => pub_resp(s, r, PUBACK, v5),
        Packet::PubRec(r) => pub_resp(s, r, PUBREC, v5),
        Packet::PubRel(r) => pub_resp(s, r, PUBREL, v5),
        Packet::PubComp(r) => pub_resp(s, r, PUBCOMP, v5),
        Packet::Subscribe(sub) => subscribe(s, sub, v5),
        Packet::SubAck(a) => suback(s, a, v5),
        Packet::Unsubscribe(u) => unsubscribe(s, u, v5),
        Packet::UnsubAck(a) => unsuback(s, a, v5),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => disconnect(s, d, v5),
        Packet::Auth(a) => auth(s, a),
    }
}

fn connect<S: Sink>(s: &mut S, c: &Connect, protocol: Protocol) -> Result<(), EncodeError> {
    if c.protocol != protocol {
        return Err(invalid(
            "Connect::protocol differs from the protocol to encode",
        ));
    }
    let v5 = protocol == Protocol::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        // [MQTT-3.1.2-22]
        return Err(invalid("a password without a user name (MQTT 3.1.1)"));
    }
    string(s, "MQTT", "protocol name")?;
    s.put_u8(if v5 { 5 } else { 4 });
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if v5 {
        properties(s, &c.properties)?;
    }
    string(s, &c.client_id, "client identifier")?;
    if let Some(w) = &c.will {
        if v5 {
            properties(s, &w.properties)?;
        }
        string(s, &w.topic, "will topic")?;
        binary(s, &w.payload, "will payload")?;
    }
    if let Some(u) = &c.username {
        string(s, u, "user name")?;
    }
    if let Some(p) = &c.password {
        binary(s, p, "password")?;
    }
    Ok(())
}

fn connack<S: Sink>(s: &mut S, c: &ConnAck, v5: bool) -> Result<(), EncodeError> {
    if c.session_present && c.reason != reason::SUCCESS {
        // [MQTT-3.2.2-6] (5.0), [MQTT-3.2.2-4] (3.1.1)
        return Err(invalid("session present with a refusal"));
    }
    s.put_u8(u8::from(c.session_present));
    if v5 {
        reason_code(s, CONNACK, c.reason)?;
        properties(s, &c.properties)?;
    } else {
        s.put_u8(reason::connack_v311(c.reason));
    }
    Ok(())
}

fn publish<S: Sink>(s: &mut S, p: &Publish, v5: bool) -> Result<(), EncodeError> {
    string(s, &p.topic, "topic name")?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        // [MQTT-2.2.1-2]
        (QoS::AtMostOnce, Some(_)) => return Err(invalid("packet identifier on a QoS 0 message")),
        (_, Some(id)) => packet_id(s, id)?,
        (_, None) => return Err(invalid("QoS 1 or 2 message without a packet identifier")),
    }
    if v5 {
        properties(s, &p.properties)?;
    }
    s.put_slice(&p.payload);
    Ok(())
}

/// MQTT 5 short forms: no reason code when it is 0 and there are no properties, no property
/// length when there are none (3.4.2.1).
fn pub_resp<S: Sink>(s: &mut S, r: &PubResp, kind: u8, v5: bool) -> Result<(), EncodeError> {
    packet_id(s, r.packet_id)?;
    if v5 {
        let props = AckProperties {
            reason_string: r.reason_string.as_deref(),
            user_properties: &r.user_properties,
        };
        if props.is_empty() {
            if r.reason != reason::SUCCESS {
                reason_code(s, kind, r.reason)?;
            }
        } else {
            reason_code(s, kind, r.reason)?;
            properties(s, &props)?;
        }
    }
    Ok(())
}

fn subscribe<S: Sink>(s: &mut S, sub: &Subscribe, v5: bool) -> Result<(), EncodeError> {
    packet_id(s, sub.packet_id)?;
    if sub.filters.is_empty() {
        // [MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1)
        return Err(invalid("no topic filter"));
    }
    if v5 {
        properties(s, &SubscribeProperties(sub))?;
    }
    for (filter, o) in &sub.filters {
        string(s, filter, "topic filter")?;
        let mut options = o.qos as u8;
        if v5 {
            options |= u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4;
        }
        s.put_u8(options);
    }
    Ok(())
}

fn suback<S: Sink>(s: &mut S, a: &SubAck, v5: bool) -> Result<(), EncodeError> {
    packet_id(s, a.packet_id)?;
    if a.reasons.is_empty() {
        return Err(invalid("no reason code"));
    }
    if v5 {
        properties(
            s,
            &AckProperties {
                reason_string: a.reason_string.as_deref(),
                user_properties: &a.user_properties,
            },
        )?;
        for &code in &a.reasons {
            reason_code(s, SUBACK, code)?;
        }
    } else {
        for &code in &a.reasons {
            // 3.1.1 has one failure code.
            s.put_u8(if code <= 2 { code } else { 0x80 });
        }
    }
    Ok(())
}

fn unsubscribe<S: Sink>(s: &mut S, u: &Unsubscribe, v5: bool) -> Result<(), EncodeError> {
    packet_id(s, u.packet_id)?;
    if u.filters.is_empty() {
        // [MQTT-3.10.3-2]
        return Err(invalid("no topic filter"));
    }
    if v5 {
        properties(
            s,
            &AckProperties {
                reason_string: None,
                user_properties: &u.user_properties,
            },
        )?;
    }
    for filter in &u.filters {
        string(s, filter, "topic filter")?;
    }
    Ok(())
}

/// The 3.1.1 UNSUBACK is the packet identifier alone.
fn unsuback<S: Sink>(s: &mut S, a: &UnsubAck, v5: bool) -> Result<(), EncodeError> {
    packet_id(s, a.packet_id)?;
    if v5 {
        if a.reasons.is_empty() {
            return Err(invalid("no reason code"));
        }
        properties(
            s,
            &AckProperties {
                reason_string: a.reason_string.as_deref(),
                user_properties: &a.user_properties,
            },
        )?;
        for &code in &a.reasons {
            reason_code(s, UNSUBACK, code)?;
        }
    }
    Ok(())
}

/// MQTT 5: empty for reason 0 without properties, the reason code alone without properties.
fn disconnect<S: Sink>(s: &mut S, d: &Disconnect, v5: bool) -> Result<(), EncodeError> {
    if !v5 {
        return Ok(());
    }
    let no_properties = d.session_expiry_interval.is_none()
        && d.reason_string.is_none()
        && d.user_properties.is_empty()
        && d.server_reference.is_none();
    if no_properties {
        if d.reason != reason::SUCCESS {
            reason_code(s, DISCONNECT, d.reason)?;
        }
    } else {
        reason_code(s, DISCONNECT, d.reason)?;
        properties(s, d)?;
    }
    Ok(())
}

/// Empty for reason 0 without properties; otherwise reason code and properties both (3.15.2.1).
fn auth<S: Sink>(s: &mut S, a: &Auth) -> Result<(), EncodeError> {
    let no_properties = a.authentication_method.is_none()
        && a.authentication_data.is_none()
        && a.reason_string.is_none()
        && a.user_properties.is_empty();
    if a.reason != reason::SUCCESS || !no_properties {
        reason_code(s, AUTH, a.reason)?;
        properties(s, a)?;
    }
    Ok(())
}

/// A packet's (or will's) MQTT 5 properties.
trait Properties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// Property length, then the properties.
fn properties<S: Sink, P: Properties>(s: &mut S, p: &P) -> Result<(), EncodeError> {
    let mut len = Len(0);
    p.write(&mut len)?;
    if len.0 > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge {
            packet: "",
            size: len.0,
        });
    }
    s.put_vbi(len.0);
    p.write(s)
}

fn prop_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u8(v);
    }
}

fn prop_bool<S: Sink>(s: &mut S, id: u8, v: Option<bool>) {
    prop_u8(s, id, v.map(u8::from));
}

/// Payload format indicator and maximum QoS: the receiver refuses anything but 0 and 1.
fn prop_zero_or_one<S: Sink>(s: &mut S, id: u8, v: Option<u8>) -> Result<(), EncodeError> {
    if v.is_some_and(|v| v > 1) {
        return Err(invalid("a property limited to 0 or 1 has another value"));
    }
    prop_u8(s, id, v);
    Ok(())
}

fn prop_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u16(v);
    }
}

fn prop_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u32(v);
    }
}

/// Receive maximum and maximum packet size: the receiver refuses 0.
fn nonzero_limits(
    receive_maximum: Option<u16>,
    maximum_packet_size: Option<u32>,
) -> Result<(), EncodeError> {
    if receive_maximum == Some(0) || maximum_packet_size == Some(0) {
        return Err(invalid("receive maximum or maximum packet size of 0"));
    }
    Ok(())
}

fn prop_string<S: Sink>(s: &mut S, id: u8, v: Option<&str>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.put_u8(id);
        string(s, v, props::name(id))?;
    }
    Ok(())
}

fn prop_binary<S: Sink>(s: &mut S, id: u8, v: Option<&[u8]>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.put_u8(id);
        binary(s, v, props::name(id))?;
    }
    Ok(())
}

fn prop_subscription_id<S: Sink>(s: &mut S, v: u32) -> Result<(), EncodeError> {
    if v == 0 || v > MAX_SUBSCRIPTION_IDENTIFIER {
        return Err(invalid("subscription identifier outside 1 to 268,435,455"));
    }
    s.put_u8(props::SUBSCRIPTION_IDENTIFIER);
    s.put_vbi(v as usize);
    Ok(())
}

fn user_properties<S: Sink>(s: &mut S, user: &[UserProperty]) -> Result<(), EncodeError> {
    for (k, v) in user {
        s.put_u8(props::USER_PROPERTY);
        string(s, k, "user property name")?;
        string(s, v, "user property value")?;
    }
    Ok(())
}

impl Properties for ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use props::*;
        if self.authentication_data.is_some() && self.authentication_method.is_none() {
            return Err(invalid(
                "authentication data without an authentication method",
            ));
        }
        // Values equal to what absence means are left out.
        let session_expiry = Some(self.session_expiry_interval).filter(|&v| v != 0);
        prop_u32(s, SESSION_EXPIRY_INTERVAL, session_expiry);
        nonzero_limits(self.receive_maximum, self.maximum_packet_size)?;
        prop_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        prop_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        let alias_max = Some(self.topic_alias_maximum).filter(|&v| v != 0);
        prop_u16(s, TOPIC_ALIAS_MAXIMUM, alias_max);
        prop_bool(
            s,
            REQUEST_RESPONSE_INFORMATION,
            Some(true).filter(|_| self.request_response_information),
        );
        prop_bool(
            s,
            REQUEST_PROBLEM_INFORMATION,
            Some(false).filter(|_| !self.request_problem_information),
        );
        user_properties(s, &self.user_properties)?;
        prop_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        prop_binary(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())
    }
}

impl Properties for WillProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use props::*;
        let delay = Some(self.will_delay_interval).filter(|&v| v != 0);
        prop_u32(s, WILL_DELAY_INTERVAL, delay);
        prop_zero_or_one(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator)?;
        prop_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        prop_string(s, CONTENT_TYPE, self.content_type.as_deref())?;
        prop_string(s, RESPONSE_TOPIC, self.response_topic.as_deref())?;
        prop_binary(s, CORRELATION_DATA, self.correlation_data.as_deref())?;
        user_properties(s, &self.user_properties)
    }
}

impl Properties for ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use props::*;
        prop_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        nonzero_limits(self.receive_maximum, self.maximum_packet_size)?;
        prop_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        prop_zero_or_one(s, MAXIMUM_QOS, self.maximum_qos)?;
        prop_bool(s, RETAIN_AVAILABLE, self.retain_available);
        prop_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        prop_string(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_deref(),
        )?;
        prop_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        prop_string(s, REASON_STRING, self.reason_string.as_deref())?;
        user_properties(s, &self.user_properties)?;
        prop_bool(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        prop_bool(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        prop_bool(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        prop_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        prop_string(
            s,
            RESPONSE_INFORMATION,
            self.response_information.as_deref(),
        )?;
        prop_string(s, SERVER_REFERENCE, self.server_reference.as_deref())?;
        prop_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        prop_binary(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())
    }
}

impl Properties for PublishProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use props::*;
        prop_zero_or_one(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator)?;
        prop_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        prop_u16(s, TOPIC_ALIAS, self.topic_alias);
        prop_string(s, RESPONSE_TOPIC, self.response_topic.as_deref())?;
        prop_binary(s, CORRELATION_DATA, self.correlation_data.as_deref())?;
        user_properties(s, &self.user_properties)?;
        for &id in &self.subscription_identifiers {
            prop_subscription_id(s, id)?;
        }
        prop_string(s, CONTENT_TYPE, self.content_type.as_deref())
    }
}

/// Reason string and user properties (PUBACK to PUBCOMP, SUBACK, UNSUBACK; UNSUBSCRIBE's user
/// properties).
struct AckProperties<'a> {
    reason_string: Option<&'a str>,
    user_properties: &'a [UserProperty],
}

impl AckProperties<'_> {
    fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl Properties for AckProperties<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_string(s, props::REASON_STRING, self.reason_string)?;
        user_properties(s, self.user_properties)
    }
}

struct SubscribeProperties<'a>(&'a Subscribe);

impl Properties for SubscribeProperties<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(id) = self.0.subscription_identifier {
            prop_subscription_id(s, id)?;
        }
        user_properties(s, &self.0.user_properties)
    }
}

impl Properties for Disconnect {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use props::*;
        prop_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        prop_string(s, REASON_STRING, self.reason_string.as_deref())?;
        user_properties(s, &self.user_properties)?;
        prop_string(s, SERVER_REFERENCE, self.server_reference.as_deref())
    }
}

impl Properties for Auth {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use props::*;
        prop_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        prop_binary(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())?;
        prop_string(s, REASON_STRING, self.reason_string.as_deref())?;
        user_properties(s, &self.user_properties)
    }
}
