//! The real `ironbridge` daemon as a child process, and what the gateway end-to-end tests need
//! around it: a tansu broker behind a [`FaultProxy`], a streaming paho publisher that reports every
//! PUBACK, `mosquitto_pub -l`, the web port over HTTPS (`/healthz`, `/metrics`, `/api/status` and
//! the rest of the JSON API), and checks of what reached Kafka (duplicates, order per key).
//!
//! # Which binary
//!
//! [`ironbridge_bin`]: `$IRONBRIDGE_BIN` if set (used as is, nothing is built). Otherwise the binary
//! of the same cargo profile and target directory as the running test: a test executable lives in
//! `<target>/<profile dir>/deps/`, so the daemon is `<target>/<profile dir>/ironbridge`. If that
//! file is newer than every source it is built from (`gateway/`, `edge-buffer/`, `Cargo.toml`,
//! `Cargo.lock`) it is used as is: that is the case under `cargo nextest run --workspace`
//! (tests/run.sh) and `cargo test --workspace`, which build it before running any test. Otherwise
//! (e.g. `cargo test -p ironbridge-e2e` after a change in `gateway/`: that command does not build
//! other packages' binaries) the harness runs `cargo build -p ironbridge --bin ironbridge --profile
//! <profile>` (with `CARGO_TARGET_DIR=<target>`) once per test process, so a test never runs a
//! stale daemon. Tests call [`prepare`] before their deadline starts.
//!
//! # The daemon
//!
//! [`Gateway::start`] writes `ironbridge.toml` (from [`GatewayOptions`]) into a temporary directory
//! that also holds `state/` and the daemon's log, picks free loopback ports for MQTT and the web port,
//! runs `ironbridge --config FILE` and waits (polling, with a deadline) until `/healthz` answers and
//! the MQTT port accepts connections. The child is killed on drop. [`Gateway::kill`] is `kill -9`,
//! [`Gateway::stop`] is SIGTERM, [`Gateway::restart`] starts it again on the same ports, config
//! file and state directory.
//!
//! # The web port
//!
//! HTTPS only, with the certificate the daemon generates on its first start in
//! `<state>/tls/web.crt`: the harness's HTTP client ([`Gateway::client`], reqwest with rustls)
//! trusts exactly that certificate. Everything but `/healthz` needs authentication, so after the
//! first start the harness does the first-boot setup through the API (with the setup code it
//! reads from the daemon's log), creates an admin API token and sends it as
//! `Authorization: Bearer` from then on ([`Gateway::api`]); the token survives restarts (it is in
//! the state directory). [`GatewayOptions::auto_setup`] turns that off for tests of setup itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use crate::external::{External, py_dir};
use crate::kafka::Record;
use crate::mqtt::MqttVersion;
use crate::net::{LOCALHOST, free_port};
use crate::process::{describe, log_tail, tail, terminate};
use crate::proxy::FaultProxy;
use crate::tansu::api_versions;

/// Set to a path to use that `ironbridge` binary instead of building the workspace's.
pub const BIN_ENV: &str = "IRONBRIDGE_BIN";

/// How long a daemon start may take before it is an error.
pub const GATEWAY_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `fut`, failing if it takes longer than `limit`: every gateway test has a deadline.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => bail!("{what}: did not finish within {limit:?}"),
    }
}

/// Prints how far a test got, with the seconds since it started (visible with `--nocapture` and in
/// nextest's output of a failed or slow test).
pub struct Progress {
    name: &'static str,
    start: Instant,
}

impl Progress {
    pub fn new(name: &'static str) -> Progress {
        Progress {
            name,
            start: Instant::now(),
        }
    }

    pub fn note(&self, what: impl std::fmt::Display) {
        eprintln!(
            "[{} +{:.1}s] {what}",
            self.name,
            self.start.elapsed().as_secs_f64()
        );
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The `ironbridge` binary to test (see the module docs); built at most once per test process.
pub fn ironbridge_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_bin().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn locate_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        ensure!(p.is_file(), "{BIN_ENV}={} is not a file", p.display());
        return Ok(p);
    }
    let exe = std::env::current_exe().context("path of the test executable")?;
    // <target>/<profile dir>/deps/<test executable>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not in <target>/<profile>/deps", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .with_context(|| format!("{} has no parent", profile_dir.display()))?;
    let dir_name = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("profile directory name")?;
    // Cargo puts the `dev` and `test` profiles in `debug/`; every other profile in its own name.
    let profile = match dir_name {
        "debug" => "dev",
        other => other,
    };
    let bin = profile_dir.join("ironbridge");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let (Some(built), Some(source)) = (mtime(&bin), newest_source(&workspace))
        && built >= source
    {
        return Ok(bin);
    }
    let manifest = workspace.join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(&cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "ironbridge",
        "--bin",
        "ironbridge",
    ])
    .arg("--profile")
    .arg(profile)
    .arg("--manifest-path")
    .arg(&manifest)
    .env("CARGO_TARGET_DIR", target_dir)
    .stdin(Stdio::null());
    let started = std::time::Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("run {cmd:?} to build the daemon"))?;
    eprintln!(
        "harness: `cargo build -p ironbridge --profile {profile}` took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !out.status.success() {
        bail!(
            "building the daemon failed ({}): {cmd:?}\n{}\n(set {BIN_ENV} to test a prebuilt binary)",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 4000)
        );
    }
    ensure!(
        bin.is_file(),
        "cargo built the daemon but {} does not exist",
        bin.display()
    );
    Ok(bin)
}

/// Finds (and if needed builds) the daemon before a test's clock starts: call it outside
/// [`within`], since a build after a change in `gateway/` takes minutes on 2 cores.
pub async fn prepare() -> Result<PathBuf> {
    tokio::task::spawn_blocking(ironbridge_bin).await?
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of what the daemon is built from: the workspace manifest and lock
/// file, and everything in `gateway/` and `edge-buffer/` (its only workspace dependency).
fn newest_source(workspace: &Path) -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') || name == "target" || name == "fuzz" {
                continue;
            }
            let path = e.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Some(t) = mtime(&path) {
                *newest = (*newest).max(Some(t));
            }
        }
    }
    let mut newest = None;
    for f in ["Cargo.toml", "Cargo.lock"] {
        newest = newest.max(mtime(&workspace.join(f)));
    }
    for d in ["gateway", "edge-buffer"] {
        walk(&workspace.join(d), &mut newest);
    }
    newest
}

/// Runs the daemon binary with `args` (and `stdin`), without a running daemon: `check-config`,
/// `hash-password`, or a start that is expected to fail. Returns the output whatever the exit status.
pub async fn run_ironbridge(args: &[&str], stdin: &[u8], limit: Duration) -> Result<Output> {
    let bin = tokio::task::spawn_blocking(ironbridge_bin).await??;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let line = describe(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("spawn {line}"))?;
    if let Some(mut w) = child.stdin.take() {
        w.write_all(stdin).await?;
        drop(w);
    }
    match timeout(limit, child.wait_with_output()).await {
        Ok(r) => r.with_context(|| format!("wait for {line}")),
        Err(_) => bail!("{line} did not finish within {limit:?}"),
    }
}

/// `ironbridge hash-password` for `password`: an argon2id PHC string for `[mqtt.users]`.
pub async fn hash_password(password: &str) -> Result<String> {
    let out = run_ironbridge(
        &["hash-password"],
        format!("{password}\n").as_bytes(),
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        out.status.success(),
        "hash-password failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(
        hash.starts_with("$argon2id$"),
        "not an argon2id hash: {hash}"
    );
    Ok(hash)
}

/// A TOML basic string (JSON's escapes are valid TOML).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// One `[[kafka.routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    pub filter: String,
    pub topic: String,
    /// Key template; `None` leaves the daemon's default (`{topic}`).
    pub key: Option<String>,
    /// `value` format (`raw`, `json`, `sparkplug_json`, `sparkplug_metrics`); `None`: default.
    pub value: Option<String>,
}

impl Route {
    pub fn new(filter: &str, topic: &str) -> Route {
        Route {
            filter: filter.into(),
            topic: topic.into(),
            key: None,
            value: None,
        }
    }

    pub fn value(mut self, format: &str) -> Route {
        self.value = Some(format.into());
        self
    }

    pub fn key(mut self, template: &str) -> Route {
        self.key = Some(template.into());
        self
    }
}

/// What goes into the daemon's `ironbridge.toml`. Ports and the state directory are the harness's.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// `gateway.id`, the `gateway_id` header.
    pub id: String,
    pub allow_anonymous: bool,
    /// `[mqtt.users]`: name → argon2id hash.
    pub users: Vec<(String, String)>,
    /// `kafka.bootstrap_servers` (one address); `None`: no uplink, the gateway only buffers.
    pub kafka: Option<String>,
    pub routes: Vec<Route>,
    /// More `[kafka]` fields: name → TOML value (as written in the file). The defaults make the
    /// uplink react quickly: short request timeout and backoff.
    pub kafka_settings: BTreeMap<String, String>,
    /// Raw TOML appended at the end (e.g. a `[kafka.tls]` table).
    pub extra_toml: String,
    /// `log.level`.
    pub log_level: String,
    /// `log.format`: `"text"` (default) or `"json"`.
    pub log_format: String,
    /// Start the plain-HTTP redirect listener on a free port too ([`Gateway::http_addr`]).
    pub http_redirect: bool,
    /// More `[web]` fields: name → TOML value (e.g. `session_idle_timeout_s`).
    pub web_settings: BTreeMap<String, String>,
    /// `[buffer]` fields: name → TOML value. Default: `max_bytes = "256 MiB"`,
    /// `segment_bytes = "8 MiB"`; e.g. `dir`, `full_policy`.
    pub buffer_settings: BTreeMap<String, String>,
    /// Do the first-boot setup and create an admin API token after the first start (default).
    pub auto_setup: bool,
    /// More `[mqtt]` fields: name → TOML value (e.g. `max_connections`, `"64"`).
    pub mqtt_settings: BTreeMap<String, String>,
    /// A topic rule granting every account everything, the topics closed by default included
    /// (Sparkplug NCMD/DCMD and STATE, `$`-topics), so tests that act as a SCADA host can
    /// publish commands (default). Off: the broker's safe defaults apply.
    pub grant_all_topics: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        let kafka_settings = [
            ("request_timeout_ms", "5000"),
            ("retry_backoff_initial_ms", "100"),
            ("retry_backoff_max_ms", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        GatewayOptions {
            id: "e2e-gateway".into(),
            allow_anonymous: true,
            users: Vec::new(),
            kafka: None,
            routes: Vec::new(),
            kafka_settings,
            extra_toml: String::new(),
            log_level: "info".into(),
            log_format: "text".into(),
            http_redirect: false,
            web_settings: BTreeMap::new(),
            buffer_settings: [("max_bytes", "\"256 MiB\""), ("segment_bytes", "\"8 MiB\"")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            auto_setup: true,
            mqtt_settings: BTreeMap::new(),
            grant_all_topics: true,
        }
    }
}

impl GatewayOptions {
    /// Sets (or replaces) one `[mqtt]` field; `value` is TOML (`"64"`, `"true"`).
    pub fn mqtt_setting(mut self, name: &str, value: &str) -> Self {
        self.mqtt_settings.insert(name.into(), value.into());
        self
    }

    /// Sets (or replaces) one `[kafka]` field; `value` is TOML (`"3000"`, `"\"zstd\""`).
    pub fn kafka_setting(mut self, name: &str, value: &str) -> Self {
        self.kafka_settings.insert(name.into(), value.into());
        self
    }

    /// Sets (or replaces) one `[buffer]` field; `value` is TOML (`"\"4 MiB\""`).
    pub fn buffer_setting(mut self, name: &str, value: &str) -> Self {
        self.buffer_settings.insert(name.into(), value.into());
        self
    }
}

/// The admin account the harness creates on first start.
pub const ADMIN_USER: &str = "e2e-admin";
pub const ADMIN_PASSWORD: &str = "e2e correct horse battery";

/// The `ironbridge` daemon as a child process; killed on drop.
pub struct Gateway {
    child: Option<Child>,
    opts: GatewayOptions,
    web: SocketAddr,
    http: SocketAddr,
    client: Option<reqwest::Client>,
    token: Option<String>,
    mqtt: SocketAddr,
    starts: u32,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes the config, starts the daemon on free loopback ports and waits until it serves.
    pub async fn start(opts: GatewayOptions) -> Result<Gateway> {
        let bin = tokio::task::spawn_blocking(ironbridge_bin).await??;
        let dir = tempfile::Builder::new()
            .prefix("ironbridge-gw-")
            .tempdir()
            .context("gateway temp dir")?;
        let mut gw = Gateway {
            child: None,
            opts,
            web: SocketAddr::from((LOCALHOST, 0)),
            http: SocketAddr::from((LOCALHOST, 0)),
            client: None,
            token: None,
            mqtt: SocketAddr::from((LOCALHOST, 0)),
            starts: 0,
            bin,
            dir,
        };
        let mut last = None;
        for _ in 0..3 {
            let web = free_port()?;
            let mut mqtt = free_port()?;
            while mqtt == web {
                mqtt = free_port()?;
            }
            let mut http = free_port()?;
            while http == web || http == mqtt {
                http = free_port()?;
            }
            gw.web = SocketAddr::from((LOCALHOST, web));
            gw.mqtt = SocketAddr::from((LOCALHOST, mqtt));
            gw.http = SocketAddr::from((LOCALHOST, http));
            match gw.spawn().await {
                Ok(()) => return Ok(gw),
                Err(e) => {
                    // Only a lost race for a port is worth another try.
                    let msg = format!("{e:#}");
                    if !msg.contains("Address already in use") && !msg.contains("cannot listen") {
                        return Err(e);
                    }
                    gw.kill().await?;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("the gateway did not start")))
    }

    /// The configuration file as the harness writes it.
    pub fn render_config(&self) -> String {
        let o = &self.opts;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "[gateway]\nid = {}\nstate_dir = {}\nshutdown_timeout_ms = 10000\n",
            toml_str(&o.id),
            toml_str(&self.state_dir().to_string_lossy())
        );
        t.push_str("[buffer]\n");
        for (k, v) in &o.buffer_settings {
            let _ = writeln!(t, "{k} = {v}");
        }
        t.push('\n');
        let _ = writeln!(
            t,
            "[web]\nlisten = \"{}\"\nhttp_listen = \"{}\"\nhttp_redirect = {}",
            self.web, self.http, o.http_redirect
        );
        for (k, v) in &o.web_settings {
            let _ = writeln!(t, "{k} = {v}");
        }
        t.push('\n');
        let _ = writeln!(
            t,
            "[log]\nlevel = {}\nformat = {}\n",
            toml_str(&o.log_level),
            toml_str(&o.log_format)
        );
        let _ = writeln!(
            t,
            "[mqtt]\nlisten = \"{}\"\nallow_anonymous = {}",
            self.mqtt, o.allow_anonymous
        );
        for (k, v) in &o.mqtt_settings {
            let _ = writeln!(t, "{k} = {v}");
        }
        t.push('\n');
        if !o.users.is_empty() {
            t.push_str("[mqtt.users]\n");
            for (name, hash) in &o.users {
                let _ = writeln!(t, "{} = {}", toml_str(name), toml_str(hash));
            }
            t.push('\n');
        }
        if o.grant_all_topics {
            t.push_str(concat!(
                "[[mqtt.acl]]\nusers = [\"*\", \"$anonymous\"]\naction = \"all\"\n",
                "permission = \"allow\"\n",
                "topics = [\"#\", \"spBv1.0/+/NCMD/#\", \"spBv1.0/+/DCMD/#\", ",
                "\"spBv1.0/STATE/#\", \"$SYS/#\"]\n\n",
            ));
        }
        if o.kafka.is_some() || !o.routes.is_empty() {
            t.push_str("[kafka]\n");
            if let Some(b) = &o.kafka {
                let _ = writeln!(t, "bootstrap_servers = [{}]", toml_str(b));
            }
            for (k, v) in &o.kafka_settings {
                let _ = writeln!(t, "{k} = {v}");
            }
            t.push('\n');
            for r in &o.routes {
                let _ = writeln!(
                    t,
                    "[[kafka.routes]]\nfilter = {}\ntopic = {}",
                    toml_str(&r.filter),
                    toml_str(&r.topic)
                );
                if let Some(k) = &r.key {
                    let _ = writeln!(t, "key = {}", toml_str(k));
                }
                if let Some(v) = &r.value {
                    let _ = writeln!(t, "value = {}", toml_str(v));
                }
                t.push('\n');
            }
        }
        t.push_str(&o.extra_toml);
        t
    }

    async fn spawn(&mut self) -> Result<()> {
        std::fs::write(self.config_path(), self.render_config()).context("write config")?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open the daemon log")?;
        self.starts += 1;
        std::io::Write::write_all(
            &mut log,
            format!("===== harness: start {} =====\n", self.starts).as_bytes(),
        )?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.config_path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready().await?;
        if self.opts.auto_setup && self.token.is_none() {
            self.setup_and_token().await?;
        }
        Ok(())
    }

    /// First-boot setup through the API with the setup code from the log, then an admin token.
    async fn setup_and_token(&mut self) -> Result<()> {
        let token = first_boot_token(&self.client()?, &self.url(""), &self.log()).await?;
        self.token = Some(token);
        Ok(())
    }

    /// The latest first-boot setup code the daemon logged.
    pub fn setup_code(&self) -> Option<String> {
        setup_code_in(&self.log())
    }

    /// The daemon's web certificate (PEM), generated on its first start.
    pub fn web_cert_path(&self) -> PathBuf {
        self.state_dir().join("tls").join("web.crt")
    }

    /// An HTTPS client that trusts exactly the daemon's certificate (as it is now: call
    /// [`Gateway::reload_client`] after replacing it). No connection pooling, so a restarted
    /// daemon never meets a stale connection.
    pub fn client(&self) -> Result<reqwest::Client> {
        self.client
            .clone()
            .context("no HTTPS client yet: the daemon has not written its certificate")
    }

    /// Builds the client again from the certificate file.
    pub fn reload_client(&mut self) -> Result<()> {
        self.client = Some(https_client(&self.web_cert_path())?);
        Ok(())
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.web)
    }

    /// The admin API token the harness created (after the first start with `auto_setup`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request with the harness's admin token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let token = self
            .token
            .as_deref()
            .context("no API token (auto_setup is off)")?;
        Ok(self
            .client()?
            .request(method, self.url(path))
            .bearer_auth(token))
    }

    /// GET with the admin token: status and body text.
    pub async fn api_get(&self, path: &str) -> Result<(u16, String)> {
        let resp = timeout(
            Duration::from_secs(10),
            self.api(reqwest::Method::GET, path)?.send(),
        )
        .await
        .with_context(|| format!("GET {path} timed out"))?
        .with_context(|| format!("GET {path}"))?;
        let code = resp.status().as_u16();
        Ok((
            code,
            resp.text()
                .await
                .with_context(|| format!("GET {path} body"))?,
        ))
    }

    /// Waits until `/healthz` answers (200 or 503) and the MQTT port accepts connections.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + GATEWAY_START_TIMEOUT;
        let mut backoff = Duration::from_millis(10);
        loop {
            let child = self.child.as_mut().context("the gateway is not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "ironbridge exited during start ({status}); log tail:\n{}",
                    self.log_tail()
                );
            }
            if self.client.is_none() && self.web_cert_path().is_file() {
                self.client = https_client(&self.web_cert_path()).ok();
            }
            let web = match &self.client {
                Some(c) => https_get(c, &self.url("/healthz")).await,
                None => Err(anyhow!("no web certificate yet")),
            };
            if web.is_ok() && TcpStream::connect(self.mqtt).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "ironbridge not ready within {GATEWAY_START_TIMEOUT:?} (web {}: {:?}); log tail:\n{}",
                    self.web,
                    web.err(),
                    self.log_tail()
                );
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ironbridge.toml")
    }

    /// `gateway.state_dir` (the buffer is in `buffer/` below it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ironbridge.log")
    }

    /// The daemon's whole log (all starts).
    pub fn log(&self) -> String {
        log_tail(&self.log_path(), usize::MAX)
    }

    /// The end of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path(), 6000)
    }

    pub fn mqtt_port(&self) -> u16 {
        self.mqtt.port()
    }

    /// The HTTPS listener.
    pub fn web_addr(&self) -> SocketAddr {
        self.web
    }

    /// The plain-HTTP redirect listener (only serving with [`GatewayOptions::http_redirect`]).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    pub fn options(&self) -> &GatewayOptions {
        &self.opts
    }

    /// Changes the configuration for the next [`Gateway::restart`].
    pub fn set_options(&mut self, opts: GatewayOptions) {
        self.opts = opts;
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// True while the child process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`: no shutdown, no final sync.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill ironbridge")?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to 30 s for the exit.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("the gateway is not running")?;
        terminate(&child);
        match timeout(Duration::from_secs(30), child.wait()).await {
            Ok(r) => r.context("wait for ironbridge"),
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "ironbridge did not exit within 30 s of SIGTERM; log tail:\n{}",
                    self.log_tail()
                )
            }
        }
    }

    /// Starts the daemon again (after [`Gateway::kill`] or [`Gateway::stop`]) with the same ports,
    /// state directory and (rewritten) config file.
    pub async fn restart(&mut self) -> Result<()> {
        ensure!(!self.is_running(), "restart: the gateway still runs");
        self.child = None;
        self.spawn().await
    }

    /// `GET /api/status` as JSON (with the admin token).
    pub async fn status(&self) -> Result<Value> {
        let (code, body) = self.api_get("/api/status").await?;
        ensure!(code == 200, "/api/status answered {code}: {body}");
        serde_json::from_str(&body).with_context(|| format!("/api/status: {body}"))
    }

    /// `GET /metrics` (Prometheus text, with the admin token).
    pub async fn metrics(&self) -> Result<String> {
        let (code, body) = self.api_get("/metrics").await?;
        ensure!(code == 200, "/metrics answered {code}: {body}");
        Ok(body)
    }

    /// `GET /healthz` (public): the HTTP status and the JSON body.
    pub async fn healthz(&self) -> Result<(u16, Value)> {
        let (code, body) = https_get(&self.client()?, &self.url("/healthz")).await?;
        let v = serde_json::from_str(&body).with_context(|| format!("/healthz: {body}"))?;
        Ok((code, v))
    }

    /// Polls `/api/status` until `pred` holds; on the deadline the error has the last status and
    /// the log tail.
    pub async fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status().await;
            if let Ok(s) = &s
                && pred(s)
            {
                return Ok(s.clone());
            }
            if Instant::now() >= deadline {
                let last = match s {
                    Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "{what}: not within {limit:?}; last /api/status:\n{last}\nlog tail:\n{}",
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every record accepted so far was acknowledged by Kafka or dead-lettered: the
    /// uplink's forwarded offset reached the buffer's end.
    pub async fn wait_forwarded(&self, limit: Duration) -> Result<Value> {
        self.wait_status("every accepted record forwarded", limit, |s| {
            let next = num(s, "/buffer/next_offset");
            let fwd = num(s, "/uplink/forwarded_offset");
            matches!((next, fwd), (Some(n), Some(f)) if f >= n)
                && num(s, "/uplink/lag_records") == Some(0)
        })
        .await
    }
}

/// A number in a JSON document by JSON pointer (`/uplink/lag_records`).
pub fn num(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

/// A string in a JSON document by JSON pointer (`/uplink/state`).
pub fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The value of an unlabelled (`name`) or labelled (`name{...}`) sample in Prometheus text.
pub fn metric(metrics: &str, sample: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(sample)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// An HTTPS client (rustls, ring) trusting only the certificate in `cert_pem` (the daemon's
/// self-signed one). No pooling, 10 s per request.
pub fn https_client(cert_pem: &Path) -> Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_pem)
        .with_context(|| format!("read {}", cert_pem.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parse {}", cert_pem.display()))?)
            .context("trust the daemon's certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("HTTPS client")
}

/// GET `url`: status code and body text.
pub async fn https_get(client: &reqwest::Client, url: &str) -> Result<(u16, String)> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let code = resp.status().as_u16();
    Ok((
        code,
        resp.text()
            .await
            .with_context(|| format!("GET {url} body"))?,
    ))
}

/// The latest first-boot setup code in a daemon log (`setup_code=XXXX-XXXX-XXXX`).
pub fn setup_code_in(log: &str) -> Option<String> {
    let at = log.rfind("setup_code=")? + "setup_code=".len();
    let code: String = log[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!code.is_empty()).then_some(code)
}

/// First-boot setup of a fresh daemon at `base` (`https://addr`) as [`ADMIN_USER`], with the
/// setup code from its `log`; returns a new admin API token.
pub async fn first_boot_token(client: &reqwest::Client, base: &str, log: &str) -> Result<String> {
    let code = setup_code_in(log)
        .with_context(|| format!("no setup code in the daemon's log:\n{}", tail(log, 3000)))?;
    let resp = client
        .post(format!("{base}/api/setup"))
        .json(&serde_json::json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD, "setup_code": code}))
        .send()
        .await
        .context("POST /api/setup")?;
    let cookie = session_cookie(resp.headers());
    let status = resp.status();
    let body: Value = resp.json().await.context("/api/setup body")?;
    ensure!(status == 200, "/api/setup answered {status}: {body}");
    let cookie = cookie.context("/api/setup set no session cookie")?;
    let csrf = text(&body, "/csrf_token")
        .context("no csrf_token")?
        .to_string();
    let resp = client
        .post(format!("{base}/api/tokens"))
        .header(reqwest::header::COOKIE, format!("ib_session={cookie}"))
        .header("X-CSRF-Token", csrf)
        .json(&serde_json::json!({"name": "e2e-harness", "role": "admin"}))
        .send()
        .await
        .context("POST /api/tokens")?;
    let status = resp.status();
    let body: Value = resp.json().await.context("/api/tokens body")?;
    ensure!(status == 201, "/api/tokens answered {status}: {body}");
    Ok(text(&body, "/token").context("no token")?.to_string())
}

/// The `ib_session` value a response sets, if any.
pub fn session_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == "ib_session")
        .map(|(_, v)| v.to_string())
}

/// tansu (sqlite storage) whose advertised address is a [`FaultProxy`] in front of it, so that
/// every connection a Kafka client makes after bootstrapping goes through the proxy. Killed on drop.
pub struct ProxiedKafka {
    /// Between clients and the broker.
    pub proxy: FaultProxy,
    child: Option<Child>,
    listen: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxiedKafka {
    /// Starts tansu on a free port behind a new proxy (retrying on another port if it was taken).
    pub async fn start() -> Result<ProxiedKafka> {
        let mut last = None;
        for _ in 0..3 {
            match ProxiedKafka::start_once().await {
                Ok(k) => return Ok(k),
                Err(e) => {
                    if !format!("{e:#}").contains("Address already in use") {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("tansu did not start")))
    }

    async fn start_once() -> Result<ProxiedKafka> {
        let dir = tempfile::Builder::new()
            .prefix("ironbridge-tansu-proxied-")
            .tempdir()?;
        let listen = SocketAddr::from((LOCALHOST, free_port()?));
        let proxy = FaultProxy::start(listen).await?;
        let log = dir.path().join("tansu.log");
        let mut k = ProxiedKafka {
            proxy,
            child: None,
            listen,
            log,
            _dir: dir,
        };
        k.spawn().await?;
        Ok(k)
    }

    /// Starts the broker process on `listen` (same storage, log appended) and waits until it
    /// answers `ApiVersions`.
    async fn spawn(&mut self) -> Result<()> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let bin = External::Tansu.path();
        // The sqlite path is relative to the working directory (TANSU.md).
        let child = Command::new(&bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{}", self.listen))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", self.proxy.addr()))
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .current_dir(self._dir.path())
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        self.child = Some(child);
        let listen = self.listen;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "tansu exited during start ({status}); log:\n{}",
                    log_tail(&self.log, 4000)
                );
            }
            if api_versions(listen).await.is_ok() {
                // Without it reading a large topic back through tansu never ends (tansu.rs).
                return crate::tansu::index_headers(&self._dir.path().join("tansu.db")).await;
            }
            if Instant::now() >= deadline {
                bail!(
                    "tansu on {listen} not ready; log:\n{}",
                    log_tail(&self.log, 4000)
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the broker: SIGTERM (SIGKILL after 10 s), or SIGKILL at once with `crash`. Clients
    /// see connections refused until [`ProxiedKafka::start_again`].
    pub async fn stop_broker(&mut self, crash: bool) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if !crash {
            terminate(&child);
            if let Ok(r) = timeout(Duration::from_secs(10), child.wait()).await {
                r.context("wait for tansu")?;
                return Ok(());
            }
        }
        child.kill().await.context("kill tansu")?;
        Ok(())
    }

    /// Starts the broker again after [`ProxiedKafka::stop_broker`]: same port, same sqlite
    /// database, so everything it had acknowledged is still there.
    pub async fn start_again(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "tansu still runs");
        // The port was ours a moment ago; after a crash it may linger briefly.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                    sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The proxy's address: the gateway's bootstrap server.
    pub fn bootstrap(&self) -> String {
        self.proxy.addr().to_string()
    }

    /// The broker's own listener (the verifier bootstraps here; metadata then sends it through the
    /// proxy too, so only verify while the proxy passes).
    pub fn direct(&self) -> String {
        self.listen.to_string()
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        log_tail(&self.log, usize::MAX)
    }
}

/// A paho-mqtt publisher that sends `count` messages to each of `topics` (round robin, per-topic
/// sequence numbers from `start`) and reports every acknowledgement as it arrives. Payload:
/// `<topic>#<seq>`.
const STREAM_PUB_PY: &str = r#"
import json, sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

a = json.loads(sys.argv[1])
v5 = a["protocol"] == 5
c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=a["client_id"],
                protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
c.max_inflight_messages_set(a["max_inflight"])
if a.get("username") is not None:
    c.username_pw_set(a["username"], a.get("password"))
lock = threading.RLock()
pending = {}
early = {}
state = {"acked": 0, "refused": None}
connected = threading.Event()
broken = threading.Event()

def emit(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

def on_connect(client, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        state["refused"] = str(reason_code)
        broken.set()
    else:
        connected.set()

def on_disconnect(client, userdata, flags, reason_code, properties):
    broken.set()

def acked(item, reason_code):
    if v5 and reason_code is not None and reason_code.is_failure:
        emit("N %d %d %s" % (item[0], item[1], reason_code))
        return
    state["acked"] += 1
    emit("A %d %d" % item)

# paho calls on_publish holding its own locks, and publish() takes them too: never call paho while
# holding `lock`. An acknowledgement may arrive before publish() returned the mid: park it in `early`.
def on_publish(client, userdata, mid, reason_code, properties):
    with lock:
        item = pending.pop(mid, None)
        if item is None:
            early[mid] = reason_code
            return
        acked(item, reason_code)

c.on_connect = on_connect
c.on_disconnect = on_disconnect
c.on_publish = on_publish
props = None
if v5 and (a["user_properties"] or a["content_type"]):
    props = Properties(PacketTypes.PUBLISH)
    if a["content_type"]:
        props.ContentType = a["content_type"]
    if a["user_properties"]:
        props.UserProperty = [tuple(p) for p in a["user_properties"]]
try:
    c.connect("127.0.0.1", a["port"], keepalive=30)
except OSError as e:
    print("connect: %s" % e, file=sys.stderr)
    sys.exit(2)
c.loop_start()
t_connect = time.monotonic() + 15
while not connected.is_set() and not broken.is_set() and time.monotonic() < t_connect:
    time.sleep(0.005)
if not connected.is_set():
    c.loop_stop()
    emit("END " + json.dumps({"published": 0, "acked": 0, "unacked": 0, "broken": True,
                              "refused": state["refused"] or "no CONNACK"}))
    sys.exit(0)
emit("CONNECTED")
topics, rate, published = a["topics"], a["rate"], 0
t0 = time.monotonic()
for i in range(a["start"], a["start"] + a["count"]):
    for ti, t in enumerate(topics):
        if broken.is_set():
            break
        if rate > 0:
            d = t0 + published / rate - time.monotonic()
            if d > 0:
                time.sleep(d)
        info = c.publish(t, ("%s#%d" % (t, i)).encode(), qos=a["qos"], retain=a["retain"],
                         properties=props)
        with lock:
            if info.mid in early:
                acked((ti, i), early.pop(info.mid))
            else:
                pending[info.mid] = (ti, i)
        published += 1
    if broken.is_set():
        break
t_ack = time.monotonic() + a["ack_timeout"]
while not broken.is_set() and time.monotonic() < t_ack:
    with lock:
        if not pending:
            break
    time.sleep(0.005)
was_broken = broken.is_set()
if not was_broken:
    c.disconnect()
c.loop_stop()
with lock:
    unacked = len(pending)
emit("END " + json.dumps({"published": published, "acked": state["acked"], "unacked": unacked,
                          "broken": was_broken, "refused": state["refused"]}))
"#;

/// What [`StreamPublisher`] sends.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub port: u16,
    pub topics: Vec<String>,
    /// Messages per topic.
    pub count: u32,
    /// First sequence number.
    pub start: u32,
    /// Messages per second over all topics; 0: as fast as the in-flight window allows.
    pub rate: f64,
    pub qos: u8,
    pub retain: bool,
    pub version: MqttVersion,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT 5 only.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 only.
    pub content_type: Option<String>,
    /// paho's in-flight window (QoS 1/2).
    pub max_inflight: u32,
    /// After the last publish, how long to wait for the outstanding acknowledgements.
    pub ack_timeout: Duration,
}

impl StreamSpec {
    /// QoS 1, MQTT 5, as fast as possible, 20 in flight.
    pub fn new(port: u16, client_id: &str, topics: Vec<String>, count: u32) -> StreamSpec {
        StreamSpec {
            port,
            topics,
            count,
            start: 0,
            rate: 0.0,
            qos: 1,
            retain: false,
            version: MqttVersion::V5,
            client_id: client_id.into(),
            username: None,
            password: None,
            user_properties: Vec::new(),
            content_type: None,
            max_inflight: 20,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

/// How a [`StreamPublisher`] ended.
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// Publishes handed to paho.
    pub published: u64,
    /// `(topic, seq)` of every acknowledged message (PUBACK / PUBCOMP; QoS 0: written).
    pub acked: Vec<(String, u32)>,
    /// Sent but not acknowledged when it ended.
    pub unacked: u64,
    /// The connection broke (or was refused) before the end.
    pub broken: bool,
    /// The CONNACK refusal, if any.
    pub refused: Option<String>,
    /// Wall-clock span of the run (ms since the epoch): from spawn to exit.
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// A running [`STREAM_PUB_PY`] publisher.
pub struct StreamPublisher {
    child: Child,
    topics: Vec<String>,
    acks: Arc<Mutex<Vec<(usize, u32)>>>,
    acked: Arc<AtomicUsize>,
    end: Arc<Mutex<Option<Value>>>,
    reader: JoinHandle<()>,
    stderr: JoinHandle<String>,
    started_ms: i64,
}

impl StreamPublisher {
    /// Starts the publisher (it connects and publishes on its own).
    pub fn spawn(spec: &StreamSpec) -> Result<StreamPublisher> {
        let args = serde_json::json!({
            "port": spec.port,
            "topics": spec.topics,
            "count": spec.count,
            "start": spec.start,
            "rate": spec.rate,
            "qos": spec.qos,
            "retain": spec.retain,
            "protocol": match spec.version { MqttVersion::V311 => 311, MqttVersion::V5 => 5 },
            "client_id": spec.client_id,
            "username": spec.username,
            "password": spec.password,
            "user_properties": spec.user_properties,
            "content_type": spec.content_type,
            "max_inflight": spec.max_inflight,
            "ack_timeout": spec.ack_timeout.as_secs_f64(),
        });
        let started_ms = now_ms();
        let mut child = Command::new(External::PythonVenv.path())
            .arg("-c")
            .arg(STREAM_PUB_PY)
            .arg(args.to_string())
            .current_dir(py_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn the paho stream publisher")?;
        let stdout = child.stdout.take().context("publisher stdout")?;
        let stderr = child.stderr.take().context("publisher stderr")?;
        let acks = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicUsize::new(0));
        let end = Arc::new(Mutex::new(None));
        let reader = {
            let (acks, acked, end) = (acks.clone(), acked.clone(), end.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix("A ") {
                        let mut it = rest.split(' ').filter_map(|w| w.parse::<u64>().ok());
                        if let (Some(t), Some(s)) = (it.next(), it.next()) {
                            lock(&acks).push((t as usize, s as u32));
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if let Some(rest) = line.strip_prefix("END ") {
                        *lock(&end) = serde_json::from_str(rest).ok();
                    }
                }
            })
        };
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s).await;
            s
        });
        Ok(StreamPublisher {
            child,
            topics: spec.topics.clone(),
            acks,
            acked,
            end,
            reader,
            stderr,
            started_ms,
        })
    }

    /// Messages acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` messages were acknowledged.
    pub async fn wait_acked(&mut self, n: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.acked() < n {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the publisher exited ({status}) after {} acknowledgements, before {n}",
                    self.acked()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "only {} of {n} messages acknowledged within {limit:?}",
                self.acked()
            );
            sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Waits for the publisher to end (all sent and acknowledged, or the connection broke).
    pub async fn finish(mut self, limit: Duration) -> Result<StreamReport> {
        let status = match timeout(limit, self.child.wait()).await {
            Ok(r) => r.context("wait for the publisher")?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "the publisher did not finish within {limit:?} ({} acknowledged)",
                    self.acked()
                );
            }
        };
        let finished_ms = now_ms();
        let _ = timeout(Duration::from_secs(5), &mut self.reader).await;
        let stderr = timeout(Duration::from_secs(5), &mut self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        ensure!(
            status.success(),
            "the publisher failed ({status}): {}",
            tail(&stderr, 2000)
        );
        let end = lock(&self.end)
            .clone()
            .with_context(|| format!("the publisher printed no END line: {stderr}"))?;
        let acked: Vec<(String, u32)> = lock(&self.acks)
            .iter()
            .map(|&(t, s)| (self.topics[t].clone(), s))
            .collect();
        Ok(StreamReport {
            published: num(&end, "/published").unwrap_or(0),
            unacked: num(&end, "/unacked").unwrap_or(0),
            broken: end.get("broken").and_then(Value::as_bool).unwrap_or(true),
            refused: text(&end, "/refused").map(str::to_string),
            acked,
            started_ms: self.started_ms,
            finished_ms,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes each of `lines` as one message with `mosquitto_pub -l` (`extra` adds arguments such as
/// `-r`, `-D publish user-property k v`, `-u`/`-P`). Fails if mosquitto_pub exits non-zero.
pub async fn mosquitto_lines(
    port: u16,
    topic: &str,
    qos: u8,
    version: MqttVersion,
    client_id: &str,
    lines: &[String],
    extra: &[&str],
) -> Result<()> {
    let mut cmd = Command::new(External::MosquittoClients.path());
    cmd.arg("-h")
        .arg(LOCALHOST.to_string())
        .arg("-p")
        .arg(port.to_string())
        .arg("-t")
        .arg(topic)
        .arg("-q")
        .arg(qos.to_string())
        .arg("-V")
        .arg(match version {
            MqttVersion::V311 => "mqttv311",
            MqttVersion::V5 => "mqttv5",
        })
        .arg("-i")
        .arg(client_id)
        .arg("-l")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let line = describe(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("spawn {line}"))?;
    let mut input = lines.join("\n");
    input.push('\n');
    if let Some(mut w) = child.stdin.take() {
        w.write_all(input.as_bytes()).await?;
        drop(w);
    }
    let out = match timeout(Duration::from_secs(60), child.wait_with_output()).await {
        Ok(r) => r?,
        Err(_) => bail!("{line} did not finish within 60 s"),
    };
    ensure!(
        out.status.success(),
        "{line} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs `mosquitto_pub -m MESSAGE` once and returns its output whatever the exit status (for refused
/// connections).
pub async fn mosquitto_once(
    port: u16,
    topic: &str,
    message: &str,
    args: &[&str],
) -> Result<Output> {
    let mut cmd = Command::new(External::MosquittoClients.path());
    cmd.arg("-h")
        .arg(LOCALHOST.to_string())
        .arg("-p")
        .arg(port.to_string())
        .arg("-t")
        .arg(topic)
        .arg("-m")
        .arg(message)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let line = describe(&cmd);
    let child = cmd.spawn().with_context(|| format!("spawn {line}"))?;
    match timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("{line} did not finish within 20 s"),
    }
}

/// Where the Java client's default partitioner puts each key among `partitions`, computed by the
/// independent murmur2 in `kafka_tool.py partition` (checked against Kafka's own test vectors).
pub async fn java_partitions(keys: &[String], partitions: u32) -> Result<HashMap<String, i32>> {
    let mut cmd = Command::new(External::PythonVenv.path());
    cmd.arg(crate::kafka::script())
        .arg("partition")
        .arg("--partitions")
        .arg(partitions.to_string())
        .args(keys);
    let out = crate::process::run(&mut cmd, Duration::from_secs(30)).await?;
    let v: Value = serde_json::from_slice(&out.stdout).context("partition output")?;
    let map = v
        .get("keys")
        .and_then(Value::as_object)
        .context("partition output has no keys")?;
    map.iter()
        .map(|(k, p)| {
            Ok((
                k.clone(),
                p.as_i64().context("partition is not a number")? as i32,
            ))
        })
        .collect()
}

/// The `buffer_offset` header.
pub fn buffer_offset(r: &Record) -> Result<u64> {
    r.header_str("buffer_offset")
        .with_context(|| format!("record without buffer_offset header: {r:?}"))?
        .parse()
        .with_context(|| format!("buffer_offset header is not a number: {r:?}"))
}

/// `<topic>#<seq>` payloads of the stream publisher (and of the tests' line publishers).
pub fn parse_payload(r: &Record) -> Result<(String, u32)> {
    let v = r
        .value_str()
        .with_context(|| format!("value is not UTF-8: {r:?}"))?;
    let (topic, seq) = v
        .rsplit_once('#')
        .with_context(|| format!("value {v:?} is not <topic>#<seq>"))?;
    Ok((
        topic.to_string(),
        seq.parse()
            .with_context(|| format!("value {v:?}: bad sequence number"))?,
    ))
}

/// What reached Kafka, with at-least-once duplicates separated out.
#[derive(Debug, Default)]
pub struct Delivery {
    /// The first copy of every record, by (Kafka topic, partition, offset).
    pub unique: Vec<Record>,
    /// Copies beyond the first (same `gateway_id` + `buffer_offset`, identical record).
    pub duplicates: usize,
    /// MQTT topic → sequence numbers of its unique records in Kafka (partition) order.
    pub by_topic: BTreeMap<String, Vec<u32>>,
}

impl Delivery {
    /// Checks and sorts `records` (from any number of Kafka topics):
    /// - records sharing `gateway_id` + `buffer_offset` must be identical (Kafka topic, partition,
    ///   key, value, headers, timestamp): those are the duplicates at-least-once delivery may make;
    /// - one message (`<mqtt topic>#<seq>` payload, and the `mqtt_topic` header must agree) must not
    ///   appear under two different buffer offsets (a duplicate a consumer could not drop);
    /// - each MQTT topic's records are in one partition and, first copies only, in publishing order.
    pub fn analyse(mut records: Vec<Record>) -> Result<Delivery> {
        records.sort_by(|a, b| {
            (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
        });
        let mut first: HashMap<(String, u64), usize> = HashMap::new();
        let mut message_offset: HashMap<(String, u32), u64> = HashMap::new();
        let mut topic_partition: HashMap<String, (String, i32)> = HashMap::new();
        let mut d = Delivery::default();
        for r in records {
            let gw = r
                .header_str("gateway_id")
                .with_context(|| format!("record without gateway_id: {r:?}"))?
                .to_string();
            let off = buffer_offset(&r)?;
            if let Some(&i) = first.get(&(gw.clone(), off)) {
                let f: &Record = &d.unique[i];
                let same = f.topic == r.topic
                    && f.partition == r.partition
                    && f.key == r.key
                    && f.value == r.value
                    && f.headers == r.headers
                    && f.timestamp == r.timestamp;
                ensure!(
                    same,
                    "two different records carry gateway_id {gw} + buffer_offset {off}:\n{f:?}\n{r:?}"
                );
                d.duplicates += 1;
                continue;
            }
            let (mqtt_topic, seq) = parse_payload(&r)?;
            ensure!(
                r.header_str("mqtt_topic") == Some(mqtt_topic.as_str()),
                "payload names MQTT topic {mqtt_topic} but the mqtt_topic header is {:?}",
                r.header_str("mqtt_topic")
            );
            if let Some(prev) = message_offset.insert((mqtt_topic.clone(), seq), off) {
                bail!(
                    "message {mqtt_topic}#{seq} reached Kafka under buffer offsets {prev} and {off}: \
                     a duplicate the gateway_id + buffer_offset headers cannot identify"
                );
            }
            let place = (r.topic.clone(), r.partition);
            match topic_partition.get(&mqtt_topic) {
                Some(p) if *p != place => bail!(
                    "MQTT topic {mqtt_topic} is spread over {p:?} and {place:?}: no order per key"
                ),
                Some(_) => {}
                None => {
                    topic_partition.insert(mqtt_topic.clone(), place);
                }
            }
            let seqs = d.by_topic.entry(mqtt_topic.clone()).or_default();
            if let Some(&last) = seqs.last() {
                ensure!(
                    seq > last,
                    "{mqtt_topic}: #{seq} (buffer offset {off}) comes after #{last} in Kafka: out of order"
                );
            }
            seqs.push(seq);
            first.insert((gw, off), d.unique.len());
            d.unique.push(r);
        }
        Ok(d)
    }

    /// Every `(topic, seq)` of `expected` that did not arrive.
    pub fn missing<'a>(
        &self,
        expected: impl IntoIterator<Item = &'a (String, u32)>,
    ) -> Vec<(String, u32)> {
        let have: HashMap<&str, BTreeSet<u32>> = self
            .by_topic
            .iter()
            .map(|(t, s)| (t.as_str(), s.iter().copied().collect()))
            .collect();
        expected
            .into_iter()
            .filter(|(t, s)| !have.get(t.as_str()).is_some_and(|set| set.contains(s)))
            .cloned()
            .collect()
    }
}

/// `(topic, seq)` for `count` messages from `start` on each topic.
pub fn expected_messages(topics: &[String], start: u32, count: u32) -> Vec<(String, u32)> {
    topics
        .iter()
        .flat_map(|t| (start..start + count).map(move |s| (t.clone(), s)))
        .collect()
}

/// Asserts that `d` holds exactly `start..start+count` for every topic in `topics`, in order.
pub fn assert_complete(d: &Delivery, topics: &[String], start: u32, count: u32) -> Result<()> {
    for t in topics {
        let got = d.by_topic.get(t).map(Vec::as_slice).unwrap_or(&[]);
        let want: Vec<u32> = (start..start + count).collect();
        if got != want.as_slice() {
            let have: BTreeSet<u32> = got.iter().copied().collect();
            let missing: Vec<u32> = want.iter().filter(|s| !have.contains(s)).copied().collect();
            bail!(
                "{t}: {} of {count} messages arrived; missing (first 20): {:?}",
                got.len(),
                &missing[..missing.len().min(20)]
            );
        }
    }
    Ok(())
}

/// Creates a self-signed certificate and key (`<name>.pem`, `<name>.key`) for `127.0.0.1` with
/// `openssl`: a CA certificate when `ca`, else a server (end-entity) certificate.
pub async fn self_signed_cert(
    dir: &Path,
    name: &str,
    cn: &str,
    ca: bool,
) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ])
    .args(["-nodes", "-days", "2", "-subj"])
    .arg(format!("/CN={cn}"))
    .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
    .arg("-addext")
    .arg(if ca {
        "basicConstraints=critical,CA:TRUE"
    } else {
        "basicConstraints=critical,CA:FALSE"
    })
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    crate::process::run(&mut cmd, Duration::from_secs(30)).await?;
    Ok((cert, key))
}

/// A TLS listener on 127.0.0.1 (socat) with the given certificate, forwarding the decrypted bytes
/// to `target`. Killed on drop.
pub struct TlsListener {
    child: Child,
    addr: SocketAddr,
}

impl TlsListener {
    pub async fn start(cert: &Path, key: &Path, target: SocketAddr) -> Result<TlsListener> {
        let port = free_port()?;
        let addr = SocketAddr::from((LOCALHOST, port));
        let mut child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:{target}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn socat (apt-get install socat)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("socat exited during start ({status})");
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(TlsListener { child, addr });
            }
            ensure!(Instant::now() < deadline, "socat did not listen on {addr}");
            sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, partition: i32, offset: i64, mqtt: &str, seq: u32, boff: u64) -> Record {
        Record {
            topic: topic.into(),
            partition,
            offset,
            timestamp: 1,
            timestamp_type: 1,
            key: Some(mqtt.as_bytes().to_vec()),
            value: Some(format!("{mqtt}#{seq}").into_bytes()),
            headers: vec![
                ("mqtt_topic".into(), Some(mqtt.as_bytes().to_vec())),
                ("gateway_id".into(), Some(b"gw".to_vec())),
                ("buffer_offset".into(), Some(boff.to_string().into_bytes())),
            ],
        }
    }

    #[test]
    fn analyse_drops_identical_duplicates_and_checks_order() {
        let records = vec![
            rec("t", 0, 0, "a", 0, 0),
            rec("t", 0, 1, "a", 1, 1),
            rec("t", 0, 2, "a", 0, 0),
            rec("t", 0, 3, "a", 1, 1),
            rec("t", 0, 4, "a", 2, 2),
            rec("t", 1, 0, "b", 0, 3),
        ];
        let d = Delivery::analyse(records).expect("valid");
        assert_eq!(d.duplicates, 2);
        assert_eq!(d.by_topic["a"], [0, 1, 2]);
        assert_eq!(d.by_topic["b"], [0]);
        assert_eq!(
            d.missing(&[("a".to_string(), 3), ("b".to_string(), 0)]),
            [("a".to_string(), 3)]
        );
        assert_complete(&d, &["a".to_string()], 0, 3).expect("complete");
        assert!(assert_complete(&d, &["a".to_string()], 0, 4).is_err());
    }

    #[test]
    fn analyse_rejects_unidentifiable_duplicates_and_disorder() {
        // The same message under two buffer offsets.
        let e = Delivery::analyse(vec![rec("t", 0, 0, "a", 0, 0), rec("t", 0, 1, "a", 0, 1)]);
        assert!(e.is_err());
        // Same ids, different content.
        let mut other = rec("t", 0, 1, "a", 0, 0);
        other.timestamp = 2;
        assert!(Delivery::analyse(vec![rec("t", 0, 0, "a", 0, 0), other]).is_err());
        // Out of order.
        let e = Delivery::analyse(vec![rec("t", 0, 0, "a", 1, 1), rec("t", 0, 1, "a", 0, 0)]);
        assert!(e.is_err());
        // One MQTT topic over two partitions.
        let e = Delivery::analyse(vec![rec("t", 0, 0, "a", 0, 0), rec("t", 1, 0, "a", 1, 1)]);
        assert!(e.is_err());
    }

    #[test]
    fn metric_lines() {
        let m = "# HELP x y\nironbridge_uplink_lag_records 12\nironbridge_uplink_state{state=\"error\"} 1\n";
        assert_eq!(metric(m, "ironbridge_uplink_lag_records"), Some(12.0));
        assert_eq!(
            metric(m, "ironbridge_uplink_state{state=\"error\"}"),
            Some(1.0)
        );
        assert_eq!(metric(m, "ironbridge_uplink_lag"), None);
    }
}
