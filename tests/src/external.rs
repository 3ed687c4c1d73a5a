//! Locations of the external tools and the policy for tests that need them.
//!
//! | tool | default location | override |
//! | --- | --- | --- |
//! | tansu | `/var/cache/ironbridge/tansu/bin/tansu` | `IRONBRIDGE_TANSU` |
//! | Python venv (confluent-kafka, paho-mqtt) | `/var/cache/ironbridge/venv` | `IRONBRIDGE_VENV` |
//! | mosquitto, mosquitto_pub, mosquitto_sub | `PATH` (Debian packages) | |
//! | node | `PATH` | |
//! | node modules of `tests/js` (Eclipse Tahu's sparkplug-payload, mqtt) | `/var/cache/ironbridge/js/node_modules` | `IRONBRIDGE_JS` (the directory holding `node_modules`) |
//!
//! A test that needs [`External::Node`] is skipped (with a note) when `node` is not installed,
//! except in CI (`CI=true`), where it fails like any other missing tool.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Set to `1` to skip (with a note on stderr) every test that needs an external tool.
pub const SKIP_ENV: &str = "IRONBRIDGE_E2E_SKIP_EXTERNAL";

/// An external tool a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum External {
    /// The `tansu` Kafka-protocol broker.
    Tansu,
    /// The Python venv with confluent-kafka and paho-mqtt.
    PythonVenv,
    /// `mosquitto_pub` / `mosquitto_sub` (Debian `mosquitto-clients`).
    MosquittoClients,
    /// The `mosquitto` broker (Debian `mosquitto`).
    Mosquitto,
    /// Node.js (`node`), for the Tahu host (`tests/js`).
    Node,
    /// The node modules of `tests/js` (Eclipse Tahu's `sparkplug-payload`, `mqtt`).
    TahuJs,
}

impl External {
    /// Path of the tool's main executable.
    pub fn path(self) -> PathBuf {
        match self {
            External::Tansu => env::var_os("IRONBRIDGE_TANSU")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/cache/ironbridge/tansu/bin/tansu")),
            External::PythonVenv => venv_dir().join("bin/python"),
            External::MosquittoClients => find_in_path("mosquitto_pub"),
            External::Mosquitto => {
                // Debian installs the broker in /usr/sbin, which is not always on a non-root PATH.
                let p = find_in_path("mosquitto");
                if p.is_file() {
                    p
                } else {
                    PathBuf::from("/usr/sbin/mosquitto")
                }
            }
            External::Node => find_in_path("node"),
            External::TahuJs => js_dir().join("node_modules/sparkplug-payload/package.json"),
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            External::Tansu => {
                "install it with `tests/scripts/install-tansu.sh` (builds tansu 0.6.0: ~9 min on an idle 2-core machine, 30+ min next to other builds), \
                 or everything with `sudo tests/scripts/install-deps.sh`"
            }
            External::PythonVenv => {
                "create it with `tests/scripts/setup-python.sh`, or everything with `sudo tests/scripts/install-deps.sh`"
            }
            External::MosquittoClients => {
                "install it with `apt-get install mosquitto-clients`, or everything with `sudo tests/scripts/install-deps.sh`"
            }
            External::Mosquitto => {
                "install it with `apt-get install mosquitto`, or everything with `sudo tests/scripts/install-deps.sh`"
            }
            External::Node => {
                "install Node.js 18 or later with npm (Debian `nodejs npm`), then `sudo tests/scripts/install-deps.sh`"
            }
            External::TahuJs => {
                "install them with `sudo tests/scripts/install-deps.sh` (npm ci of tests/js/package-lock.json)"
            }
        }
    }
}

/// The Python virtualenv directory.
pub fn venv_dir() -> PathBuf {
    env::var_os("IRONBRIDGE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ironbridge/venv"))
}

/// The directory holding the `node_modules` of `tests/js` (`NODE_PATH` of the Tahu host).
pub fn js_dir() -> PathBuf {
    env::var_os("IRONBRIDGE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ironbridge/js"))
}

/// The `tests/js` directory holding the JavaScript helper scripts.
pub fn js_src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// The `tests/py` directory holding the Python helper scripts.
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py")
}

fn find_in_path(name: &str) -> PathBuf {
    env::var_os("PATH")
        .and_then(|paths| {
            env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

/// True when `IRONBRIDGE_E2E_SKIP_EXTERNAL=1`.
pub fn skip_external() -> bool {
    env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

/// True in CI (`CI=true`).
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true")
}

/// Checks that all `tools` are installed.
///
/// Returns `Ok(true)` to run the test, `Ok(false)` to skip it (when `IRONBRIDGE_E2E_SKIP_EXTERNAL=1`, or
/// [`External::Node`] is missing outside CI; a note goes to stderr), and an error naming the install
/// command when a tool is missing.
///
/// ```no_run
/// # async fn t() -> anyhow::Result<()> {
/// if !ironbridge_e2e::require(&[ironbridge_e2e::External::Tansu])? {
///     return Ok(());
/// }
/// # Ok(()) }
/// ```
pub fn require(tools: &[External]) -> Result<bool> {
    let found: Vec<(External, PathBuf)> = tools.iter().map(|&t| (t, t.path())).collect();
    check(&found, skip_external(), in_ci())
}

fn check(tools: &[(External, PathBuf)], skip: bool, ci: bool) -> Result<bool> {
    if skip {
        let names: Vec<External> = tools.iter().map(|(t, _)| *t).collect();
        eprintln!("skipped: {SKIP_ENV}=1 and this test needs {names:?}");
        return Ok(false);
    }
    if !ci
        && let Some((_, path)) = tools
            .iter()
            .find(|(t, p)| *t == External::Node && !p.is_file())
    {
        eprintln!(
            "skipped: node not found at {} (outside CI); {}",
            path.display(),
            External::Node.install_hint()
        );
        return Ok(false);
    }
    let missing: Vec<String> = tools
        .iter()
        .filter(|(_, path)| !path.is_file())
        .map(|(tool, path)| {
            format!(
                "{tool:?} not found at {}: {}",
                path.display(),
                tool.install_hint()
            )
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "this e2e test needs external tools that are not installed:\n  {}\n\
             (set {SKIP_ENV}=1 to skip such tests)",
            missing.join("\n  ")
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_fails_with_install_hint_unless_skipped() {
        let tools = [(External::Tansu, PathBuf::from("/nonexistent/tansu"))];
        let err = check(&tools, false, false).expect_err("missing tansu must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("/nonexistent/tansu"), "{msg}");
        assert!(msg.contains("install-tansu.sh"), "{msg}");
        assert!(msg.contains(SKIP_ENV), "{msg}");
        assert!(!check(&tools, true, false).expect("skip"));
    }

    #[test]
    fn missing_node_skips_outside_ci_and_fails_in_ci() {
        let tools = [
            (External::Node, PathBuf::from("/nonexistent/node")),
            (External::TahuJs, PathBuf::from("/nonexistent/package.json")),
        ];
        assert!(!check(&tools, false, false).expect("skipped outside CI"));
        let msg = format!("{:#}", check(&tools, false, true).expect_err("fails in CI"));
        assert!(msg.contains("/nonexistent/node"), "{msg}");
        // node present, modules missing: fails everywhere.
        let exe = std::env::current_exe().expect("current exe");
        let tools = [
            (External::Node, exe),
            (External::TahuJs, PathBuf::from("/nonexistent/package.json")),
        ];
        let msg = format!(
            "{:#}",
            check(&tools, false, false).expect_err("modules missing")
        );
        assert!(msg.contains("install-deps.sh"), "{msg}");
    }

    #[test]
    fn present_tool_runs() {
        let exe = std::env::current_exe().expect("current exe");
        assert!(check(&[(External::Tansu, exe)], false, false).expect("present"));
    }
}
