//! MQTT publishing with independent clients — `mosquitto_pub` and the paho-mqtt script
//! `tests/py/mqtt_pub.py` — and a `mosquitto` reference broker for checking them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::external::{External, py_dir};
use crate::net::{LOCALHOST, free_port};
use crate::process::{log_tail, run};

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    V311,
    #[default]
    V5,
}

/// One publish job: `count` messages to `topic` on 127.0.0.1:`port`, each acknowledged per its QoS
/// before the call returns. A `{i}` in `payload` is replaced by the message index (paho only; with
/// `mosquitto_pub` the same payload is repeated).
#[derive(Debug, Clone)]
pub struct MqttPublish {
    pub port: u16,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub version: MqttVersion,
    pub count: u32,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT 5 only.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 only.
    pub content_type: Option<String>,
    pub timeout: Duration,
}

impl MqttPublish {
    /// One QoS 1, MQTT 5 message.
    pub fn new(port: u16, topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> MqttPublish {
        MqttPublish {
            port,
            topic: topic.into(),
            payload: payload.into(),
            qos: 1,
            retain: false,
            version: MqttVersion::V5,
            count: 1,
            client_id: None,
            username: None,
            password: None,
            user_properties: Vec::new(),
            content_type: None,
            timeout: Duration::from_secs(30),
        }
    }

    fn check(&self) -> Result<()> {
        if self.qos > 2 {
            bail!("QoS {} is not 0, 1 or 2", self.qos);
        }
        if self.version == MqttVersion::V311
            && (!self.user_properties.is_empty() || self.content_type.is_some())
        {
            bail!("user properties and content type need MQTT 5");
        }
        Ok(())
    }

    /// Publishes with `mosquitto_pub` (the payload is sent from a file, so it may be binary).
    pub async fn via_mosquitto(&self) -> Result<()> {
        self.check()?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("payload");
        std::fs::write(&file, &self.payload)?;
        let mut cmd = Command::new(External::MosquittoClients.path());
        cmd.arg("-h")
            .arg(LOCALHOST.to_string())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-t")
            .arg(&self.topic)
            .arg("-q")
            .arg(self.qos.to_string())
            .arg("-V")
            .arg(match self.version {
                MqttVersion::V311 => "mqttv311",
                MqttVersion::V5 => "mqttv5",
            })
            .arg("-f")
            .arg(&file);
        if self.count > 1 {
            cmd.arg("--repeat").arg(self.count.to_string());
        }
        if self.retain {
            cmd.arg("-r");
        }
        if let Some(id) = &self.client_id {
            cmd.arg("-i").arg(id);
        }
        if let Some(u) = &self.username {
            cmd.arg("-u").arg(u);
        }
        if let Some(p) = &self.password {
            cmd.arg("-P").arg(p);
        }
        for (k, v) in &self.user_properties {
            cmd.args(["-D", "publish", "user-property", k, v]);
        }
        if let Some(ct) = &self.content_type {
            cmd.args(["-D", "publish", "content-type", ct]);
        }
        run(&mut cmd, self.timeout).await?;
        Ok(())
    }

    /// Publishes with paho-mqtt v2 (`tests/py/mqtt_pub.py`) and returns the seconds the publishes took.
    pub async fn via_paho(&self) -> Result<f64> {
        self.check()?;
        let mut cmd = Command::new(External::PythonVenv.path());
        cmd.arg(py_dir().join("mqtt_pub.py"))
            .arg("--host")
            .arg(LOCALHOST.to_string())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--topic")
            .arg(&self.topic)
            .arg("--qos")
            .arg(self.qos.to_string())
            .arg("--count")
            .arg(self.count.to_string())
            .arg("--protocol")
            .arg(match self.version {
                MqttVersion::V311 => "311",
                MqttVersion::V5 => "5",
            })
            .arg("--timeout")
            .arg(self.timeout.as_secs_f64().to_string());
        match std::str::from_utf8(&self.payload) {
            Ok(s) => cmd.arg("--message").arg(s),
            Err(_) => cmd.arg("--payload-hex").arg(
                self.payload
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            ),
        };
        if self.retain {
            cmd.arg("--retain");
        }
        if let Some(id) = &self.client_id {
            cmd.arg("--client-id").arg(id);
        }
        if let Some(u) = &self.username {
            cmd.arg("--username").arg(u);
        }
        if let Some(p) = &self.password {
            cmd.arg("--password").arg(p);
        }
        for (k, v) in &self.user_properties {
            cmd.arg("--user-property").arg(format!("{k}={v}"));
        }
        if let Some(ct) = &self.content_type {
            cmd.arg("--content-type").arg(ct);
        }
        let out = run(&mut cmd, self.timeout + Duration::from_secs(15)).await?;
        #[derive(Deserialize)]
        struct Done {
            elapsed_s: f64,
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .context("mqtt_pub.py printed nothing")?;
        let done: Done =
            serde_json::from_str(line).with_context(|| format!("mqtt_pub.py output: {line}"))?;
        Ok(done.elapsed_s)
    }
}

/// A message received by [`Mosquitto::collect`] (`mosquitto_sub -F %j`).
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    pub topic: String,
    pub qos: u8,
    /// 0 or 1.
    #[serde(default)]
    pub retain: u8,
    /// The payload as text (mosquitto_sub prints it raw).
    pub payload: serde_json::Value,
    /// MQTT 5 properties (e.g. `user-properties`, `content-type`) as mosquitto_sub reports them.
    #[serde(default)]
    pub properties: serde_json::Value,
}

/// A `mosquitto` broker on 127.0.0.1 (anonymous access, no persistence); killed on drop.
pub struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts it on a free port and waits until it accepts connections.
    pub async fn start() -> Result<Mosquitto> {
        Mosquitto::start_with_tls(None).await
    }

    /// Also listens with TLS (PEM `(cert, key)`) on a second free port ([`Mosquitto::tls_port`]);
    /// clients are not asked for certificates.
    pub async fn start_with_tls(
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Mosquitto> {
        Mosquitto::start_listening(free_port()?, tls).await
    }

    /// Starts it on `port` (e.g. one a client was told to use before any server listened).
    pub async fn start_on(port: u16) -> Result<Mosquitto> {
        Mosquitto::start_listening(port, None).await
    }

    async fn start_listening(
        port: u16,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("ironbridge-mosquitto-")
            .tempdir()?;
        let addr = SocketAddr::from((LOCALHOST, port));
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
             listener {port} 127.0.0.1\n"
        );
        let mut tls_port = None;
        if let Some((cert, key)) = tls {
            let p = free_port()?;
            // The key is in our 0700 temp dir: mosquitto started as root would drop to the
            // `mosquitto` user and fail to read it; `user` is ignored when not root.
            text.insert_str(0, "user root\n");
            text.push_str(&format!(
                "listener {p} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                cert.display(),
                cert.display(),
                key.display()
            ));
            tls_port = Some(p);
        }
        std::fs::write(&conf, text)?;
        Self::launch(dir, &conf, addr, tls_port).await
    }

    /// Starts mosquitto with `conf` (in `dir`, which holds its log) and waits until it listens.
    async fn launch(
        dir: tempfile::TempDir,
        conf: &std::path::Path,
        addr: SocketAddr,
        tls_port: Option<u16>,
    ) -> Result<Mosquitto> {
        let log_path = dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(External::Mosquitto.path())
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn mosquitto")?;
        let mut m = Mosquitto {
            child,
            addr,
            tls_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = m.child.try_wait()? {
                bail!(
                    "mosquitto exited during start ({status}):\n{}",
                    log_tail(&log_path, 4000)
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(m);
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

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The TLS listener's port, if started with one.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Stops it (SIGKILL) and waits for the exit.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await.context("kill mosquitto")
    }

    fn sub(&self, client_id: &str, filter: &str) -> Command {
        let mut cmd = Command::new(
            External::MosquittoClients
                .path()
                .with_file_name("mosquitto_sub"),
        );
        cmd.arg("-h")
            .arg(LOCALHOST.to_string())
            .arg("-p")
            .arg(self.port().to_string())
            .args([
                "-V", "mqttv5", "-q", "1", "-c", "-x", "600", "-i", client_id,
            ])
            .arg("-t")
            .arg(filter);
        cmd
    }

    /// Registers a persistent QoS 1 subscription to `filter` for `client_id` and returns once the broker
    /// acknowledged it; messages published afterwards are queued for [`Mosquitto::collect`].
    pub async fn subscribe(&self, client_id: &str, filter: &str) -> Result<()> {
        let mut cmd = self.sub(client_id, filter);
        cmd.arg("-E");
        run(&mut cmd, Duration::from_secs(10)).await?;
        Ok(())
    }

    /// Reconnects `client_id`'s session and reads `count` messages (error if they don't arrive in
    /// `limit`).
    pub async fn collect(
        &self,
        client_id: &str,
        filter: &str,
        count: usize,
        limit: Duration,
    ) -> Result<Vec<Received>> {
        let mut cmd = self.sub(client_id, filter);
        cmd.args(["-F", "%j", "-C"])
            .arg(count.to_string())
            .arg("-W")
            .arg(limit.as_secs().max(1).to_string());
        let out = run(&mut cmd, limit + Duration::from_secs(5)).await?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("mosquitto_sub output: {l}")))
            .collect()
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        log_tail(&self.log_path(), usize::MAX)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }
}

/// How [`Mosquitto::start_with`] configures the reference broker.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// `(username, password)` pairs. When there are any, anonymous access is off and they go into a
    /// password file made with `mosquitto_passwd -b`; otherwise anonymous access is on.
    pub users: Vec<(String, String)>,
    /// More global `mosquitto.conf` lines (written before the listener), e.g. `max_keepalive 60`.
    pub extra_conf: String,
}

impl Mosquitto {
    /// Starts a broker configured by `opts` on a free 127.0.0.1 port (no persistence, every other
    /// setting at mosquitto's default) and waits until it accepts connections.
    pub async fn start_with(opts: &MosquittoOptions) -> Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("ironbridge-mosquitto-")
            .tempdir()?;
        let port = free_port()?;
        let addr = SocketAddr::from((LOCALHOST, port));
        // Started as root, mosquitto would drop to the `mosquitto` user and could not read the
        // password file in our 0700 temp dir; `user` is ignored when not root.
        let mut text = String::from(
            "user root\nper_listener_settings false\npersistence false\n\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n",
        );
        if opts.users.is_empty() {
            text.push_str("allow_anonymous true\n");
        } else {
            let file = dir.path().join("passwd");
            for (i, (user, password)) in opts.users.iter().enumerate() {
                let mut cmd = Command::new(mosquitto_passwd());
                cmd.arg("-b");
                if i == 0 {
                    cmd.arg("-c");
                }
                cmd.arg(&file).arg(user).arg(password);
                run(&mut cmd, Duration::from_secs(10)).await?;
            }
            text.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                file.display()
            ));
        }
        text.push_str(&opts.extra_conf);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("listener {port} 127.0.0.1\n"));
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, text)?;
        Self::launch(dir, &conf, addr, None).await
    }

    /// `mosquitto -h`'s first line, e.g. `mosquitto version 2.0.11`.
    pub async fn version() -> Result<String> {
        let out = Command::new(External::Mosquitto.path())
            .arg("-h")
            .stdin(Stdio::null())
            .output()
            .await
            .context("run mosquitto -h")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .find(|l| l.contains("version"))
            .unwrap_or("mosquitto (version unknown)")
            .trim()
            .to_string())
    }
}

/// `mosquitto_passwd` (Debian package `mosquitto`): next to `mosquitto_pub` or on `PATH`.
fn mosquitto_passwd() -> PathBuf {
    let beside = External::MosquittoClients
        .path()
        .with_file_name("mosquitto_passwd");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("mosquitto_passwd")
    }
}
