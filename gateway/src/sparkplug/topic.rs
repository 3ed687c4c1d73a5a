//! Sparkplug B topic names: `spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]` and
//! `spBv1.0/STATE/<host_id>`.

use std::fmt;

pub const NAMESPACE: &str = "spBv1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    NCmd,
    DCmd,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::NData => "NDATA",
            MessageType::DData => "DDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DCmd => "DCMD",
        }
    }

    fn parse(s: &str) -> Option<MessageType> {
        Some(match s {
            "NBIRTH" => MessageType::NBirth,
            "NDEATH" => MessageType::NDeath,
            "DBIRTH" => MessageType::DBirth,
            "DDEATH" => MessageType::DDeath,
            "NDATA" => MessageType::NData,
            "DDATA" => MessageType::DData,
            "NCMD" => MessageType::NCmd,
            "DCMD" => MessageType::DCmd,
            _ => return None,
        })
    }

    /// Device-level messages carry a device id; node-level ones must not.
    pub fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DDeath | MessageType::DData | MessageType::DCmd
        )
    }
}

/// A parsed Sparkplug topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An edge node or device message.
    Node {
        group_id: String,
        message_type: MessageType,
        edge_node_id: String,
        device_id: Option<String>,
    },
    /// A primary host application's state (`spBv1.0/STATE/<host_id>`).
    State { host_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("not in the {NAMESPACE} namespace")]
    Namespace,
    #[error("unknown message type {0:?}")]
    MessageType(String),
    #[error("{0}")]
    Shape(&'static str),
}

impl Topic {
    pub fn node(group_id: &str, message_type: MessageType, edge_node_id: &str) -> Topic {
        Topic::Node {
            group_id: group_id.into(),
            message_type,
            edge_node_id: edge_node_id.into(),
            device_id: None,
        }
    }

    pub fn device(
        group_id: &str,
        message_type: MessageType,
        edge_node_id: &str,
        device_id: &str,
    ) -> Topic {
        Topic::Node {
            group_id: group_id.into(),
            message_type,
            edge_node_id: edge_node_id.into(),
            device_id: Some(device_id.into()),
        }
    }

    /// Parses a topic name; errors say what is wrong (counted as "wrong namespace/malformed").
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let mut parts = topic.split('/');
        if parts.next() != Some(NAMESPACE) {
            return Err(TopicError::Namespace);
        }
        let levels: Vec<&str> = parts.collect();
        if levels.iter().any(|l| l.is_empty()) {
            return Err(TopicError::Shape("empty topic level"));
        }
        match levels.as_slice() {
            ["STATE", host] => Ok(Topic::State {
                host_id: (*host).into(),
            }),
            [group, kind, node, rest @ ..] => {
                let message_type = MessageType::parse(kind)
                    .ok_or_else(|| TopicError::MessageType((*kind).into()))?;
                let device_id = match (message_type.is_device(), rest) {
                    (false, []) => None,
                    (true, [device]) => Some((*device).to_string()),
                    (false, _) => return Err(TopicError::Shape("node message with a device id")),
                    (true, []) => {
                        return Err(TopicError::Shape("device message without a device id"));
                    }
                    (true, _) => return Err(TopicError::Shape("too many topic levels")),
                };
                Ok(Topic::Node {
                    group_id: (*group).into(),
                    message_type,
                    edge_node_id: (*node).into(),
                    device_id,
                })
            }
            _ => Err(TopicError::Shape("too few topic levels")),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::State { host_id } => write!(f, "{NAMESPACE}/STATE/{host_id}"),
            Topic::Node {
                group_id,
                message_type,
                edge_node_id,
                device_id,
            } => {
                write!(
                    f,
                    "{NAMESPACE}/{group_id}/{}/{edge_node_id}",
                    message_type.as_str()
                )?;
                if let Some(d) = device_id {
                    write!(f, "/{d}")?;
                }
                Ok(())
            }
        }
    }
}

/// Checks an id (group, edge node, device, host) for use in a topic: non-empty, and none of
/// the characters MQTT reserves (`/`, `+`, `#`).
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(format!(
            "contains {c:?}, which Sparkplug topic ids cannot contain"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [
            "spBv1.0/plant/NBIRTH/gw1",
            "spBv1.0/plant/DDATA/gw1/press",
            "spBv1.0/plant/DCMD/gw1/press",
            "spBv1.0/STATE/scada",
        ] {
            assert_eq!(Topic::parse(t).expect(t).to_string(), t);
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            Topic::parse("spAv1.0/x/NBIRTH/n"),
            Err(TopicError::Namespace)
        );
        assert!(matches!(
            Topic::parse("spBv1.0/g/NFOO/n"),
            Err(TopicError::MessageType(_))
        ));
        assert!(Topic::parse("spBv1.0/g/NBIRTH/n/d").is_err());
        assert!(Topic::parse("spBv1.0/g/DBIRTH/n").is_err());
        assert!(Topic::parse("spBv1.0/g//n").is_err());
        assert!(Topic::parse("spBv1.0/g").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("press-1").is_ok());
    }
}
