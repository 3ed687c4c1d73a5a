//! A small W3C WebDriver client for Debian's chromedriver + headless Chromium, over plain HTTP/1.1
//! on 127.0.0.1 (no client library: the protocol is JSON over a handful of endpoints).
//!
//! Chromium runs with the flags this machine needs (no sandbox as root, no GPU) and with every
//! background connection off (`--disable-background-networking` etc.) plus a host resolver that
//! maps every name except 127.0.0.1 to "not found": the browser reaches nothing but the gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver as a child process (killed on drop) and one browser session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Result<Browser> {
        let port = ironbridge_e2e::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {CHROMEDRIVER}"))?;
        let profile = tempfile::Builder::new()
            .prefix("ironbridge-chromium-")
            .tempdir()?;
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = b.call("GET", "/status", None).await
                && v.pointer("/ready").and_then(Value::as_bool) == Some(true)
            {
                break;
            }
            if let Some(st) = b.driver.try_wait()? {
                bail!("chromedriver exited during start ({st})");
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver not ready on {addr}"
            );
            sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--metrics-recording-only".into(),
            "--no-default-browser-check".into(),
            "--ignore-certificate-errors".into(),
            "--hide-scrollbars".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "pageLoadStrategy": "normal",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = b.call("POST", "/session", Some(caps)).await?;
        b.session = v
            .pointer("/sessionId")
            .and_then(Value::as_str)
            .context("no sessionId")?
            .to_string();
        b.set_size(width, height).await?;
        Ok(b)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let exchange = async {
            let mut s = TcpStream::connect(self.addr).await?;
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            );
            s.write_all(req.as_bytes()).await?;
            // chromedriver keeps the connection open: read the head, then Content-Length bytes
            // (or chunks, or until EOF without either).
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16384];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other(
                        "connection closed in the response head",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            let chunked = head.contains("transfer-encoding: chunked")
                || head.contains("transfer-encoding:chunked");
            loop {
                let body_len = buf.len() - head_end;
                let done = match length {
                    Some(l) => body_len >= l,
                    None if chunked => buf.ends_with(b"0\r\n\r\n"),
                    None => false,
                };
                if done {
                    break;
                }
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok::<_, std::io::Error>((head, buf.split_off(head_end)))
        };
        let (head, body) = timeout(Duration::from_secs(60), exchange)
            .await
            .with_context(|| format!("WebDriver {method} {path} timed out"))?
            .with_context(|| format!("WebDriver {method} {path}"))?;
        let rest = String::from_utf8_lossy(&body);
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("WebDriver status line")?;
        let chunked = head.contains("transfer-encoding: chunked")
            || head.contains("transfer-encoding:chunked");
        let json_text = if chunked {
            dechunk(&rest)?
        } else {
            rest.to_string()
        };
        let v: Value = serde_json::from_str(&json_text)
            .with_context(|| format!("WebDriver {method} {path}: {json_text}"))?;
        if code != 200 {
            let err = v.pointer("/value/error").and_then(Value::as_str);
            let msg = v.pointer("/value/message").and_then(Value::as_str);
            bail!(
                "WebDriver {method} {path} -> {code}: {} {}",
                err.unwrap_or("?"),
                msg.unwrap_or("").lines().next().unwrap_or("")
            );
        }
        Ok(v.get("value").cloned().unwrap_or(Value::Null))
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn set_size(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(json!({"width": width, "height": height})),
        )
        .await?;
        Ok(())
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })))
            .await
            .with_context(|| format!("open {url}"))?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` until it returns something other than null/false/""/0, or fails at the deadline
    /// with `what` and the page's visible text.
    pub async fn wait(&self, what: &str, limit: Duration, script: &str) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.js(script, vec![]).await;
            if let Ok(v) = &r {
                let truthy = match v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::String(s) => !s.is_empty(),
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    _ => true,
                };
                if truthy {
                    return Ok(v.clone());
                }
            }
            if Instant::now() >= deadline {
                let page = self
                    .js(
                        "return location.href + '\\n' + document.body.innerText.slice(0, 3000)",
                        vec![],
                    )
                    .await
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                bail!("browser: {what}: not within {limit:?} (last: {r:?}); page:\n{page}");
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css` matches a displayed element and returns its WebDriver id.
    pub async fn find(&self, css: &str) -> Result<String> {
        let script = format!(
            "const e = document.querySelector({}); return !!(e && e.getClientRects().length);",
            serde_json::to_string(css)?
        );
        self.wait(&format!("element {css}"), Duration::from_secs(15), &script)
            .await?;
        let v = self
            .call(
                "POST",
                &self.s("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        v.get(ELEMENT)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no element id for {css}: {v}"))
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await
        .with_context(|| format!("click {css}"))?;
        Ok(())
    }

    /// Clears the input `css` and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/clear")),
            Some(json!({})),
        )
        .await?;
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await
        .with_context(|| format!("type into {css}"))?;
        Ok(())
    }

    /// Chooses `value` in the `<select>` `css` (and fires `change`).
    pub async fn choose(&self, css: &str, value: &str) -> Result<()> {
        self.find(css).await?;
        let ok = self
            .js(
                "const s = document.querySelector(arguments[0]); \
                 if (![...s.options].some(o => o.value === arguments[1])) return false; \
                 s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
                vec![json!(css), json!(value)],
            )
            .await?;
        ensure!(ok == json!(true), "{css} has no option {value}");
        Ok(())
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> Result<u64> {
        let v = self
            .js(
                "return document.querySelectorAll(arguments[0]).length",
                vec![json!(css)],
            )
            .await?;
        Ok(v.as_u64().unwrap_or(0))
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.call(
            "POST",
            &self.s("/goog/cdp/execute"),
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.call("GET", &self.s("/screenshot"), None).await?;
        let b64 = v.as_str().context("screenshot is not a string")?;
        let png = base64::engine::general_purpose::STANDARD.decode(b64)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))?;
        Ok(())
    }

    /// The alert text if a JavaScript dialog is open (an injected `alert()` would show here).
    pub async fn open_alert(&self) -> Option<String> {
        self.call("GET", &self.s("/alert/text"), None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    pub async fn quit(mut self) {
        let _ = self.call("DELETE", &self.s(""), None).await;
        let _ = self.driver.kill().await;
    }
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("chunk size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        s = rest
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .context("chunk end")?;
    }
}

/// Where screenshots go: `$IRONBRIDGE_ARTIFACTS/web-screenshots`, else `<target>/web-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IRONBRIDGE_ARTIFACTS") {
        return PathBuf::from(d).join("web-screenshots");
    }
    // <target>/<profile>/deps/<test exe>
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(std::env::temp_dir)
        .join("web-screenshots")
}

/// True when chromium and chromedriver are installed; otherwise an error naming the install
/// script, or `false` (skip) with `IRONBRIDGE_E2E_SKIP_EXTERNAL=1`.
pub fn browser_available() -> Result<bool> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    if std::env::var("IRONBRIDGE_E2E_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipped: IRONBRIDGE_E2E_SKIP_EXTERNAL=1 and {missing:?} are missing");
        return Ok(false);
    }
    bail!("{missing:?} missing: run tests/scripts/install-deps.sh (apt chromium chromium-driver)")
}
