//! `ironbridge::malloc::configure`: a large buffer freed on another thread goes back to the
//! kernel every time, not only the first time (glibc's dynamic mmap threshold otherwise keeps
//! the second and later ones in a per-thread arena). Its own test binary, so its own process:
//! the resident-size check sees no other test's allocations.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod memory_common;

use memory_common::vm_rss_kib;

/// Allocates, touches and frees `bytes` on a fresh thread, like an argon2 check in the
/// blocking pool.
fn churn(bytes: usize) {
    std::thread::spawn(move || {
        let mut v = vec![0u8; bytes];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
    })
    .join()
    .expect("thread");
}

#[test]
fn large_buffers_are_returned_after_free() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        eprintln!("GLIBC_TUNABLES set: skipped");
        return;
    }
    assert!(ironbridge::malloc::configure(), "mallopt failed");
    const SIZE: usize = 19 << 20;
    // The first one raises glibc's dynamic threshold (when not configured) …
    churn(SIZE);
    let before = vm_rss_kib();
    // … so that these would stay resident in the thread arenas.
    for _ in 0..3 {
        churn(SIZE);
    }
    let after = vm_rss_kib();
    assert!(
        after < before + 4 * 1024,
        "resident size grew from {before} KiB to {after} KiB after freeing"
    );
}
