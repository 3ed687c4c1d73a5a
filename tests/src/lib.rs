//! Harness for end-to-end tests: starts real peers (Kafka-protocol broker, MQTT clients, fault proxy) on 127.0.0.1.
//!
//! Everything here talks to loopback only.
//!
//! - [`net`]: free ports, waiting until a port accepts connections, a TCP echo server.
//! - [`proxy::FaultProxy`]: in-process TCP fault proxy (`pass`, `cut`, `blackhole`, `slow`); the same engine
//!   runs as the `fault-proxy` binary.
//! - [`tansu::Tansu`]: the `tansu` Kafka-protocol broker as a child process (memory or SQLite storage).
//! - [`mock_kafka::MockKafka`]: librdkafka's mock Kafka cluster (several brokers, Apache Kafka's idempotence checks).
//! - [`kafka`]: create topics, produce and consume with the independent Python client (confluent-kafka).
//! - [`mqtt`]: publish with `mosquitto_pub` or the Python paho-mqtt script; a `mosquitto` reference broker.
//! - [`sparkplug::Host`]: the independent Sparkplug B host application (paho + Google protobuf).
//! - [`tahu::TahuHost`]: a second independent host, Eclipse Tahu's JavaScript codec + MQTT.js (node).
//! - [`external`]: where the external tools live, and the "install it / skip it" policy.
//!
//! External tools are installed by `tests/scripts/install-deps.sh` (as root). A test that needs a missing
//! tool fails with a message naming the install script, unless `IRONBRIDGE_E2E_SKIP_EXTERNAL=1`, which
//! skips every test that needs an external tool.

pub mod external;
pub mod gateway;
pub mod hostile;
pub mod kafka;
pub mod mock_kafka;
pub mod mqtt;
pub mod net;
pub mod process;
pub mod proxy;
pub mod pymodbus;
pub mod sparkplug;
pub mod tahu;
pub mod tansu;

pub use external::{External, require};
pub use kafka::{KafkaTool, PartitionOffsets, ProduceOptions, ProduceStats, Record};
pub use mock_kafka::MockKafka;
pub use mqtt::{Mosquitto, MqttPublish, MqttVersion};
pub use net::{EchoServer, free_port, wait_for_port};
pub use proxy::{FaultProxy, Mode};
pub use tansu::{Storage, Tansu};
