//! The `ironbridge` daemon as a child process: config file, start, `/api/status`, VmHWM, stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ironbridge_e2e::gateway::{first_boot_token, https_client};
use ironbridge_e2e::net::{LOCALHOST, free_port};
use ironbridge_e2e::process::{log_tail, terminate};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

/// Kills `cmd`'s child when the bench process dies, however it dies.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe; it only changes this (forked) process's own
    // parent-death signal before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One daemon run: a config file in `dir`, the state below `dir/state`.
pub struct Daemon {
    child: Option<Child>,
    pub mqtt: SocketAddr,
    pub web: SocketAddr,
    pub pid: u32,
    log: PathBuf,
    /// HTTPS client trusting the daemon's certificate, and an admin API token (first-boot setup
    /// done once the web port serves).
    api: Option<(reqwest::Client, String)>,
    state: PathBuf,
}

/// The parts of `ironbridge.toml` a run varies.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `always` or `interval`.
    pub fsync: &'static str,
    pub max_bytes: u64,
    /// Extra TOML appended verbatim (e.g. a `[kafka]` table).
    pub extra: String,
}

impl Daemon {
    /// Writes `dir/ironbridge.toml`, starts the daemon and waits until `/api/status` answers and
    /// the MQTT port accepts connections. Retries on other ports if one was taken meanwhile.
    pub async fn start(bin: &Path, dir: &Path, cfg: &DaemonConfig) -> Result<Daemon> {
        let mut last = None;
        for _ in 0..3 {
            match Daemon::try_start(bin, dir, cfg).await {
                Ok(d) => return Ok(d),
                Err(e) if format!("{e:#}").contains("cannot listen") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("daemon did not start")))
    }

    async fn try_start(bin: &Path, dir: &Path, cfg: &DaemonConfig) -> Result<Daemon> {
        let mqtt = SocketAddr::from((LOCALHOST, free_port()?));
        let web = SocketAddr::from((LOCALHOST, free_port()?));
        let state = dir.join("state");
        let config = format!(
            "[gateway]\nid = \"bench-gw\"\nstate_dir = \"{}\"\n\n\
             [buffer]\nmax_bytes = {}\nsegment_bytes = \"32 MiB\"\nfsync = \"{}\"\n\n\
             [web]\nlisten = \"{web}\"\nhttp_redirect = false\n\n\
             [log]\nlevel = \"warn\"\n\n\
             [mqtt]\nlisten = \"{mqtt}\"\nallow_anonymous = true\n\n{}\n",
            state.display(),
            cfg.max_bytes,
            cfg.fsync,
            cfg.extra
        );
        let path = dir.join("ironbridge.toml");
        std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
        let log = dir.join("ironbridge.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let pid = child.id().context("daemon pid")?;
        let mut d = Daemon {
            child: Some(child),
            mqtt,
            web,
            pid,
            log,
            api: None,
            state: state.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                bail!(
                    "ironbridge exited during start ({st}); log tail:\n{}",
                    log_tail(&d.log, 3000)
                );
            }
            if d.api.is_none() {
                d.api = d.first_boot().await.ok();
            }
            if d.status().await.is_ok() && TcpStream::connect(mqtt).await.is_ok() {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                bail!(
                    "ironbridge not ready within 30 s; log tail:\n{}",
                    log_tail(&d.log, 3000)
                );
            }
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// The web port serves: trust its certificate, do the first-boot setup, get a token. The
    /// token is kept beside the config, so a restart on the same state (already set up) reuses it.
    async fn first_boot(&self) -> Result<(reqwest::Client, String)> {
        let client = https_client(&self.state.join("tls").join("web.crt"))?;
        let saved = self.state.with_file_name("api-token");
        if let Ok(token) = std::fs::read_to_string(&saved) {
            return Ok((client, token));
        }
        let base = format!("https://{}", self.web);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let token = first_boot_token(&client, &base, &log).await?;
        std::fs::write(&saved, &token).with_context(|| format!("write {}", saved.display()))?;
        Ok((client, token))
    }

    /// `GET path` with the admin token; the body of a 200 answer.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>> {
        let (client, token) = self
            .api
            .as_ref()
            .context("the web port is not set up yet")?;
        let resp = timeout(
            Duration::from_secs(5),
            client
                .get(format!("https://{}{path}", self.web))
                .bearer_auth(token)
                .send(),
        )
        .await
        .with_context(|| format!("{path} timed out"))??;
        if !resp.status().is_success() {
            bail!("GET {path}: {}", resp.status());
        }
        Ok(resp.bytes().await?.to_vec())
    }

    /// `GET /api/status` as JSON.
    pub async fn status(&self) -> Result<Value> {
        let body = self.get("/api/status").await?;
        serde_json::from_slice(&body).context("/api/status is not JSON")
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn vm_hwm(&self) -> Result<u64> {
        proc_status_kb(self.pid, "VmHWM:").map(|kb| kb * 1024)
    }

    /// Current resident set size (VmRSS), in bytes.
    pub fn vm_rss(&self) -> Result<u64> {
        proc_status_kb(self.pid, "VmRSS:").map(|kb| kb * 1024)
    }

    /// The anonymous part of the resident set (heap, stacks): VmRSS less the mapped binary.
    pub fn rss_anon(&self) -> Result<u64> {
        proc_status_kb(self.pid, "RssAnon:").map(|kb| kb * 1024)
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 3000)
    }

    /// SIGKILL, as a crash or power cut would end it, and reap it.
    pub async fn kill9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("daemon not running");
        };
        child.kill().await.context("kill -9 the daemon")
    }

    /// SIGTERM, then SIGKILL after 30 s.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("daemon not running");
        };
        terminate(&child);
        match timeout(Duration::from_secs(30), child.wait()).await {
            Ok(r) => Ok(r?),
            Err(_) => {
                child.kill().await?;
                bail!("ironbridge did not stop within 30 s of SIGTERM; killed")
            }
        }
    }
}

fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} not in /proc/{pid}/status"))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parse {line:?}"))
}

/// A number at a JSON pointer of the status (0 if absent).
pub fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// CPU seconds (user + system) per thread name of process `pid`, summed over threads of the
/// same name.
pub fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let tick = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... utime stime are fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu = rest
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0)
            + rest
                .get(12)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        *out.entry(name).or_insert(0.0) += cpu / tick;
    }
    out
}

/// The difference of two [`thread_cpu`] samples as "name 1.23 s, ...", busiest first.
pub fn cpu_delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(k, a)| (k.clone(), a - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d >= 0.01)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.iter()
        .map(|(k, d)| format!("{k} {d:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}
