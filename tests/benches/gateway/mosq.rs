//! Debian's mosquitto 2.0 as the ingest baseline, on 127.0.0.1 with a minimal config.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ironbridge_e2e::External;
use ironbridge_e2e::net::{LOCALHOST, free_port};
use ironbridge_e2e::process::log_tail;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

/// A mosquitto broker; killed on drop.
pub struct Broker {
    _child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The config the bench uses: anonymous, no persistence, the defaults otherwise, plus
/// `extra` lines.
pub fn config(port: u16, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         log_dest stderr\nlog_type error\nlog_type warning\n{extra}"
    )
}

impl Broker {
    pub async fn start(extra: &str) -> Result<Broker> {
        let dir = tempfile::Builder::new()
            .prefix("ironbridge-bench-mosquitto-")
            .tempdir()?;
        let port = free_port()?;
        let addr = SocketAddr::from((LOCALHOST, port));
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config(port, extra))?;
        let log_path = dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(External::Mosquitto.path());
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        super::daemon::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("spawn mosquitto")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "mosquitto exited during start ({status}):\n{}",
                    log_tail(&log_path, 4000)
                );
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(Broker {
                    _child: child,
                    addr,
                    _dir: dir,
                });
            }
            if Instant::now() >= deadline {
                bail!(
                    "mosquitto on {addr} not ready:\n{}",
                    log_tail(&log_path, 4000)
                );
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}
