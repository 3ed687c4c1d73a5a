//! Embedded MQTT broker (rumqttd) and the tap that appends every publish to the buffer.
