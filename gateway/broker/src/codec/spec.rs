//! What the specifications fix: packet type numbers and names, and the reason codes each packet
//! may carry (MQTT 5.0 section 2.4 and each packet's reason code table).

use super::packet::Packet;

pub(super) const CONNECT: u8 = 1;
pub(super) const CONNACK: u8 = 2;
pub(super) const PUBLISH: u8 = 3;
pub(super) const PUBACK: u8 = 4;
pub(super) const PUBREC: u8 = 5;
pub(super) const PUBREL: u8 = 6;
pub(super) const PUBCOMP: u8 = 7;
pub(super) const SUBSCRIBE: u8 = 8;
pub(super) const SUBACK: u8 = 9;
pub(super) const UNSUBSCRIBE: u8 = 10;
pub(super) const UNSUBACK: u8 = 11;
pub(super) const PINGREQ: u8 = 12;
pub(super) const PINGRESP: u8 = 13;
pub(super) const DISCONNECT: u8 = 14;
pub(super) const AUTH: u8 = 15;

/// Largest value of a variable byte integer, hence of a remaining length (MQTT 5.0 1.5.5).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// AUTH reason codes (MQTT 5.0 3.15.2.1), not in `reason` since the broker itself only sends
/// SUCCESS.
pub(super) const CONTINUE_AUTHENTICATION: u8 = 0x18;
pub(super) const RE_AUTHENTICATE: u8 = 0x19;

pub(super) fn packet_name(kind: u8) -> &'static str {
    match kind {
        CONNECT => "CONNECT",
        CONNACK => "CONNACK",
        PUBLISH => "PUBLISH",
        PUBACK => "PUBACK",
        PUBREC => "PUBREC",
        PUBREL => "PUBREL",
        PUBCOMP => "PUBCOMP",
        SUBSCRIBE => "SUBSCRIBE",
        SUBACK => "SUBACK",
        UNSUBSCRIBE => "UNSUBSCRIBE",
        UNSUBACK => "UNSUBACK",
        PINGREQ => "PINGREQ",
        PINGRESP => "PINGRESP",
        DISCONNECT => "DISCONNECT",
        AUTH => "AUTH",
        _ => "reserved packet type",
    }
}

impl Packet {
    /// The control packet type, 1 (CONNECT) to 15 (AUTH).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => CONNECT,
            Packet::ConnAck(_) => CONNACK,
            Packet::Publish(_) => PUBLISH,
            Packet::PubAck(_) => PUBACK,
            Packet::PubRec(_) => PUBREC,
            Packet::PubRel(_) => PUBREL,
            Packet::PubComp(_) => PUBCOMP,
            Packet::Subscribe(_) => SUBSCRIBE,
            Packet::SubAck(_) => SUBACK,
            Packet::Unsubscribe(_) => UNSUBSCRIBE,
            Packet::UnsubAck(_) => UNSUBACK,
            Packet::PingReq => PINGREQ,
            Packet::PingResp => PINGRESP,
            Packet::Disconnect(_) => DISCONNECT,
            Packet::Auth(_) => AUTH,
        }
    }

    /// The packet type's name as the specifications write it ("PUBLISH"), for logs.
    pub fn name(&self) -> &'static str {
        packet_name(self.packet_type())
    }
}

/// The fixed header flags a packet type must carry; `None` for PUBLISH, whose flags are
/// DUP/QoS/RETAIN ([MQTT-2.1.3-1] in 5.0, [MQTT-2.2.2-1] in 3.1.1).
pub(super) fn required_flags(kind: u8) -> Option<u8> {
    match kind {
        PUBLISH => None,
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Some(0b0010),
        _ => Some(0),
    }
}

/// Whether `code` is one of the reason codes packet type `kind` may carry in MQTT 5.
pub(super) fn valid_reason(kind: u8, code: u8) -> bool {
    match kind {
        CONNACK => matches!(
            code,
            0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
        ),
        PUBACK | PUBREC => matches!(
            code,
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ),
        PUBREL | PUBCOMP => matches!(code, 0x00 | 0x92),
        SUBACK => matches!(
            code,
            0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
        UNSUBACK => matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91),
        DISCONNECT => matches!(
            code,
            0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
        ),
        AUTH => matches!(code, 0x00 | CONTINUE_AUTHENTICATION | RE_AUTHENTICATE),
        _ => false,
    }
}

/// MQTT 3.1.1 CONNACK return code (3.2.2.3) to the MQTT 5 reason code it means; the inverse of
/// `reason::connack_v311` on the codes it produces.
pub(super) fn connack_reason_from_v311(code: u8) -> Option<u8> {
    use super::packet::reason;
    Some(match code {
        0 => reason::SUCCESS,
        1 => reason::UNSUPPORTED_PROTOCOL_VERSION,
        2 => reason::CLIENT_IDENTIFIER_NOT_VALID,
        3 => reason::SERVER_UNAVAILABLE,
        4 => reason::BAD_USER_NAME_OR_PASSWORD,
        5 => reason::NOT_AUTHORIZED,
        _ => return None,
    })
}
