//! MQTT 5 properties (section 2.2.2): identifiers, which packet may carry which, the checks on
//! their values, and reading one packet's property section.

use bytes::Bytes;

use super::error::{DecodeError, malformed, protocol_error};
use super::read::Reader;

pub(super) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(super) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(super) const CONTENT_TYPE: u8 = 0x03;
pub(super) const RESPONSE_TOPIC: u8 = 0x08;
pub(super) const CORRELATION_DATA: u8 = 0x09;
pub(super) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(super) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(super) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(super) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(super) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(super) const AUTHENTICATION_DATA: u8 = 0x16;
pub(super) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(super) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(super) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(super) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(super) const SERVER_REFERENCE: u8 = 0x1C;
pub(super) const REASON_STRING: u8 = 0x1F;
pub(super) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(super) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(super) const TOPIC_ALIAS: u8 = 0x23;
pub(super) const MAXIMUM_QOS: u8 = 0x24;
pub(super) const RETAIN_AVAILABLE: u8 = 0x25;
pub(super) const USER_PROPERTY: u8 = 0x26;
pub(super) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(super) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(super) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(super) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Largest subscription identifier (a variable byte integer).
pub(super) const MAX_SUBSCRIPTION_IDENTIFIER: u32 = 268_435_455;

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

/// The properties one packet (or a will) may carry, as bit sets over the identifiers.
pub(super) struct Allowed {
    ids: u64,
    /// Those that may appear more than once.
    repeatable: u64,
}

const USER: u64 = mask(&[USER_PROPERTY]);

const KNOWN: u64 = mask(&[
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    SUBSCRIPTION_IDENTIFIER,
    SESSION_EXPIRY_INTERVAL,
    ASSIGNED_CLIENT_IDENTIFIER,
    SERVER_KEEP_ALIVE,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    REQUEST_PROBLEM_INFORMATION,
    WILL_DELAY_INTERVAL,
    REQUEST_RESPONSE_INFORMATION,
    RESPONSE_INFORMATION,
    SERVER_REFERENCE,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS_MAXIMUM,
    TOPIC_ALIAS,
    MAXIMUM_QOS,
    RETAIN_AVAILABLE,
    USER_PROPERTY,
    MAXIMUM_PACKET_SIZE,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    SHARED_SUBSCRIPTION_AVAILABLE,
]);

pub(super) const CONNECT: Allowed = Allowed {
    ids: mask(&[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_PACKET_SIZE,
        TOPIC_ALIAS_MAXIMUM,
        REQUEST_RESPONSE_INFORMATION,
        REQUEST_PROBLEM_INFORMATION,
        USER_PROPERTY,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ]),
    repeatable: USER,
};
pub(super) const WILL: Allowed = Allowed {
    ids: mask(&[
        WILL_DELAY_INTERVAL,
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
    ]),
    repeatable: USER,
};
pub(super) const CONNACK: Allowed = Allowed {
    ids: mask(&[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        MAXIMUM_PACKET_SIZE,
        ASSIGNED_CLIENT_IDENTIFIER,
        TOPIC_ALIAS_MAXIMUM,
        REASON_STRING,
        USER_PROPERTY,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
        SERVER_KEEP_ALIVE,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ]),
    repeatable: USER,
};
pub(super) const PUBLISH: Allowed = Allowed {
    ids: mask(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        TOPIC_ALIAS,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
        SUBSCRIPTION_IDENTIFIER,
        CONTENT_TYPE,
    ]),
    repeatable: mask(&[USER_PROPERTY, SUBSCRIPTION_IDENTIFIER]),
};
/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK.
pub(super) const ACK: Allowed = Allowed {
    ids: mask(&[REASON_STRING, USER_PROPERTY]),
    repeatable: USER,
};
pub(super) const SUBSCRIBE: Allowed = Allowed {
    ids: mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
    repeatable: USER,
};
pub(super) const UNSUBSCRIBE: Allowed = Allowed {
    ids: USER,
    repeatable: USER,
};
pub(super) const DISCONNECT: Allowed = Allowed {
    ids: mask(&[
        SESSION_EXPIRY_INTERVAL,
        REASON_STRING,
        USER_PROPERTY,
        SERVER_REFERENCE,
    ]),
    repeatable: USER,
};
pub(super) const AUTH: Allowed = Allowed {
    ids: mask(&[
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ]),
    repeatable: USER,
};

/// One decoded property, its value already checked against what 2.2.2.2 and the packet sections
/// allow.
pub(super) enum Prop {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQos(u8),
    RetainAvailable(bool),
    UserProperty(String, String),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

pub(super) fn name(id: u8) -> &'static str {
    match id {
        PAYLOAD_FORMAT_INDICATOR => "payload format indicator",
        MESSAGE_EXPIRY_INTERVAL => "message expiry interval",
        CONTENT_TYPE => "content type",
        RESPONSE_TOPIC => "response topic",
        CORRELATION_DATA => "correlation data",
        SUBSCRIPTION_IDENTIFIER => "subscription identifier",
        SESSION_EXPIRY_INTERVAL => "session expiry interval",
        ASSIGNED_CLIENT_IDENTIFIER => "assigned client identifier",
        SERVER_KEEP_ALIVE => "server keep alive",
        AUTHENTICATION_METHOD => "authentication method",
        AUTHENTICATION_DATA => "authentication data",
        REQUEST_PROBLEM_INFORMATION => "request problem information",
        WILL_DELAY_INTERVAL => "will delay interval",
        REQUEST_RESPONSE_INFORMATION => "request response information",
        RESPONSE_INFORMATION => "response information",
        SERVER_REFERENCE => "server reference",
        REASON_STRING => "reason string",
        RECEIVE_MAXIMUM => "receive maximum",
        TOPIC_ALIAS_MAXIMUM => "topic alias maximum",
        TOPIC_ALIAS => "topic alias",
        MAXIMUM_QOS => "maximum QoS",
        RETAIN_AVAILABLE => "retain available",
        USER_PROPERTY => "user property",
        MAXIMUM_PACKET_SIZE => "maximum packet size",
        WILDCARD_SUBSCRIPTION_AVAILABLE => "wildcard subscription available",
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => "subscription identifier available",
        SHARED_SUBSCRIPTION_AVAILABLE => "shared subscription available",
        _ => "unknown property",
    }
}

fn not_allowed(id: u8) -> DecodeError {
    malformed(format!(
        "property {} (0x{id:02X}) is not allowed here",
        name(id)
    ))
}

/// The error for a property a packet's own match does not take: `Allowed` keeps it from
/// happening, this keeps it from panicking if a table and a match ever disagree.
pub(super) fn unexpected() -> DecodeError {
    malformed("property not allowed here")
}

/// Reads a property section (its length, then the properties) and hands each to `take`.
/// An unknown identifier or one the packet may not carry is malformed (2.2.2.2); a single-valued
/// property given twice is a protocol error.
pub(super) fn read(
    r: &mut Reader<'_>,
    allowed: &Allowed,
    mut take: impl FnMut(Prop) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.vbi("property length")?;
    let mut p = r.sub(len as usize, "properties")?;
    let mut seen = 0u64;
    while !p.is_empty() {
        // An identifier is a variable byte integer; every defined one fits in one byte.
        let raw = p.vbi("property identifier")?;
        let id = u8::try_from(raw).unwrap_or(0);
        let bit = 1u64.checked_shl(u32::from(id)).unwrap_or(0);
        if KNOWN & bit == 0 {
            return Err(malformed(format!(
                "unknown property identifier 0x{raw:02X}"
            )));
        }
        if allowed.ids & bit == 0 {
            return Err(not_allowed(id));
        }
        if seen & bit != 0 && allowed.repeatable & bit == 0 {
            return Err(protocol_error(format!(
                "{} included more than once",
                name(id)
            )));
        }
        seen |= bit;
        take(value(&mut p, id)?)?;
    }
    Ok(())
}

/// A byte property whose only values are 0 and 1; anything else is a protocol error
/// (3.1.2.11.6, 3.1.2.11.7, 3.2.2.3.4 to 3.2.2.3.13).
fn zero_or_one(r: &mut Reader<'_>, id: u8) -> Result<u8, DecodeError> {
    match r.u8(name(id))? {
        v @ (0 | 1) => Ok(v),
        v => Err(protocol_error(format!("{} of {v} (only 0 or 1)", name(id)))),
    }
}

fn value(r: &mut Reader<'_>, id: u8) -> Result<Prop, DecodeError> {
    let what = name(id);
    Ok(match id {
        PAYLOAD_FORMAT_INDICATOR => Prop::PayloadFormatIndicator(zero_or_one(r, id)?),
        MESSAGE_EXPIRY_INTERVAL => Prop::MessageExpiryInterval(r.u32(what)?),
        CONTENT_TYPE => Prop::ContentType(r.string(what)?),
        RESPONSE_TOPIC => Prop::ResponseTopic(r.string(what)?),
        CORRELATION_DATA => Prop::CorrelationData(r.binary(what)?),
        SUBSCRIPTION_IDENTIFIER => match r.vbi(what)? {
            // 3.3.2.3.8 and 3.8.2.1.2: 1 to 268,435,455.
            0 => return Err(protocol_error("subscription identifier of 0")),
            v => Prop::SubscriptionIdentifier(v),
        },
        SESSION_EXPIRY_INTERVAL => Prop::SessionExpiryInterval(r.u32(what)?),
        ASSIGNED_CLIENT_IDENTIFIER => Prop::AssignedClientIdentifier(r.string(what)?),
        SERVER_KEEP_ALIVE => Prop::ServerKeepAlive(r.u16(what)?),
        AUTHENTICATION_METHOD => Prop::AuthenticationMethod(r.string(what)?),
        AUTHENTICATION_DATA => Prop::AuthenticationData(r.binary(what)?),
        REQUEST_PROBLEM_INFORMATION => Prop::RequestProblemInformation(zero_or_one(r, id)? == 1),
        WILL_DELAY_INTERVAL => Prop::WillDelayInterval(r.u32(what)?),
        REQUEST_RESPONSE_INFORMATION => Prop::RequestResponseInformation(zero_or_one(r, id)? == 1),
        RESPONSE_INFORMATION => Prop::ResponseInformation(r.string(what)?),
        SERVER_REFERENCE => Prop::ServerReference(r.string(what)?),
        REASON_STRING => Prop::ReasonString(r.string(what)?),
        RECEIVE_MAXIMUM => match r.u16(what)? {
            // 3.1.2.11.3 and 3.2.2.3.3.
            0 => return Err(protocol_error("receive maximum of 0")),
            v => Prop::ReceiveMaximum(v),
        },
        TOPIC_ALIAS_MAXIMUM => Prop::TopicAliasMaximum(r.u16(what)?),
        // 0 is invalid (3.3.2.3.4), but answering it (0x94) is the broker's, with alias state.
        TOPIC_ALIAS => Prop::TopicAlias(r.u16(what)?),
        MAXIMUM_QOS => Prop::MaximumQos(zero_or_one(r, id)?),
        RETAIN_AVAILABLE => Prop::RetainAvailable(zero_or_one(r, id)? == 1),
        USER_PROPERTY => {
            let key = r.string("user property name")?;
            Prop::UserProperty(key, r.string("user property value")?)
        }
        MAXIMUM_PACKET_SIZE => match r.u32(what)? {
            // 3.1.2.11.4 and 3.2.2.3.6.
            0 => return Err(protocol_error("maximum packet size of 0")),
            v => Prop::MaximumPacketSize(v),
        },
        WILDCARD_SUBSCRIPTION_AVAILABLE => {
            Prop::WildcardSubscriptionAvailable(zero_or_one(r, id)? == 1)
        }
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            Prop::SubscriptionIdentifierAvailable(zero_or_one(r, id)? == 1)
        }
        SHARED_SUBSCRIPTION_AVAILABLE => {
            Prop::SharedSubscriptionAvailable(zero_or_one(r, id)? == 1)
        }
        _ => return Err(malformed(format!("unknown property identifier 0x{id:02X}"))),
    })
}
