//! The independent Sparkplug B host application (`tests/py/sparkplug_host.py`: paho-mqtt +
//! Google protobuf classes generated from the .proto) as a child process, for the Sparkplug
//! tests, and helpers to read its JSON lines.

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
use crate::external::py_dir;

/// The independent host application as a child process.
pub struct Host {
    _child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Value>,
    pending: VecDeque<Value>,
    /// Every Sparkplug message of our node (`spBv1.0/plant/...`), in arrival order.
    pub history: Vec<Value>,
    /// Every other topic seen.
    pub others: Vec<String>,
    next_id: u64,
}

impl Host {
    pub async fn start(port: u16, filters: &[&str]) -> Result<Host> {
        Host::spawn(port, filters, None).await
    }

    /// Like [`Host::start`], logged in as `user`.
    pub async fn start_as(port: u16, filters: &[&str], user: &str, password: &str) -> Result<Host> {
        Host::spawn(port, filters, Some((user, password))).await
    }

    async fn spawn(port: u16, filters: &[&str], login: Option<(&str, &str)>) -> Result<Host> {
        let mut cmd = Command::new(External::PythonVenv.path());
        cmd.arg(py_dir().join("sparkplug_host.py"))
            .args(["--port", &port.to_string()]);
        if let Some((user, password)) = login {
            cmd.args(["--username", user, "--password", password]);
        }
        for f in filters {
            cmd.args(["--subscribe", f]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start sparkplug_host.py")?;
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
        let mut host = Host {
            _child: child,
            stdin,
            rx,
            pending: VecDeque::new(),
            history: Vec::new(),
            others: Vec::new(),
            next_id: 0,
        };
        host.next("host ready", Duration::from_secs(30), |v| {
            v["event"] == "ready"
        })
        .await?;
        Ok(host)
    }

    pub async fn recv(&mut self, deadline: Instant) -> Result<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Ok(v);
        }
        let v = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.rx.recv(),
        )
        .await
        .context("timed out")?
        .context("the host exited")?;
        if v["kind"] == "sparkplug" {
            self.history.push(v.clone());
        } else if v["kind"] == "other" || v["kind"] == "state" {
            self.others
                .push(v["topic"].as_str().unwrap_or_default().to_string());
        }
        Ok(v)
    }

    /// The next message matching `pred` (earlier ones are skipped, but kept in `history`).
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
                Ok(v) if v["event"] == "error" => bail!("{what}: host error {v}"),
                Ok(_) => {}
                Err(e) => bail!(
                    "{what}: {e:#}; last messages: {}",
                    tail_json(&self.history, 5)
                ),
            }
        }
    }

    /// Sends a command and waits for its publish to be acknowledged; messages that arrive
    /// meanwhile stay queued for [`Host::next`].
    pub async fn send(&mut self, mut cmd: Value) -> Result<()> {
        self.next_id += 1;
        let id = self.next_id;
        cmd["id"] = json!(id);
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .context("write to the host")?;
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
                Ok(None) => break Err(anyhow::anyhow!("the host exited")),
                Err(_) => break Err(anyhow::anyhow!("no ack for {cmd}")),
            };
            if v["id"] == json!(id) && v["event"] == "ack" {
                break Ok(());
            }
            if v["id"] == json!(id) && v["event"] == "error" {
                break Err(anyhow::anyhow!("host could not send {cmd}: {v}"));
            }
            if v["kind"] == "sparkplug" {
                self.history.push(v.clone());
            }
            held.push_back(v);
        };
        // Keep order: what arrived before the ack comes first.
        held.extend(self.pending.drain(..));
        self.pending = held;
        r
    }

    pub async fn dcmd(&mut self, metrics: Value) -> Result<()> {
        self.send(json!({"cmd": "dcmd", "group": "plant", "node": "gw1", "device": "plc1", "metrics": metrics}))
            .await
    }
}

pub fn tail_json(v: &[Value], n: usize) -> String {
    v[v.len().saturating_sub(n)..]
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn is(t: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["type"] == t
}

pub fn metric<'a>(msg: &'a Value, name: &str) -> Option<&'a Value> {
    msg["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

pub fn bdseq(msg: &Value) -> Option<i64> {
    metric(msg, "bdSeq").and_then(|m| m["value"].as_i64())
}

/// Checks MQTT QoS and retain of every Sparkplug message a [`Host`] received (subscribed at
/// QoS 1, so the QoS seen is the publisher's): NDEATH QoS 1
/// (`tck-id-payloads-ndeath-will-message-qos`), every other message type QoS 0
/// (`tck-id-topics-nbirth-mqtt`, `-dbirth-mqtt`, `-ndata-mqtt`, `-ddata-mqtt`, `-ddeath-mqtt`,
/// `-ncmd-mqtt`, `-dcmd-mqtt`), none retained. Returns how many messages of each type were
/// checked, in type order.
pub fn check_qos_retain(history: &[Value]) -> Result<Vec<(String, usize)>> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for m in history {
        let t = m["type"].as_str().unwrap_or_default();
        let want_qos = if t == "NDEATH" { 1 } else { 0 };
        anyhow::ensure!(
            m["qos"] == want_qos && m["retain"] == false,
            "{t} delivered with qos {} retain {}, want qos {want_qos} retain false: {m}",
            m["qos"],
            m["retain"]
        );
        *counts.entry(t.to_string()).or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}
