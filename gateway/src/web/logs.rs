//! The recent log for the web UI (`GET /api/logs`): a `tracing` layer that keeps the last
//! [`CAPACITY`] events, each message cut at [`MAX_MESSAGE`] bytes, so memory stays bounded
//! whatever is logged.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::log_format::{escape, field_value};

pub const CAPACITY: usize = 1000;
pub const MAX_MESSAGE: usize = 2048;

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// RFC 3339 UTC, milliseconds.
    pub ts: String,
    pub level: String,
    pub target: String,
    /// The message and its fields (`key=value`).
    pub message: String,
}

#[derive(Default)]
pub struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogRing {
    /// The process-wide ring that [`layer`] feeds.
    pub fn global() -> Arc<LogRing> {
        static RING: OnceLock<Arc<LogRing>> = OnceLock::new();
        RING.get_or_init(|| Arc::new(LogRing::default())).clone()
    }

    fn push(&self, line: LogLine) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() >= CAPACITY {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let skip = l.len().saturating_sub(n);
        l.iter().skip(skip).cloned().collect()
    }
}

/// The layer that feeds [`LogRing::global`]; add it to the subscriber (under the same filter as
/// the console output).
pub fn layer() -> RingLayer {
    RingLayer {
        ring: LogRing::global(),
    }
}

pub struct RingLayer {
    ring: Arc<LogRing>,
}

struct Fields {
    message: String,
    rest: String,
}

/// Fields are escaped like the text log's ([`crate::log_format`]), so an outside value cannot
/// pass for another field or line in the UI either.
impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(&escape(value));
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), field_value(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// `2025-01-31T12:00:00.123Z` from milliseconds since the epoch.
pub fn rfc3339(ms: i64) -> String {
    use chrono::{Datelike as _, Timelike as _};
    let t = crate::uplink::route::timestamp(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    )
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut f);
        let mut message = f.message;
        message.push_str(&f.rest);
        truncate(&mut message, MAX_MESSAGE);
        let meta = event.metadata();
        self.ring.push(LogLine {
            ts: rfc3339(crate::clock::now_ms()),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ordered() {
        let r = LogRing::default();
        for i in 0..CAPACITY + 10 {
            r.push(LogLine {
                ts: rfc3339(0),
                level: "INFO".into(),
                target: "t".into(),
                message: i.to_string(),
            });
        }
        let all = r.tail(usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].message, "10");
        assert_eq!(rfc3339(86_400_000 + 1), "1970-01-02T00:00:00.001Z");
        assert_eq!(
            r.tail(2).last().map(|l| l.message.clone()),
            Some((CAPACITY + 9).to_string())
        );
        let mut s = "é".repeat(MAX_MESSAGE);
        truncate(&mut s, MAX_MESSAGE);
        assert!(s.len() <= MAX_MESSAGE + 3);
    }
}
