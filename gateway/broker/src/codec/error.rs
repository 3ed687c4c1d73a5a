//! Codec errors. A decode error ends the connection: its reason code is what an MQTT 5 peer is
//! told (CONNACK or DISCONNECT) before the close, its message is what the log says.

use super::packet::reason;

/// Why bytes from the network were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet's format (reason 0x81).
    #[error("malformed {}: {detail}", or_packet(packet))]
    Malformed {
        packet: &'static str,
        detail: String,
    },
    /// Well formed, but something the specification does not allow (reason 0x82).
    #[error("protocol error in {}: {detail}", or_packet(packet))]
    ProtocolError {
        packet: &'static str,
        detail: String,
    },
    /// Larger than the decoder's maximum packet size (reason 0x95), refused from its fixed header.
    #[error("{packet} of {size} bytes exceeds the maximum packet size of {max} bytes")]
    TooLarge {
        packet: &'static str,
        size: usize,
        max: usize,
    },
    /// A CONNECT for another protocol than MQTT 3.1.1 or 5: the answer is a CONNACK with reason
    /// 0x84 (MQTT 5 format) or return code 1 (3.1.1 format) before closing.
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol { name: String, level: u8 },
}

fn or_packet(name: &str) -> &str {
    if name.is_empty() { "packet" } else { name }
}

impl DecodeError {
    /// A malformed packet, for checks made outside the codec.
    pub fn malformed(detail: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            packet: "",
            detail: detail.into(),
        }
    }

    /// A protocol error, for checks made outside the codec (the broker's, with its state).
    pub fn protocol(detail: impl Into<String>) -> DecodeError {
        DecodeError::ProtocolError {
            packet: "",
            detail: detail.into(),
        }
    }

    /// The MQTT 5 reason code for this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed { .. } => reason::MALFORMED_PACKET,
            DecodeError::ProtocolError { .. } => reason::PROTOCOL_ERROR,
            DecodeError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol { .. } => reason::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }

    /// Names the packet once the decoding function that failed returns to where it is known.
    pub(super) fn in_packet(mut self, name: &'static str) -> DecodeError {
        if let DecodeError::Malformed { packet, .. }
        | DecodeError::ProtocolError { packet, .. }
        | DecodeError::TooLarge { packet, .. } = &mut self
        {
            *packet = name;
        }
        self
    }
}

pub(super) fn malformed(detail: impl Into<String>) -> DecodeError {
    DecodeError::malformed(detail)
}

pub(super) fn protocol_error(detail: impl Into<String>) -> DecodeError {
    DecodeError::protocol(detail)
}

/// Why a packet could not be encoded: it holds something the protocol cannot carry, or that the
/// receiving side would have to refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{packet}: {field} of {len} bytes is longer than 65,535 bytes")]
    TooLong {
        packet: &'static str,
        field: &'static str,
        len: usize,
    },
    #[error("{packet}: {field} contains U+0000")]
    NulCharacter {
        packet: &'static str,
        field: &'static str,
    },
    #[error("{packet}: remaining length {size} exceeds MQTT's limit of 268,435,455 bytes")]
    PacketTooLarge { packet: &'static str, size: usize },
    #[error("{packet}: {detail}")]
    Invalid {
        packet: &'static str,
        detail: &'static str,
    },
}

impl EncodeError {
    pub(super) fn in_packet(mut self, name: &'static str) -> EncodeError {
        match &mut self {
            EncodeError::TooLong { packet, .. }
            | EncodeError::NulCharacter { packet, .. }
            | EncodeError::PacketTooLarge { packet, .. }
            | EncodeError::Invalid { packet, .. } => *packet = name,
        }
        self
    }
}

pub(super) fn invalid(detail: &'static str) -> EncodeError {
    EncodeError::Invalid { packet: "", detail }
}
