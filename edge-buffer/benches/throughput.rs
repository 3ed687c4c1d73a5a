//! edge-buffer throughput, recovery and memory, side by side with a raw-file baseline on the
//! same file system in the same run. Prints a Markdown table.
//!
//! `cargo bench -p edge-buffer --bench throughput [-- --quick] [-- --dir PATH]`
//!
//! The baseline writes the same bytes the log writes (frames included) with plain `write` calls
//! of the same size and the same `fdatasync` cadence, so the ratio is the log's own overhead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_buffer::{FsyncPolicy, Log, Options, Record};

const FRAME_OVERHEAD: usize = 24;

struct Args {
    quick: bool,
    dir: PathBuf,
    child: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        dir: std::env::temp_dir(),
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--quick" => a.quick = true,
            "--dir" => a.dir = it.next().map(PathBuf::from).unwrap_or(a.dir),
            "--child" => a.child = it.next(),
            _ => {}
        }
    }
    a
}

fn opts(fsync: FsyncPolicy) -> Options {
    Options {
        max_bytes: 4 << 30,
        segment_bytes: 64 << 20,
        fsync,
        ..Options::default()
    }
}

/// Appends `total` records of `size` bytes in batches of `batch` from `writers` threads.
fn append_run(
    dir: &Path,
    fsync: FsyncPolicy,
    size: usize,
    total: u64,
    batch: usize,
    writers: usize,
) -> Duration {
    let log = Arc::new(Log::open(dir, opts(fsync)).expect("open"));
    let per_writer = total / writers as u64;
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                let payload = vec![0xA5u8; size];
                let records: Vec<Record> = (0..batch).map(|_| Record::new(0, &payload)).collect();
                let mut done = 0u64;
                while done < per_writer {
                    let n = batch.min((per_writer - done) as usize);
                    log.append(&records[..n])
                        .expect("append")
                        .wait()
                        .expect("ack");
                    done += n as u64;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    log.sync().expect("sync");
    let took = start.elapsed();
    drop(log);
    took
}

/// Writes the same bytes with plain `write` calls of `chunk` bytes and one final fdatasync.
fn raw_write(path: &Path, bytes: u64, chunk: usize) -> Duration {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("raw");
    let buf = vec![0xA5u8; chunk];
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        let n = chunk.min((bytes - written) as usize);
        f.write_all(&buf[..n]).expect("raw write");
        written += n as u64;
    }
    f.sync_data().expect("raw sync");
    start.elapsed()
}

/// write + fdatasync per batch, as a logger without group commit would do.
fn raw_write_sync_each(path: &Path, bytes: u64, chunk: usize) -> Duration {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("raw");
    let buf = vec![0xA5u8; chunk];
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        let n = chunk.min((bytes - written) as usize);
        f.write_all(&buf[..n]).expect("raw write");
        f.sync_data().expect("raw sync");
        written += n as u64;
    }
    start.elapsed()
}

fn read_run(dir: &Path) -> (Duration, u64) {
    let log = Log::open(dir, opts(FsyncPolicy::Never)).expect("open");
    let mut r = log.reader(0).expect("reader");
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        let b = r.read_batch(10_000, 4 << 20).expect("read");
        if b.is_empty() {
            break;
        }
        n += b.len() as u64;
    }
    (start.elapsed(), n)
}

fn raw_read(path: &Path) -> Duration {
    let mut f = File::open(path).expect("raw");
    let mut buf = vec![0u8; 256 << 10];
    let start = Instant::now();
    while f.read(&mut buf).expect("raw read") > 0 {}
    start.elapsed()
}

fn drop_caches() -> bool {
    // Root only; cold-cache numbers are reported only when this works.
    std::process::Command::new("sync").status().is_ok()
        && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Child process: fills `bytes` of backlog with 1 KiB records, reads it all back, prints VmHWM.
fn rss_child(dir: &Path, bytes: u64) {
    let base = vm_hwm_kib();
    let n = bytes / (1024 + FRAME_OVERHEAD) as u64;
    append_run(
        dir,
        FsyncPolicy::Interval(Duration::from_millis(10)),
        1024,
        n,
        256,
        1,
    );
    let (_, read) = read_run(dir);
    assert_eq!(read, n);
    println!("{} {}", base, vm_hwm_kib());
}

fn rate(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64()
}

fn main() {
    let a = args();
    if let Some(spec) = a.child {
        let (dir, bytes) = spec.split_once(':').expect("child spec");
        rss_child(Path::new(dir), bytes.parse().expect("bytes"));
        return;
    }
    let scale: u64 = if a.quick { 1 } else { 8 };
    let work = tempfile::tempdir_in(&a.dir).expect("bench dir");
    let mut rows: Vec<String> = Vec::new();
    let mut row = |name: &str, ours: String, base: String, ratio: f64| {
        rows.push(format!("| {name} | {ours} | {base} | {ratio:.2}x |"));
    };

    for (size, total, label) in [
        (100usize, 2_000_000 * scale, "100 B"),
        (1024, 250_000 * scale, "1 KiB"),
    ] {
        let bytes = total * (size + FRAME_OVERHEAD) as u64;
        let batch = 1000;
        let chunk = batch * (size + FRAME_OVERHEAD);

        let d = work.path().join(format!("interval-{size}"));
        let ours = append_run(
            &d,
            FsyncPolicy::Interval(Duration::from_millis(10)),
            size,
            total,
            batch,
            1,
        );
        let raw = raw_write(&work.path().join("raw"), bytes, chunk);
        row(
            &format!("append {label}, interval(10ms), 1 writer, batches of {batch}"),
            format!(
                "{:.0} rec/s, {:.0} MB/s",
                rate(total as f64, ours),
                rate(bytes as f64, ours) / 1e6
            ),
            format!(
                "{:.0} MB/s raw write + one fdatasync",
                rate(bytes as f64, raw) / 1e6
            ),
            raw.as_secs_f64() / ours.as_secs_f64(),
        );
        let _ = std::fs::remove_dir_all(&d);

        // Group commit: 8 writers of small batches; the baseline syncs every batch.
        let gc_total = total / 10;
        let gc_batch = 100;
        let gc_bytes = gc_total * (size + FRAME_OVERHEAD) as u64;
        let d = work.path().join(format!("always-{size}"));
        let ours = append_run(&d, FsyncPolicy::Always, size, gc_total, gc_batch, 8);
        let raw = raw_write_sync_each(
            &work.path().join("raw"),
            gc_bytes,
            gc_batch * (size + FRAME_OVERHEAD),
        );
        row(
            &format!("append {label}, always (group commit), 8 writers, batches of {gc_batch}"),
            format!(
                "{:.0} rec/s, {:.0} MB/s",
                rate(gc_total as f64, ours),
                rate(gc_bytes as f64, ours) / 1e6
            ),
            format!(
                "{:.0} MB/s raw write+fdatasync per batch",
                rate(gc_bytes as f64, raw) / 1e6
            ),
            raw.as_secs_f64() / ours.as_secs_f64(),
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    // A 1 GiB (quick: 128 MiB) backlog for read, recovery and memory.
    let backlog: u64 = if a.quick { 128 << 20 } else { 1 << 30 };
    let n = backlog / (1024 + FRAME_OVERHEAD) as u64;
    let d = work.path().join("backlog");
    append_run(
        &d,
        FsyncPolicy::Interval(Duration::from_millis(10)),
        1024,
        n,
        1000,
        1,
    );
    let raw_path = work.path().join("raw");
    raw_write(&raw_path, n * (1024 + FRAME_OVERHEAD) as u64, 1 << 20);
    let gib = backlog as f64 / (1u64 << 30) as f64;

    let (ours, read) = read_run(&d);
    assert_eq!(read, n);
    let raw = raw_read(&raw_path);
    row(
        &format!("sequential read, 1 KiB records, {gib:.2} GiB, warm cache"),
        format!(
            "{:.0} rec/s, {:.0} MB/s",
            rate(n as f64, ours),
            rate(backlog as f64, ours) / 1e6
        ),
        format!("{:.0} MB/s raw read", rate(backlog as f64, raw) / 1e6),
        raw.as_secs_f64() / ours.as_secs_f64(),
    );
    if drop_caches() {
        let (ours, _) = read_run(&d);
        drop_caches();
        let raw = raw_read(&raw_path);
        row(
            &format!("sequential read, 1 KiB records, {gib:.2} GiB, cold cache"),
            format!("{:.0} MB/s", rate(backlog as f64, ours) / 1e6),
            format!("{:.0} MB/s raw read", rate(backlog as f64, raw) / 1e6),
            raw.as_secs_f64() / ours.as_secs_f64(),
        );
    }

    for cold in [false, true] {
        if cold && !drop_caches() {
            continue;
        }
        let t = Instant::now();
        let log = Log::open(&d, opts(FsyncPolicy::Always)).expect("open");
        let took = t.elapsed();
        assert_eq!(log.stats().next_offset, n);
        drop(log);
        row(
            &format!(
                "open/recovery of a {gib:.2} GiB log ({})",
                if cold { "cold cache" } else { "warm cache" }
            ),
            format!("{:.1} ms", took.as_secs_f64() * 1e3),
            "-".into(),
            f64::NAN,
        );
    }
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_file(&raw_path);

    let exe = std::env::current_exe().expect("exe");
    let d = work.path().join("rss");
    let out = std::process::Command::new(exe)
        .args(["--child", &format!("{}:{}", d.display(), backlog)])
        .output()
        .expect("rss child");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if let [base, peak] = v[..] {
        row(
            &format!("peak RSS appending + reading a {gib:.2} GiB backlog"),
            format!(
                "{:.1} MB (process), {:.1} MB above start",
                peak as f64 / 1024.0,
                (peak - base) as f64 / 1024.0
            ),
            "-".into(),
            f64::NAN,
        );
    }

    println!("| measurement | edge-buffer | baseline | ratio (ours/baseline speed) |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!("{}", r.replace("NaNx", "-"));
    }
}
