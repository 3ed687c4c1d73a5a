//! The audit trail: who did what to this gateway and its devices, and what came of it.
//!
//! * **Append-only and durable.** One JSON object per line in `<state_dir>/audit/audit.jsonl`,
//!   each record written with one `write` and `fdatasync`ed before [`AuditTrail::record`]
//!   returns, so a record the caller saw recorded survives `kill -9` and power loss. Nothing
//!   rewrites a record; on open, only a torn last line (a crash in the middle of a write) is cut.
//! * **Bounded.** When the current file passes `audit.max_bytes / audit.files`, it is renamed to
//!   `audit.1.jsonl` (older ones shift up, the oldest beyond `audit.files` goes).
//! * **Forwarded, optionally** (`audit.forward_topic`): each record written is also handed to
//!   [`forward`], which appends it to the edge-buffer for the Kafka uplink. The hand-over is a
//!   bounded queue: if the buffer falls behind, records are dropped from the forwarding only
//!   (counted; they stay in the trail).
//! * **What goes in:** logins (success, failure, refused by the throttle), logouts, configuration
//!   changes (who, which sections), users and tokens created/changed/deleted, certificate
//!   changes, restarts, every device write from the web (who, device, tag, old and new value,
//!   result), and every Sparkplug/Kafka command result ([`AuditTrail::follow_commands`]).
//!
//! Device writes from outside the web API are authorized where they arrive: the broker's topic
//! rules decide who may publish a DCMD/NCMD, the edge node's command checks (writable tags,
//! `sparkplug.commands.allow`, the node-control switches) decide what it may do.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub mod forward;

use crate::sparkplug::audit::{CommandAudit, CommandRecord, CommandSource};

/// Records a query returns at most.
pub const MAX_QUERY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Who acted, through which door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A signed-in web user.
    Web,
    /// An API token.
    Api,
    /// An MQTT client of the embedded broker (Sparkplug DCMD/NCMD).
    Mqtt,
    /// The upstream MQTT server (`[sparkplug.upstream]`).
    Upstream,
    /// The Kafka command topic.
    Kafka,
    /// The daemon itself.
    Daemon,
}

/// What came of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Refused: wrong credentials, throttled, not allowed, invalid.
    Denied,
    /// Allowed but not done (device error, write failed).
    Failed,
}

/// One record as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing over the life of the trail (across restarts).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub source: Source,
    /// The user name, `token:<name>`, MQTT user/client, Kafka record id; `-` when unknown.
    pub actor: String,
    /// The client address, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peer: Option<String>,
    /// `login`, `logout`, `config_change`, `user_create`, `device_write`, `command`, ...
    pub action: String,
    /// What was acted on: user name, section list, `device/tag`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    pub outcome: Outcome,
    /// Action-specific details (old and new value, reason); never a secret.
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub detail: serde_json::Value,
}

/// A record before [`AuditTrail::record`] numbers and timestamps it.
#[derive(Debug, Clone)]
pub struct Event {
    pub source: Source,
    pub actor: String,
    pub peer: Option<String>,
    pub action: &'static str,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub detail: serde_json::Value,
}

impl Event {
    pub fn new(source: Source, actor: impl Into<String>, action: &'static str) -> Event {
        Event {
            source,
            actor: actor.into(),
            peer: None,
            action,
            target: None,
            outcome: Outcome::Ok,
            detail: serde_json::Value::Null,
        }
    }

    pub fn peer(mut self, peer: impl ToString) -> Event {
        self.peer = Some(peer.to_string());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Event {
        self.target = Some(target.into());
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Event {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Event {
        self.detail = detail;
        self
    }
}

/// Filters of [`AuditTrail::query`] (all optional; text matches are case-insensitive
/// substrings).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Query {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub source: Option<String>,
    pub outcome: Option<String>,
    pub text: Option<String>,
    /// The newest this many (default 500, at most [`MAX_QUERY`]).
    pub limit: Option<usize>,
}

impl Query {
    fn matches(&self, r: &AuditRecord) -> bool {
        let has = |hay: &str, needle: &Option<String>| {
            needle
                .as_deref()
                .is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
        };
        self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms <= t)
            && has(&r.actor, &self.actor)
            && has(&r.action, &self.action)
            && has(r.source.as_str(), &self.source)
            && has(r.outcome.as_str(), &self.outcome)
            && self.text.as_deref().is_none_or(|t| {
                serde_json::to_string(r)
                    .map(|s| s.to_lowercase().contains(&t.to_lowercase()))
                    .unwrap_or(false)
            })
    }
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Web => "web",
            Source::Api => "api",
            Source::Mqtt => "mqtt",
            Source::Upstream => "upstream",
            Source::Kafka => "kafka",
            Source::Daemon => "daemon",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

struct Current {
    file: File,
    bytes: u64,
    next_seq: u64,
}

/// See the module documentation. Share as `Arc<AuditTrail>`.
pub struct AuditTrail {
    dir: PathBuf,
    file_bytes: u64,
    files: usize,
    current: Mutex<Current>,
    /// Where written records go for forwarding, once [`AuditTrail::forward_records`] was called.
    forward: std::sync::OnceLock<mpsc::Sender<AuditRecord>>,
    pub recorded: AtomicU64,
    pub errors: AtomicU64,
    /// Records not forwarded because the forwarding queue was full.
    pub forward_dropped: AtomicU64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl AuditTrail {
    /// Opens (creates) the trail in `dir`: at most `max_bytes` over `files` files.
    pub fn open(dir: &Path, max_bytes: u64, files: usize) -> Result<AuditTrail, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let files = files.max(2);
        let path = dir.join("audit.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let (bytes, last_seq) = cut_torn_tail(&mut file).map_err(io(&path))?;
        let last_seq = match last_seq {
            Some(s) => Some(s),
            None => last_seq_in(&dir.join("audit.1.jsonl")),
        };
        Ok(AuditTrail {
            dir: dir.to_path_buf(),
            file_bytes: (max_bytes / files as u64).max(4096),
            files,
            current: Mutex::new(Current {
                file,
                bytes,
                next_seq: last_seq.map_or(1, |s| s + 1),
            }),
            forward: std::sync::OnceLock::new(),
            recorded: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            forward_dropped: AtomicU64::new(0),
        })
    }

    fn path(&self, n: usize) -> PathBuf {
        if n == 0 {
            self.dir.join("audit.jsonl")
        } else {
            self.dir.join(format!("audit.{n}.jsonl"))
        }
    }

    /// Writes `e` durably (blocking: call from a blocking context, or use [`Self::record`]).
    pub fn record_blocking(&self, e: Event) -> Result<AuditRecord, AuditError> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.bytes >= self.file_bytes {
            self.rotate(&mut cur)?;
        }
        let rec = AuditRecord {
            seq: cur.next_seq,
            time_ms: crate::clock::now_ms(),
            source: e.source,
            actor: e.actor,
            peer: e.peer,
            action: e.action.to_string(),
            target: e.target,
            outcome: e.outcome,
            detail: e.detail,
        };
        let mut line = serde_json::to_vec(&rec)?;
        line.push(b'\n');
        let path = self.path(0);
        cur.file.write_all(&line).map_err(io(&path))?;
        cur.file.sync_data().map_err(io(&path))?;
        cur.bytes += line.len() as u64;
        cur.next_seq += 1;
        self.recorded.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = self.forward.get()
            && tx.try_send(rec.clone()).is_err()
        {
            self.forward_dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(rec)
    }

    /// From now on every record written is also sent to the returned receiver (at most
    /// `capacity` waiting; beyond that they are dropped from forwarding and counted). Once.
    pub fn forward_records(&self, capacity: usize) -> Option<mpsc::Receiver<AuditRecord>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.forward.set(tx).ok().map(|()| rx)
    }

    /// The trail's counters in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "ironbridge_audit_records_total",
                "Audit records written.",
                &self.recorded,
            ),
            (
                "ironbridge_audit_errors_total",
                "Audit records that could not be written (or were missed by a lagging reader).",
                &self.errors,
            ),
            (
                "ironbridge_audit_forward_dropped_total",
                "Audit records not forwarded to the buffer because the forwarding queue was full.",
                &self.forward_dropped,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }

    /// Writes `e` durably; a failure is logged and counted (the action itself is not undone).
    pub async fn record(self: &Arc<Self>, e: Event) {
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || me.record_blocking(e)).await;
        let err = match r {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %err, "audit record not written");
    }

    fn rotate(&self, cur: &mut Current) -> Result<(), AuditError> {
        for n in (1..self.files).rev() {
            let from = self.path(n - 1);
            let to = self.path(n);
            if from.exists() {
                std::fs::rename(&from, &to).map_err(io(&from))?;
            }
        }
        let path = self.path(0);
        cur.file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        cur.bytes = 0;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    /// The newest records matching `q`, oldest first.
    pub fn query(&self, q: &Query) -> Vec<AuditRecord> {
        let limit = q.limit.unwrap_or(500).clamp(1, MAX_QUERY);
        // Hold the writer so no half-written line is read.
        let _cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::collections::VecDeque::with_capacity(limit);
        for n in (0..self.files).rev() {
            let Ok(f) = File::open(self.path(n)) else {
                continue;
            };
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let Ok(r) = serde_json::from_str::<AuditRecord>(&line) else {
                    continue;
                };
                if q.matches(&r) {
                    if out.len() == limit {
                        out.pop_front();
                    }
                    out.push_back(r);
                }
            }
        }
        out.into()
    }

    /// Writes every Sparkplug/Kafka command result [`CommandAudit`] records into the trail
    /// until the feed ends (the daemon stops).
    pub async fn follow_commands(self: Arc<Self>, commands: Arc<CommandAudit>) {
        let mut rx = commands.subscribe();
        loop {
            match rx.recv().await {
                Ok(r) => self.record(command_event(&r)).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    self.errors.fetch_add(n, Ordering::Relaxed);
                    self.record(
                        Event::new(Source::Daemon, "-", "audit_gap")
                            .outcome(Outcome::Failed)
                            .detail(serde_json::json!({ "missed_command_results": n })),
                    )
                    .await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn command_event(r: &CommandRecord) -> Event {
    let source = match r.source {
        CommandSource::Mqtt => Source::Mqtt,
        CommandSource::Upstream => Source::Upstream,
        CommandSource::Kafka => Source::Kafka,
    };
    let outcome = match r.outcome {
        crate::sparkplug::audit::Outcome::Ok => Outcome::Ok,
        crate::sparkplug::audit::Outcome::Rejected => Outcome::Denied,
        crate::sparkplug::audit::Outcome::Failed => Outcome::Failed,
    };
    let target = match &r.device {
        Some(d) => format!("{d}/{}", r.metric),
        None => r.metric.clone(),
    };
    let mut e = Event::new(
        source,
        r.actor.clone().unwrap_or_else(|| "-".into()),
        "command",
    )
    .target(target)
    .outcome(outcome)
    .detail(serde_json::json!({
        "kind": r.kind,
        "new": r.value,
        "reason": r.reason,
        "correlation_id": r.correlation_id,
    }));
    e.peer = r.peer.clone();
    e
}

/// Cuts a last line without its newline (a write torn by a crash); returns the file's length
/// after that and the last record's `seq`.
fn cut_torn_tail(file: &mut File) -> std::io::Result<(u64, Option<u64>)> {
    let len = file.seek(SeekFrom::End(0))?;
    let tail_len = len.min(64 * 1024);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    file.read_to_end(&mut tail)?;
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => len - tail_len + i as u64 + 1,
        None if tail_len == len => 0,
        // A line longer than the window: keep it (records are far smaller than 64 KiB).
        None => len,
    };
    if keep < len {
        file.set_len(keep)?;
        file.sync_all()?;
    }
    let start = (keep - (len - tail_len)) as usize;
    let last = tail[..start.min(tail.len())]
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|l| serde_json::from_slice::<AuditRecord>(l).ok())
        .map(|r| r.seq);
    Ok((keep, last))
}

fn last_seq_in(path: &Path) -> Option<u64> {
    let mut f = OpenOptions::new().read(true).open(path).ok()?;
    let len = f.seek(SeekFrom::End(0)).ok()?;
    let from = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    tail.split(|b| *b == b'\n')
        .rev()
        .find_map(|l| serde_json::from_slice::<AuditRecord>(l).ok())
        .map(|r| r.seq)
}

/// CSV of `records` (RFC 4180: every field quoted, quotes doubled). Cells that a spreadsheet
/// would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) get a leading `'`.
pub fn to_csv(records: &[AuditRecord]) -> String {
    fn cell(s: &str) -> String {
        let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        format!("\"{}\"", guarded.replace('"', "\"\""))
    }
    let mut out = String::from("seq,time,source,actor,peer,action,target,outcome,detail\r\n");
    for r in records {
        let row = [
            r.seq.to_string(),
            crate::web::logs::rfc3339(r.time_ms),
            r.source.as_str().to_string(),
            r.actor.clone(),
            r.peer.clone().unwrap_or_default(),
            r.action.clone(),
            r.target.clone().unwrap_or_default(),
            r.outcome.as_str().to_string(),
            if r.detail.is_null() {
                String::new()
            } else {
                r.detail.to_string()
            },
        ];
        out.push_str(&row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_rotate_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = AuditTrail::open(dir.path(), 64 * 1024, 4).expect("open");
        for i in 0..10 {
            t.record_blocking(Event::new(Source::Web, "admin", "login").target(format!("t{i}")))
                .expect("record");
        }
        drop(t);
        // A crash in the middle of a write leaves half a line.
        {
            let mut f = OpenOptions::new()
                .append(true)
                .open(dir.path().join("audit.jsonl"))
                .expect("open");
            f.write_all(b"{\"seq\":11,\"time_ms\":1,\"sou")
                .expect("torn");
        }
        let t = AuditTrail::open(dir.path(), 64 * 1024, 4).expect("reopen");
        let r = t
            .record_blocking(Event::new(Source::Web, "admin", "logout"))
            .expect("record");
        assert_eq!(r.seq, 11, "numbering continues after the last whole record");
        let all = t.query(&Query::default());
        assert_eq!(all.len(), 11);
        assert_eq!(all.last().map(|r| r.action.as_str()), Some("logout"));
        // Bounded: far more than fits.
        for _ in 0..2000 {
            t.record_blocking(Event::new(Source::Api, "token:x", "device_write"))
                .expect("record");
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        assert!(total <= 64 * 1024 + 4096, "{total} bytes on disk");
        let q = Query {
            action: Some("logout".into()),
            ..Query::default()
        };
        assert!(t.query(&q).is_empty(), "the oldest records rotated away");
        let newest = t.query(&Query {
            limit: Some(1),
            ..Query::default()
        });
        assert_eq!(newest[0].seq, 2011);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let r = AuditRecord {
            seq: 1,
            time_ms: 0,
            source: Source::Web,
            actor: "=cmd|' /C calc'!A0".into(),
            peer: None,
            action: "login".into(),
            target: Some("a\"b".into()),
            outcome: Outcome::Denied,
            detail: serde_json::Value::Null,
        };
        let csv = to_csv(&[r]);
        assert!(csv.contains("\"'=cmd|' /C calc'!A0\""), "{csv}");
        assert!(csv.contains("\"a\"\"b\""), "{csv}");
    }
}
