//! The Tahu host (`tests/js/tahu_host.js`: Eclipse Tahu's JavaScript codec `sparkplug-payload`
//! and MQTT.js, the lineage of Ignition's MQTT Engine) as a child process: every message on its
//! filters as a JSON line with QoS, retain, seq, bdSeq, timestamps and the metrics as Tahu
//! decodes them; commands (NCMD, DCMD, any Sparkplug message) encoded by Tahu.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::External;
use crate::external::{js_dir, js_src_dir};
use crate::sparkplug::tail_json;

/// The Tahu host as a child process.
pub struct TahuHost {
    _child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Value>,
    pending: VecDeque<Value>,
    /// Every message received (`kind` sparkplug, state, other), in arrival order.
    pub history: Vec<Value>,
    next_id: u64,
}

impl TahuHost {
    /// Connects to the broker on 127.0.0.1:`port` and subscribes to `filters` at QoS 1.
    pub async fn start(port: u16, filters: &[&str], client_id: &str) -> Result<TahuHost> {
        let mut cmd = Command::new(External::Node.path());
        cmd.arg(js_src_dir().join("tahu_host.js"))
            .env("NODE_PATH", js_dir().join("node_modules"))
            .args(["--port", &port.to_string(), "--client-id", client_id]);
        for f in filters {
            cmd.args(["--subscribe", f]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start tahu_host.js")?;
        let stdin = child.stdin.take().context("host stdin")?;
        let stdout = child.stdout.take().context("host stdout")?;
        let (tx, rx) = mpsc::channel(100_000);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "garbage", "line": line}));
                if tx.send(v).await.is_err() {
                    return;
                }
            }
        });
        let mut host = TahuHost {
            _child: child,
            stdin,
            rx,
            pending: VecDeque::new(),
            history: Vec::new(),
            next_id: 0,
        };
        // Retained messages may come before the SUBACK's "ready": kept for `next`.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut early = VecDeque::new();
        loop {
            let v = timeout(
                deadline.saturating_duration_since(Instant::now()),
                host.rx.recv(),
            )
            .await
            .context("Tahu host not ready within 30 s")?
            .context("the Tahu host exited")?;
            if v["event"] == "ready" {
                break;
            }
            if v["event"] == "error" {
                bail!("Tahu host: {v}");
            }
            if v.get("kind").is_some() {
                host.history.push(v.clone());
            }
            early.push_back(v);
        }
        host.pending = early;
        Ok(host)
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Ok(v);
        }
        let v = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.rx.recv(),
        )
        .await
        .context("timed out")?
        .context("the Tahu host exited")?;
        if v.get("kind").is_some() {
            self.history.push(v.clone());
        }
        Ok(v)
    }

    /// The next line matching `pred` (earlier ones are skipped, but kept in `history`).
    pub async fn next(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            match self.recv(deadline).await {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(v) if v["event"] == "error" || v["kind"] == "undecodable" => {
                    bail!("{what}: Tahu host error {v}")
                }
                Ok(_) => {}
                Err(e) => bail!(
                    "{what}: {e:#}; last messages: {}",
                    tail_json(&self.history, 5)
                ),
            }
        }
    }

    /// Sends a command and waits until the client has written it (QoS 0: no PUBACK); lines that
    /// arrive meanwhile stay queued for [`TahuHost::next`].
    pub async fn send(&mut self, mut cmd: Value) -> Result<()> {
        self.next_id += 1;
        let id = self.next_id;
        cmd["id"] = json!(id);
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .context("write to the Tahu host")?;
        self.stdin.flush().await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut held = VecDeque::new();
        let r = loop {
            let v = match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.rx.recv(),
            )
            .await
            {
                Ok(Some(v)) => v,
                Ok(None) => break Err(anyhow::anyhow!("the Tahu host exited")),
                Err(_) => break Err(anyhow::anyhow!("no ack for {cmd}")),
            };
            if v["id"] == json!(id) && v["event"] == "ack" {
                break Ok(());
            }
            if v["id"] == json!(id) && v["event"] == "error" {
                break Err(anyhow::anyhow!("Tahu host could not send {cmd}: {v}"));
            }
            if v.get("kind").is_some() {
                self.history.push(v.clone());
            }
            held.push_back(v);
        };
        held.extend(self.pending.drain(..));
        self.pending = held;
        r
    }

    /// Publishes a Sparkplug message encoded by Tahu at QoS 0: `payload` is Tahu's object form
    /// (`timestamp`, `seq`, `metrics` with `name`, `alias`, `type`, `value`, `timestamp`).
    pub async fn publish(&mut self, topic: &str, payload: Value) -> Result<()> {
        self.send(json!({"cmd": "publish", "topic": topic, "payload": payload}))
            .await
    }
}
