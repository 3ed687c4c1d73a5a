//! Field protocol adapters for Ironbridge. Modbus TCP and RTU land with the Modbus issue.
