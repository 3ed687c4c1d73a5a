//! librdkafka's built-in mock Kafka cluster (`test.mock.num.brokers`), run by `kafka_tool.py
//! mock-cluster` in the test venv: a second Kafka-protocol implementation next to tansu, with
//! several brokers (partition leaders spread over them) and Apache Kafka's idempotent-producer
//! checks. It is what librdkafka tests its own idempotent producer against.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::External;
use crate::kafka::script;

/// A running mock cluster; it stops when this is dropped (its stdin closes, and the child is killed).
pub struct MockKafka {
    bootstrap: String,
    _child: Child,
}

impl MockKafka {
    /// Starts a cluster of `brokers` brokers on 127.0.0.1 and waits until it reports its addresses.
    pub async fn start(brokers: u32) -> Result<MockKafka> {
        let mut child = Command::new(External::PythonVenv.path())
            .arg(script())
            .arg("mock-cluster")
            .arg("--brokers")
            .arg(brokers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn kafka_tool.py mock-cluster")?;
        let stdout = child.stdout.take().context("mock-cluster stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("mock cluster did not report its brokers within 30 s")??;
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("mock-cluster said {line:?}"))?;
        let bootstrap = v["bootstrap"]
            .as_str()
            .with_context(|| format!("no bootstrap in {line:?}"))?
            .to_owned();
        Ok(MockKafka {
            bootstrap,
            _child: child,
        })
    }

    /// `host:port,host:port,...` of all brokers.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The brokers as a list, e.g. for rskafka's `ClientBuilder`.
    pub fn brokers(&self) -> Vec<String> {
        self.bootstrap.split(',').map(str::to_owned).collect()
    }
}
