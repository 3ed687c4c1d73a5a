//! Shared helpers for the adapters' tests with real peers on 127.0.0.1 and pseudo-terminals.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ironbridge_adapters::modbus::{Device, ModbusConfig, Quality, Reading, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

pub const INSTALL_HINT: &str = "run `bash adapters/scripts/install-test-deps.sh` as root \
     (apt socat, the pymodbus venv), or set IRONBRIDGE_E2E_SKIP_EXTERNAL=1 to skip tests that need them";

/// Whether tests needing external tools may be skipped.
pub fn skip_external() -> bool {
    std::env::var("IRONBRIDGE_E2E_SKIP_EXTERNAL").is_ok_and(|v| v == "1")
}

/// `Some(())` when `socat` is installed; `None` (skip) or a panic with the install hint.
pub fn require_socat() -> Option<()> {
    let ok = std::process::Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(());
    }
    if skip_external() {
        eprintln!("SKIPPED: socat is not installed (IRONBRIDGE_E2E_SKIP_EXTERNAL=1)");
        return None;
    }
    panic!("socat is not installed: {INSTALL_HINT}");
}

/// The Python with pymodbus: $IRONBRIDGE_MODBUS_VENV/bin/python
/// (default /var/cache/ironbridge/modbus-venv).
pub fn require_pymodbus() -> Option<PathBuf> {
    let venv = std::env::var("IRONBRIDGE_MODBUS_VENV")
        .unwrap_or_else(|_| "/var/cache/ironbridge/modbus-venv".into());
    let python = Path::new(&venv).join("bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import pymodbus.server, pymodbus.simulator"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if skip_external() {
        eprintln!("SKIPPED: pymodbus venv missing at {venv} (IRONBRIDGE_E2E_SKIP_EXTERNAL=1)");
        return None;
    }
    panic!("pymodbus is not installed in {venv}: {INSTALL_HINT}");
}

pub fn devices(toml_text: &str) -> Vec<Device> {
    let config: ModbusConfig = toml::from_str(toml_text).expect("test config parses");
    match config.validate() {
        Ok(d) => d,
        Err(issues) => panic!("test config invalid: {issues:#?}"),
    }
}

/// Waits for the first reading that matches, dropping the others; panics after `limit`.
pub async fn wait_for(
    rx: &mut mpsc::Receiver<Reading>,
    limit: Duration,
    what: &str,
    mut pred: impl FnMut(&Reading) -> bool,
) -> Reading {
    let deadline = Instant::now() + limit;
    loop {
        match timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) if pred(&r) => return r,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("reading channel closed while waiting for {what}"),
            Err(_) => panic!("no reading {what} within {limit:?}"),
        }
    }
}

/// Waits until a good reading of every named tag of `device` has arrived; returns them.
pub async fn wait_all_good(
    rx: &mut mpsc::Receiver<Reading>,
    device: &str,
    tags: &[&str],
    limit: Duration,
) -> std::collections::HashMap<String, Value> {
    wait_all_good_seen(rx, device, tags, limit).await.0
}

/// As [`wait_all_good`], also returning the latest reading of every tag seen meanwhile.
pub async fn wait_all_good_seen(
    rx: &mut mpsc::Receiver<Reading>,
    device: &str,
    tags: &[&str],
    limit: Duration,
) -> (
    std::collections::HashMap<String, Value>,
    std::collections::HashMap<(String, String), Reading>,
) {
    let deadline = Instant::now() + limit;
    let mut got = std::collections::HashMap::new();
    let mut seen = std::collections::HashMap::new();
    while got.len() < tags.len() {
        match timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => {
                seen.insert((r.device.clone(), r.tag.clone()), r.clone());
                if r.device == device && tags.contains(&r.tag.as_str()) {
                    if r.quality == Quality::Good {
                        got.insert(r.tag.clone(), r.value.clone().expect("good has a value"));
                    } else {
                        got.remove(&r.tag);
                    }
                }
            }
            Ok(None) => panic!("reading channel closed"),
            Err(_) => panic!(
                "not all tags of {device} good within {limit:?}: have {:?}",
                got.keys().collect::<Vec<_>>()
            ),
        }
    }
    (got, seen)
}

/// A `socat` pseudo-terminal pair: bytes written to one end come out of the other.
pub struct PtyPair {
    pub a: String,
    pub b: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PtyPair {
    pub async fn start() -> PtyPair {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a").display().to_string();
        let b = dir.path().join("b").display().to_string();
        let mut child = Command::new("socat")
            .args([
                "-d",
                "-d",
                &format!("pty,raw,echo=0,link={a}"),
                &format!("pty,raw,echo=0,link={b}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("socat starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("starting data transfer loop") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "socat did not report its pty pair"
        );
        // Keep draining socat's log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PtyPair {
            a,
            b,
            child,
            _dir: dir,
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A pymodbus server process (adapters/tests/py/pymodbus_server.py); killed on drop.
pub struct PyModbus {
    child: Child,
}

impl PyModbus {
    pub async fn start(python: &Path, args: &[&str]) -> PyModbus {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/pymodbus_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "READY" {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(ready, Ok(true)), "pymodbus server did not start");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PyModbus { child }
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
