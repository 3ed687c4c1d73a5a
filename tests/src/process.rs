//! Running helper programs with a time limit and readable errors.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// Runs `cmd` to completion within `limit` (killing it otherwise) and returns its output. A non-zero
/// exit is an error whose message has the command line, the exit status and the stderr.
pub async fn run(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let line = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("spawn {line}"))?;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(r) => r.with_context(|| format!("wait for {line}"))?,
        // Dropping the future dropped the child, which kills it (kill_on_drop).
        Err(_) => bail!("{line} did not finish within {limit:?}"),
    };
    if !out.status.success() {
        bail!(
            "{line} failed ({}):\nstderr: {}\nstdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            tail(&String::from_utf8_lossy(&out.stdout), 2000),
        );
    }
    Ok(out)
}

/// The command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    let mut s = std.get_program().to_string_lossy().into_owned();
    for a in std.get_args() {
        s.push(' ');
        s.push_str(&shell_word(a));
    }
    s
}

fn shell_word(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// The last `max` bytes (at a char boundary) of `s`.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The last `max` bytes of a log file, or a note why it can't be read.
pub fn log_tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => tail(&String::from_utf8_lossy(&b), max).to_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Sends SIGTERM to a child (no-op if it already exited).
pub fn terminate(child: &Child) {
    if let Some(pid) = child.id()
        && let Ok(pid) = libc::pid_t::try_from(pid)
    {
        // SAFETY: kill(2) with a pid we own (our un-reaped child, so the pid cannot have been reused).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}
