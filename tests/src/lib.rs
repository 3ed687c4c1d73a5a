//! Harness for end-to-end tests: starts real peers (Kafka-protocol broker, MQTT clients, fault proxy) on 127.0.0.1.
