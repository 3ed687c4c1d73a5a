//! `ironbridge::malloc::trim`: free memory that glibc cannot give back by itself — freed
//! chunks below a chunk that is still in use — goes back to the kernel. Its own test binary,
//! so its own process: the resident-size check sees no other test's allocations.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod memory_common;

use memory_common::vm_rss_kib;

const CHUNK: usize = 1024;
const CHUNKS: usize = 16 * 1024;
/// One chunk in this many stays allocated, as long-lived objects do between a batch's records.
const KEEP_EVERY: usize = 32;

#[test]
fn trim_returns_free_pages_pinned_below_live_chunks() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        eprintln!("GLIBC_TUNABLES set: skipped");
        return;
    }
    ironbridge::malloc::configure();
    // On a thread of its own, like a runtime worker with its own arena.
    std::thread::spawn(|| {
        let start = vm_rss_kib();
        let mut chunks: Vec<Box<[u8]>> = (0..CHUNKS)
            .map(|i| vec![i as u8; CHUNK].into_boxed_slice())
            .collect();
        let full = vm_rss_kib();
        // Free all but every KEEP_EVERY-th chunk: ~31 KiB free runs between live ones, and a
        // live chunk at the top, so glibc's own top-of-arena trimming cannot release them.
        let mut i = 0;
        chunks.retain(|_| {
            i += 1;
            (i - 1) % KEEP_EVERY == 0
        });
        let freed = vm_rss_kib();
        assert!(
            freed + 2 * 1024 > full,
            "glibc released the pinned memory by itself ({full} -> {freed} KiB): the test no longer shows anything"
        );
        let started = std::time::Instant::now();
        let released = ironbridge::malloc::trim();
        let took = started.elapsed();
        let trimmed = vm_rss_kib();
        std::hint::black_box(&chunks);
        eprintln!(
            "VmRSS KiB: start {start}, allocated {full}, freed {freed}, trimmed {trimmed} (trim took {took:?})"
        );
        let data = (CHUNKS * CHUNK / 1024) as u64;
        assert!(released, "malloc_trim released nothing");
        assert!(
            trimmed + data / 2 < freed,
            "trim returned too little: {freed} -> {trimmed} KiB of {data} KiB freed"
        );
    })
    .join()
    .expect("test thread");
}
