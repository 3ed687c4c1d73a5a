//! A one-shot read of one tag outside the poller ("test read" in the web UI): opens its own
//! connection with the device's settings, reads exactly the tag's registers or bits, decodes
//! and scales them like the poller does, and closes the connection.
//!
//! For a Modbus RTU device the serial port is exclusive: while the poller has it open the probe
//! fails to open it (the caller should show the live value instead).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::codec::Value;
use super::config::Device;
use super::link::{CallError, Client};
use super::pdu::{Op, OpResult};
use super::poller::{Quality, extract};

/// What one probe read returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReading {
    /// In engineering units (scaled); `None` when it could not be decoded.
    pub value: Option<Value>,
    pub quality: Quality,
    /// The registers (or bits as 0/1) as read.
    pub raw: Vec<u16>,
    /// Milliseconds since the Unix epoch when the reply arrived.
    pub ts: u64,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("device {device:?} has no tag {tag:?}")]
    UnknownTag { device: String, tag: String },
    #[error("cannot reach {device:?}: {reason}")]
    Connect { device: String, reason: String },
    #[error("reading {tag:?} from {device:?}: {error}")]
    Call {
        device: String,
        tag: String,
        error: CallError,
    },
}

/// Reads tag `tag` of `device` once, within the device's timeout (at least one second to
/// connect).
pub async fn read_tag(device: &Device, tag: &str) -> Result<ProbeReading, ProbeError> {
    let Some((_, t)) = device.tag(tag) else {
        return Err(ProbeError::UnknownTag {
            device: device.name.clone(),
            tag: tag.to_string(),
        });
    };
    let started = Instant::now();
    let timeout = device.timeout.max(Duration::from_millis(100));
    let mut client = Client::connect(&device.transport, device.unit_id, timeout)
        .await
        .map_err(|reason| ProbeError::Connect {
            device: device.name.clone(),
            reason,
        })?;
    let op = Op::Read {
        area: t.area,
        start: t.address,
        count: t.width(),
    };
    let reply = client.call(&op).await.map_err(|error| ProbeError::Call {
        device: device.name.clone(),
        tag: tag.to_string(),
        error,
    })?;
    let raw = match &reply {
        OpResult::Registers(r) => r.clone(),
        OpResult::Bits(b) => b.iter().map(|x| u16::from(*x)).collect(),
        OpResult::Written => Vec::new(),
    };
    let (value, quality) = extract(t, t.address, &reply);
    Ok(ProbeReading {
        value,
        quality,
        raw,
        ts: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::{DeviceConfig, ModbusConfig};
    use crate::modbus::sim::Simulator;
    use crate::modbus::{Area, codec};

    #[tokio::test]
    async fn reads_one_tag_from_a_simulator() {
        let sim = Simulator::new();
        sim.add_unit(1);
        let regs = codec::encode_registers(
            codec::DataType::F32,
            codec::WordOrder::ABCD,
            &Value::F32(21.5),
        )
        .expect("encode");
        sim.set_registers(1, Area::HoldingRegister, 10, &regs);
        let server = sim
            .spawn_tcp(([127, 0, 0, 1], 0).into())
            .await
            .expect("sim");
        let toml = format!(
            "[[devices]]\nname = \"press\"\ntransport = {{ type = \"tcp\", address = \"{}\" }}\n[[devices.tags]]\nname = \"temp\"\naddress = \"40011\"\ntype = \"f32\"\nscale = 2.0\n",
            server.addr()
        );
        let cfg: ModbusConfig = toml::from_str(&toml).expect("toml");
        let _: &DeviceConfig = &cfg.devices[0];
        let dev = cfg.validate().expect("valid").remove(0);
        let r = read_tag(&dev, "temp").await.expect("read");
        assert_eq!(r.value, Some(Value::F64(43.0)));
        assert_eq!(r.quality, Quality::Good);
        assert_eq!(r.raw, regs);
        assert!(matches!(
            read_tag(&dev, "nope").await,
            Err(ProbeError::UnknownTag { .. })
        ));
        server.shutdown().await;
        assert!(matches!(
            read_tag(&dev, "temp").await,
            Err(ProbeError::Connect { .. })
        ));
    }
}
