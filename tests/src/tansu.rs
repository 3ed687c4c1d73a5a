//! The `tansu` Kafka-protocol broker as a child process on 127.0.0.1.
//!
//! Start with [`Tansu::start`]; it returns once the broker answers a Kafka `ApiVersions` request (so it
//! is a Kafka broker and it is ours). The child is killed when the [`Tansu`] is dropped. Its output goes
//! to a log file whose tail is put into error messages. See `tests/TANSU.md` for what tansu supports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::external::External;
use crate::net::{LOCALHOST, free_port};
use crate::process::{log_tail, terminate};

/// How long a start may take before it is an error.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where tansu keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `memory://tansu/`: lost when the process stops.
    Memory,
    /// `sqlite://FILE`: survives restarts. The file (created if missing) lives in this path.
    Sqlite(PathBuf),
}

impl Storage {
    /// SQLite storage in `dir/tansu.db`.
    pub fn sqlite_in(dir: &Path) -> Storage {
        Storage::Sqlite(dir.join("tansu.db"))
    }
}

/// A running tansu broker.
pub struct Tansu {
    child: Option<Child>,
    addr: SocketAddr,
    /// What metadata tells clients to connect to (default: `addr`).
    advertised: SocketAddr,
    storage: Storage,
    log: PathBuf,
    // Holds the log (and working directory for the memory engine) until drop.
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts tansu on a free 127.0.0.1 port (retrying on another port if the chosen one was taken).
    pub async fn start(storage: Storage) -> Result<Tansu> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match Tansu::start_on(port, storage.clone()).await {
                Ok(t) => return Ok(t),
                Err(e) => {
                    // Only a lost race for the port is worth another try.
                    if !format!("{e:#}").contains("Address already in use") {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("tansu did not start")))
    }

    /// Starts tansu on 127.0.0.1:`port`.
    pub async fn start_on(port: u16, storage: Storage) -> Result<Tansu> {
        Tansu::start_advertising(port, storage, SocketAddr::from((LOCALHOST, port))).await
    }

    /// Starts tansu on 127.0.0.1:`port`, telling clients (in metadata) to connect to
    /// `advertised` — e.g. a [`crate::FaultProxy`] in front of it, so that every connection a
    /// client makes after bootstrapping goes through the proxy.
    pub async fn start_advertising(
        port: u16,
        storage: Storage,
        advertised: SocketAddr,
    ) -> Result<Tansu> {
        let dir = tempfile::Builder::new()
            .prefix("ironbridge-tansu-")
            .tempdir()
            .context("create tansu temp dir")?;
        let mut t = Tansu {
            child: None,
            addr: SocketAddr::from((LOCALHOST, port)),
            advertised,
            storage,
            log: dir.path().join("tansu.log"),
            _dir: dir,
        };
        t.spawn().await?;
        Ok(t)
    }

    async fn spawn(&mut self) -> Result<()> {
        let bin = External::Tansu.path();
        let url = format!("tcp://{}", self.addr);
        let (cwd, engine) = match &self.storage {
            Storage::Memory => (self.log_dir(), "memory://tansu/".to_owned()),
            Storage::Sqlite(file) => {
                // tansu resolves the sqlite URL relative to its working directory.
                let dir = file
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("sqlite file name {} is not UTF-8", file.display()))?;
                (dir, format!("sqlite://{name}"))
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", self.advertised))
            .arg("--storage-engine")
            .arg(&engine)
            .current_dir(&cwd)
            // Flags win over these, but keep the environment from adding a schema registry or exporter.
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        self.child = Some(child);
        self.wait_ready().await?;
        if let Storage::Sqlite(file) = &self.storage {
            index_headers(file).await?;
        }
        Ok(())
    }

    fn log_dir(&self) -> PathBuf {
        self.log
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut backoff = Duration::from_millis(10);
        loop {
            let child = self.child.as_mut().context("tansu not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "tansu exited during start ({status}) on {}; log tail:\n{}",
                    self.addr,
                    log_tail(&self.log, 4000)
                );
            }
            let probe = api_versions(self.addr).await;
            if probe.is_ok() {
                // Make sure the answer came from our child, not from whatever else holds the port.
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "tansu exited during start ({status}) on {}; log tail:\n{}",
                        self.addr,
                        log_tail(&self.log, 4000)
                    );
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let err = probe.err().map(|e| format!("{e:#}")).unwrap_or_default();
                bail!(
                    "tansu on {} not ready within {START_TIMEOUT:?} ({err}); log tail:\n{}",
                    self.addr,
                    log_tail(&self.log, 4000)
                );
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bootstrap string for clients, `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The storage it was started with.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The broker's log so far (stdout and stderr, all starts).
    pub fn log(&self) -> String {
        log_tail(&self.log, usize::MAX)
    }

    /// True while the child process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the broker: SIGTERM, then SIGKILL if it has not exited after 10 s.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        terminate(&child);
        match timeout(Duration::from_secs(10), child.wait()).await {
            Ok(r) => {
                r.context("wait for tansu")?;
            }
            Err(_) => {
                child.kill().await.context("kill tansu")?;
            }
        }
        Ok(())
    }

    /// Kills the broker with SIGKILL (a crash).
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill tansu")?;
        }
        Ok(())
    }

    /// Starts it again (after [`Tansu::stop`] or [`Tansu::kill`]) on the same port and storage.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn().await
    }
}

/// Adds the index tansu 0.6.0's sqlite schema lacks: `header (topition, offset_id)`.
///
/// Without it every record a Fetch returns costs a full scan of the `header` table
/// (`header_fetch.sql`, query plan `SCAN h`): reading a topic back takes time proportional to
/// records x all headers ever stored. The gateway writes 7-8 headers per record, so after ~100k
/// records a consumer gets a few records per second and never reaches the end of the partitions
/// (seen in the outage campaign: 0.1-0.4 s per record with 830k headers). The index changes no
/// result, only the query plan. Idempotent; run once the broker has created its schema.
pub async fn index_headers(db: &Path) -> Result<()> {
    const PY: &str = "import sqlite3, sys\n\
c = sqlite3.connect(sys.argv[1], timeout=30)\n\
c.execute('create index if not exists ironbridge_e2e_header_record on header (topition, offset_id)')\n\
c.commit()\n";
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY).arg(db);
    crate::process::run(&mut cmd, Duration::from_secs(60))
        .await
        .with_context(|| format!("index the header table of {}", db.display()))?;
    Ok(())
}

/// Sends a Kafka `ApiVersions` v0 request to `addr` and checks the answer (correlation id, error code 0).
pub async fn api_versions(addr: SocketAddr) -> Result<()> {
    const CORRELATION: i32 = 0x1b_0b_1d_9e;
    let client_id = b"ironbridge-e2e";
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    req.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    req.extend_from_slice(&CORRELATION.to_be_bytes());
    req.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    req.extend_from_slice(client_id);
    let mut framed = (req.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);

    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&framed).await?;
        let len = s.read_i32().await?;
        if !(6..=1 << 20).contains(&len) {
            bail!("ApiVersions response has implausible length {len}");
        }
        let correlation = s.read_i32().await?;
        let error = s.read_i16().await?;
        if correlation != CORRELATION {
            bail!("ApiVersions response has correlation id {correlation}, sent {CORRELATION}");
        }
        if error != 0 {
            bail!("ApiVersions error code {error}");
        }
        Ok(())
    };
    timeout(Duration::from_secs(2), exchange)
        .await
        .context("ApiVersions timed out")?
}
