//! glibc malloc settings for a long-running daemon on a small box.
//!
//! glibc serves a request of at least `M_MMAP_THRESHOLD` (128 KiB at start) with its own
//! `mmap` and unmaps it on free. But by default the threshold is *dynamic*: freeing such a
//! chunk raises the threshold to that chunk's size (up to 32 MiB) and the trim threshold to
//! twice that. After the first argon2 password check (19 MiB, see `mqtt::auth`) every later
//! one, and every uplink batch or catch-up buffer below 19 MiB, came from the heap or a
//! per-thread arena instead, and up to 38 MiB per arena stayed resident after free. Measured
//! (`cargo bench -p ironbridge-e2e --bench gateway -- --quick --only rss`): 56 MB resident
//! after start, of which 20 MB was one freed argon2 buffer; 68 MB holding the backlog; and in
//! a soak RSS rose 73 → 100 MB over two catch-ups, never returning.
//!
//! Setting the threshold explicitly turns the dynamic adjustment off (mallopt(3)), so large
//! buffers keep their own mappings and are returned to the kernel when freed. The cost is an
//! `mmap`/`munmap` pair per large buffer, which the drain benchmark does not show.
//!
//! glibc also gives each thread that allocates its own arena, up to 8 per core: the tokio
//! workers, blocking-pool threads, rumqttd's router, sled's and the buffer's threads. A
//! catch-up (up to `batch_max_records` decoded records and their Kafka copies, ~20 MB with
//! 100 B records) is spread over several arenas, and each keeps what fragmentation pins after
//! it is freed: in a 6-minute soak with two one-minute outages RSS went 29 → 37 → 44 MB and
//! stayed there. With two arenas it went back to 28–29 MB after each catch-up.

/// `M_MMAP_THRESHOLD`: glibc's own starting value, made fixed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// `M_ARENA_MAX`: all threads share two arenas. The busy allocators are the tokio workers
/// (one per core); on a four-core box two of them may wait briefly for an arena's lock, which
/// the ingest and drain benchmarks do not show on two cores.
pub const ARENA_MAX: usize = 2;

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
    // and is safe to call at any time. The values are small positive constants.
    unsafe {
        let threshold = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        let arenas = libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX as libc::c_int);
        threshold == 1 && arenas == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
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
