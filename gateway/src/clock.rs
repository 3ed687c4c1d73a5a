//! The small shared helpers of the daemon crate: wall-clock milliseconds and a lock that
//! survives a poisoned mutex. One definition each (they were repeated per module).

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// [`now_ms`] unsigned, as Sparkplug timestamps are.
pub fn now_ms_u64() -> u64 {
    now_ms().max(0) as u64
}

/// Locks `m`, taking the data over from a thread that panicked while holding it: every value
/// kept behind these mutexes (counters, recent lists, caches) stays consistent between
/// statements, so a panic elsewhere must not take the status page or the audit down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
