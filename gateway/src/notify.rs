//! systemd service notifications for `Type=notify`: READY once the buffer is recovered and the
//! listeners are bound, WATCHDOG pings from the health loop only while the pipeline works,
//! STATUS lines with the uplink state and backlog, STOPPING on shutdown. Without systemd (no
//! `NOTIFY_SOCKET`) every call is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// A stuck `fdatasync` (appended but unacknowledged data for this long) stops the watchdog pings.
const STALL_LIMIT: Duration = Duration::from_secs(30);

pub struct Notifier {
    watchdog: Option<Duration>,
    /// Acknowledged offset last seen moving, and when.
    progress: (u64, Instant),
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifier {
    pub fn new() -> Self {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            progress: (0, Instant::now()),
        }
    }

    /// How often the health loop must run: half the watchdog period, at most every 2 s.
    pub fn tick_interval(&self) -> Duration {
        let base = Duration::from_secs(2);
        self.watchdog
            .map_or(base, |w| (w / 2).min(base).max(Duration::from_millis(100)))
    }

    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Judges the pipeline from the buffer's counters; pings the watchdog only when it works.
    /// Returns why it is stuck, if it is.
    pub fn health_tick(&mut self, stats: &edge_buffer::Stats, status: &str) -> Option<String> {
        let now = Instant::now();
        if stats.acknowledged_offset != self.progress.0
            || stats.acknowledged_offset >= stats.next_offset
        {
            self.progress = (stats.acknowledged_offset, now);
        }
        let stuck = if let Some(f) = &stats.failed {
            Some(format!("buffer failed: {f}"))
        } else if now.duration_since(self.progress.1) > STALL_LIMIT {
            Some(format!(
                "buffer acknowledgements stalled for {} s (fsync hanging?)",
                now.duration_since(self.progress.1).as_secs()
            ))
        } else {
            None
        };
        match &stuck {
            None => send(&[NotifyState::Watchdog, NotifyState::Status(status)]),
            Some(why) => send(&[NotifyState::Status(&format!("STUCK: {why}"))]),
        }
        stuck
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
