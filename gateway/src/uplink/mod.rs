//! Kafka uplink: reads the buffer, routes events to Kafka records, commits after acks=all.
