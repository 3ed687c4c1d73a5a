//! glibc malloc settings for a long-running daemon on a small box.
//!
//! glibc serves a request of at least `M_MMAP_THRESHOLD` (128 KiB at start) with its own
//! `mmap` and unmaps it on free. But by default the threshold is *dynamic*: freeing such a
//! chunk raises the threshold to that chunk's size (up to 32 MiB) and the trim threshold to
//! twice that. After the first argon2 password check (19 MiB, see `ironbridge_broker::auth`) every later
//! one, and every uplink batch or catch-up buffer below 19 MiB, came from the heap or a
//! per-thread arena instead, and up to 38 MiB per arena stayed resident after free. Measured
//! (`cargo bench -p ironbridge-e2e --bench gateway -- --quick --only rss`): 56 MB resident
//! after start, of which 20 MB was one freed argon2 buffer; 68 MB holding the backlog; and in
//! a soak RSS rose 73 → 100 MB over two catch-ups, never returning.
//!
//! Setting the threshold explicitly turns the dynamic adjustment off (mallopt(3)), so large
//! buffers keep their own mappings and are returned to the kernel when freed. The cost is an
//! `mmap`/`munmap` pair per large buffer; ingest and drain benchmarks showed no difference
//! beyond their run-to-run noise.
//!
//! Small allocations are the other half. An uplink catch-up builds and frees many small
//! records per batch across the runtime's threads; glibc shrinks an arena only from its top,
//! and one long-lived allocation above the freed space pins it. So each catch-up left a few
//! MB resident for good (a 30-min soak: 20.8 MB before the first outage, 37.4 MB after the
//! sixth). [`trim`] — `malloc_trim(0)`, which also releases whole free pages *inside* the
//! arenas — runs once a minute from the daemon's housekeeping task; with it a 6-min soak's
//! anonymous memory went 3.1 MB → 9.1 MB during a catch-up → 3.4 MB within the minute.

/// `M_MMAP_THRESHOLD`: glibc's own starting value, made fixed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Whether to apply our settings: not when the operator tunes malloc through
/// `GLIBC_TUNABLES` (e.g. `glibc.malloc.mmap_threshold=…` in the unit's environment).
pub fn wanted(glibc_tunables: Option<&std::ffi::OsStr>) -> bool {
    !glibc_tunables.is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."))
}

/// Applies the settings. Call first thing in `main`, before other threads start.
/// Returns whether they were applied (false off glibc, or when the operator set his own).
pub fn configure() -> bool {
    if !wanted(std::env::var_os("GLIBC_TUNABLES").as_deref()) {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt(3) only changes malloc's tuning parameters; it takes malloc's own lock
    // and is safe to call at any time. The value is a small positive constant.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

/// Gives the free pages inside malloc's arenas back to the kernel (`malloc_trim(0)`).
/// Returns whether any memory was released. It locks each arena in turn while it walks
/// that arena's free lists, so call it now and then, not on a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim(3) takes each arena's lock and only releases free memory.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Gives free memory back to the kernel; nothing to do off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn operator_tunables_take_precedence() {
        assert!(wanted(None));
        assert!(wanted(Some(OsStr::new("glibc.pthread.rseq=0"))));
        assert!(!wanted(Some(OsStr::new(
            "glibc.malloc.mmap_threshold=262144"
        ))));
        assert!(!wanted(Some(OsStr::new(
            "glibc.pthread.rseq=0:glibc.malloc.arena_max=2"
        ))));
    }
}
