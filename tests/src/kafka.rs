//! Kafka verification through an independent client: `tests/py/kafka_tool.py` (confluent-kafka, i.e.
//! librdkafka) run with the venv's Python.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use tokio::process::Command;

use crate::external::{External, py_dir};
use crate::process::run;

/// A record as read by the independent consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// 0 none, 1 create time, 2 log-append time (librdkafka's numbering).
    pub timestamp_type: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In record order, duplicates kept.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The first header called `name`, if present and not null.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The header as UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The key as UTF-8 text.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// One JSON line of `kafka_tool.py consume`.
#[derive(Deserialize)]
struct RecordJson {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: i64,
    timestamp_type: i32,
    key: Option<String>,
    key_b64: bool,
    value: Option<String>,
    headers_raw: Vec<(String, Option<String>)>,
}

impl RecordJson {
    fn into_record(self) -> Result<Record> {
        let key = match self.key {
            None => None,
            Some(k) if self.key_b64 => Some(B64.decode(k).context("key base64")?),
            Some(k) => Some(k.into_bytes()),
        };
        let value = self
            .value
            .map(|v| B64.decode(v).context("value base64"))
            .transpose()?;
        let headers = self
            .headers_raw
            .into_iter()
            .map(|(n, v)| {
                let v = v
                    .map(|v| B64.decode(v).with_context(|| format!("header {n} base64")))
                    .transpose()?;
                Ok((n, v))
            })
            .collect::<Result<_>>()?;
        Ok(Record {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type,
            key,
            value,
            headers,
        })
    }
}

/// Parses the output of `kafka_tool.py consume` (one JSON object per line; blank lines ignored).
pub fn parse_records(stdout: &str) -> Result<Vec<Record>> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<RecordJson>(line)
                .with_context(|| format!("consume output line {}: {line}", i + 1))?
                .into_record()
                .with_context(|| format!("consume output line {}", i + 1))
        })
        .collect()
}

/// One partition's watermarks, from `kafka_tool.py offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// What `kafka_tool.py produce` reports.
#[derive(Debug, Clone, Deserialize)]
pub struct ProduceStats {
    pub count: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_s: Option<f64>,
    pub mb_per_s: Option<f64>,
}

/// Options of [`KafkaTool::produce`]. Values are the record index zero-padded to 10 digits, then `x` up to
/// `size` bytes.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub count: u64,
    pub size: usize,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// `all`, `1` or `0`.
    pub acks: String,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub partition: Option<i32>,
    pub linger_ms: u32,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        ProduceOptions {
            count: 1,
            size: 10,
            compression: "none".into(),
            acks: "all".into(),
            key: None,
            headers: Vec::new(),
            partition: None,
            linger_ms: 5,
        }
    }
}

/// Runs `kafka_tool.py` against one bootstrap address.
#[derive(Debug, Clone)]
pub struct KafkaTool {
    bootstrap: String,
    /// Upper bound for each call (the tool's own `--timeout`, plus slack for Python start-up).
    pub timeout: Duration,
    /// Bounds each Fetch request of [`KafkaTool::consume`] (`--fetch-max-bytes`). Set it to read large
    /// topics back from tansu: without it tansu answers the first Fetch with every partition's records
    /// at once (it ignores the per-partition limit and counts the request's limit in compressed bytes,
    /// 5 MiB at most), and with ~100k records that one answer takes longer than librdkafka waits.
    /// tansu's sqlite engine never returns a record larger than this (see `tests/TANSU.md`).
    pub fetch_max_bytes: Option<u32>,
}

impl KafkaTool {
    /// A tool for the cluster at `bootstrap` (e.g. [`crate::Tansu::bootstrap`]).
    pub fn new(bootstrap: impl Into<String>) -> KafkaTool {
        KafkaTool {
            bootstrap: bootstrap.into(),
            timeout: Duration::from_secs(30),
            fetch_max_bytes: None,
        }
    }

    fn command(&self, sub: &str, topic: &str) -> Command {
        let mut cmd = Command::new(External::PythonVenv.path());
        cmd.arg(script())
            .arg(sub)
            .arg("--bootstrap")
            .arg(&self.bootstrap)
            .arg("--topic")
            .arg(topic)
            .arg("--timeout")
            .arg(self.timeout.as_secs_f64().to_string());
        cmd
    }

    fn limit(&self) -> Duration {
        self.timeout + Duration::from_secs(15)
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1). Succeeds if it already exists
    /// with that many partitions.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let mut cmd = self.command("create-topic", topic);
        cmd.arg("--partitions").arg(partitions.to_string());
        run(&mut cmd, self.limit()).await?;
        Ok(())
    }

    /// Reads every partition of `topic` from the beginning until `expect` records arrived (error if
    /// fewer arrive within the timeout), or, with `None`, until the end of every partition.
    pub async fn consume(&self, topic: &str, expect: Option<usize>) -> Result<Vec<Record>> {
        self.consume_from(topic, None, expect).await
    }

    /// Like [`KafkaTool::consume`], but starting every partition at `from_offset` when given.
    pub async fn consume_from(
        &self,
        topic: &str,
        from_offset: Option<i64>,
        expect: Option<usize>,
    ) -> Result<Vec<Record>> {
        let mut cmd = self.command("consume", topic);
        if let Some(n) = expect {
            cmd.arg("--expect").arg(n.to_string());
        }
        if let Some(o) = from_offset {
            cmd.arg("--from-offset").arg(o.to_string());
        }
        if let Some(b) = self.fetch_max_bytes {
            cmd.arg("--fetch-max-bytes").arg(b.to_string());
        }
        let out = run(&mut cmd, self.limit()).await?;
        parse_records(&String::from_utf8_lossy(&out.stdout))
    }

    /// Earliest and latest offset (low and high watermark) of every partition, by `ListOffsets`.
    pub async fn offsets(&self, topic: &str) -> Result<Vec<PartitionOffsets>> {
        let out = run(&mut self.command("offsets", topic), self.limit()).await?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("offsets output: {l}")))
            .collect()
    }

    /// Produces records (acks and compression as given) and returns the tool's timing.
    pub async fn produce(&self, topic: &str, opts: &ProduceOptions) -> Result<ProduceStats> {
        let mut cmd = self.command("produce", topic);
        cmd.arg("--count")
            .arg(opts.count.to_string())
            .arg("--size")
            .arg(opts.size.to_string())
            .arg("--compression")
            .arg(&opts.compression)
            .arg("--acks")
            .arg(&opts.acks)
            .arg("--linger-ms")
            .arg(opts.linger_ms.to_string());
        if let Some(k) = &opts.key {
            cmd.arg("--key").arg(k);
        }
        if let Some(p) = opts.partition {
            cmd.arg("--partition").arg(p.to_string());
        }
        for (n, v) in &opts.headers {
            cmd.arg("--header").arg(format!("{n}={v}"));
        }
        let out = run(&mut cmd, self.limit()).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .context("produce printed nothing")?;
        serde_json::from_str(line).with_context(|| format!("produce output: {line}"))
    }
}

impl KafkaTool {
    /// Produces one record with `value` (UTF-8, as given) and an optional key, acks=all.
    pub async fn produce_value(&self, topic: &str, key: Option<&str>, value: &str) -> Result<()> {
        let mut cmd = self.command("produce", topic);
        cmd.args(["--count", "1", "--size", "0", "--value", value]);
        if let Some(k) = key {
            cmd.arg("--key").arg(k);
        }
        run(&mut cmd, self.limit()).await?;
        Ok(())
    }
}

/// Path of `kafka_tool.py`.
pub fn script() -> PathBuf {
    py_dir().join("kafka_tool.py")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_consume_lines() {
        let out = r#"{"topic": "t", "partition": 1, "offset": 7, "timestamp": 1700000000000, "timestamp_type": 1, "key": "k", "key_b64": false, "value": "AAE=", "headers": {"a": "x"}, "headers_b64": [], "headers_raw": [["a", "eA=="], ["n", null]]}

{"topic": "t", "partition": 0, "offset": 0, "timestamp": 1, "timestamp_type": 1, "key": "/w==", "key_b64": true, "value": null, "headers": {}, "headers_b64": [], "headers_raw": []}
"#;
        let r = parse_records(out).expect("parse");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].key_str(), Some("k"));
        assert_eq!(r[0].value.as_deref(), Some(&[0u8, 1][..]));
        assert_eq!(r[0].header_str("a"), Some("x"));
        assert_eq!(r[0].headers[1], ("n".to_string(), None));
        assert_eq!(r[1].key.as_deref(), Some(&[0xffu8][..]));
        assert_eq!(r[1].value, None);
    }

    #[test]
    fn rejects_bad_line() {
        assert!(parse_records("not json\n").is_err());
    }
}
