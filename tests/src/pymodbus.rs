//! pymodbus (an independent Modbus implementation, venv from adapters/scripts/install-test-deps.sh)
//! as a Modbus TCP server for the e2e tests.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The modbus venv's Python (`IRONBRIDGE_MODBUS_VENV`, default /var/cache/ironbridge/modbus-venv).
pub fn pymodbus_python() -> Result<PathBuf> {
    let venv = std::env::var("IRONBRIDGE_MODBUS_VENV")
        .unwrap_or_else(|_| "/var/cache/ironbridge/modbus-venv".into());
    let py = PathBuf::from(venv).join("bin/python");
    ensure!(
        py.is_file(),
        "{} missing: run adapters/scripts/install-test-deps.sh (or tests/scripts/install-deps.sh)",
        py.display()
    );
    Ok(py)
}

/// Starts adapters/tests/py/pymodbus_server.py on 127.0.0.1:`port`; returns once it printed READY.
pub async fn start_pymodbus(port: u16) -> Result<Child> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../adapters/tests/py/pymodbus_server.py");
    let mut child = Command::new(pymodbus_python()?)
        .arg(&script)
        .args(["tcp", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start pymodbus_server.py")?;
    let stdout = child.stdout.take().context("pymodbus stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "READY" {
            return Ok(child);
        }
    }
    bail!("pymodbus_server.py exited before printing READY")
}
