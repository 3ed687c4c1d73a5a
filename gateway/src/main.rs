//! `ironbridge`: the edge gateway daemon.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ironbridge::config::{Config, DEFAULT_CONFIG_PATH, LogFormat};
use ironbridge::daemon::{Exit, RunOptions};

#[derive(Parser)]
#[command(
    name = "ironbridge",
    version,
    about = "Industrial edge gateway: MQTT and Modbus to Kafka, through a durable disk buffer"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH, global = true)]
    config: PathBuf,
    /// Run a self-contained demo from ./ironbridge-demo on unprivileged loopback ports with a
    /// simulated Modbus device; buffers until a Kafka cluster is given with --kafka.
    #[arg(long)]
    demo: bool,
    /// With --demo: Kafka bootstrap servers to forward to (e.g. 127.0.0.1:9092).
    #[arg(long, requires = "demo")]
    kafka: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file; print each problem with its line and field.
    CheckConfig {
        /// Defaults to --config.
        file: Option<PathBuf>,
    },
    /// Read a password on standard input and print its argon2id hash for `[mqtt.users]`.
    HashPassword,
}

/// The demo's directory and configuration file.
const DEMO_DIR: &str = "ironbridge-demo";
const DEMO_CONFIG: &str = "ironbridge-demo/ironbridge.toml";

/// The demo: everything below ./ironbridge-demo, loopback only.
fn demo_config(kafka: Option<String>) -> Config {
    let mut c = Config::default();
    c.gateway.id = "ironbridge-demo".into();
    c.gateway.state_dir = PathBuf::from("ironbridge-demo");
    c.buffer.max_bytes = ironbridge::config::ByteSize(256 << 20);
    c.buffer.segment_bytes = ironbridge::config::ByteSize(16 << 20);
    c.mqtt.listen = SocketAddr::from(([127, 0, 0, 1], 11883));
    // Loopback only, so anonymous clients are allowed in the demo (never the default on a box).
    c.mqtt.allow_anonymous = true;
    c.web.listen = SocketAddr::from(([127, 0, 0, 1], 18443));
    c.web.http_listen = SocketAddr::from(([127, 0, 0, 1], 18080));
    if let Some(k) = kafka {
        c.kafka.bootstrap_servers = k.split(',').map(|s| s.trim().to_string()).collect();
    }
    c
}

/// The demo's configuration: `./ironbridge-demo/ironbridge.toml`, written from the demo defaults
/// on first start so that changes made in the web UI persist. `--kafka` overrides the file's
/// bootstrap servers for this run.
fn demo_config_file(kafka: Option<String>) -> anyhow::Result<(Config, PathBuf)> {
    let path = PathBuf::from(DEMO_CONFIG);
    if !path.exists() {
        std::fs::create_dir_all(DEMO_DIR).with_context(|| format!("creating {DEMO_DIR}"))?;
        let text = format!(
            "# Ironbridge demo configuration, written on the demo's first start; the web UI\n# (https://127.0.0.1:18443/) saves its changes here. Delete it to start over.\n\n{}",
            toml::to_string(&demo_config(kafka.clone()))
                .context("rendering the demo configuration")?
        );
        ironbridge::config_store::write_atomically(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(k) = kafka {
        config.kafka.bootstrap_servers = k.split(',').map(|s| s.trim().to_string()).collect();
    }
    Ok((config, path))
}

fn init_logging(level: &str, format: LogFormat) {
    // rskafka logs every retry at info; our own components log what matters, so quiet it
    // unless named.
    let mut level = level.to_string();
    if !level.contains("rskafka") {
        level.push_str(",rskafka=warn");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // The console (journal) output and the web UI's recent-log ring, under one filter. Text
    // output escapes every field value (outside values must not forge lines or fields).
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(ironbridge::web::logs::layer());
    let _ = match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_target(true))
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(ironbridge::log_format::EscapedFields)
                    .with_target(true)
                    .with_ansi(ansi),
            )
            .try_init(),
    };
}

fn main() -> ExitCode {
    // Before any other thread exists: large buffers (argon2, catch-up batches) go back to the
    // kernel when freed instead of staying in malloc's arenas (see `ironbridge::malloc`).
    ironbridge::malloc::configure();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let path = file.unwrap_or(cli.config);
            match Config::load(&path) {
                Ok(config) => {
                    println!("{}: OK", path.display());
                    // The Modbus request plan: what each poll cycle will send.
                    for device in config.modbus.validate().unwrap_or_default() {
                        println!(
                            "\n{}",
                            ironbridge_adapters::modbus::DevicePlan::new(&device)
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::HashPassword) => {
            let mut pw = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut pw) {
                eprintln!("reading the password from standard input: {e}");
                return ExitCode::FAILURE;
            }
            match ironbridge::mqtt::hash_password(pw.trim_end_matches(['\r', '\n'])) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let (config, path) = if cli.demo {
                // The demo machine's name may be used in the configuration (command allow-list).
                ironbridge::config::register_runtime_devices(vec![
                    ironbridge_adapters::modbus::sim::demo::device_config("demo", "127.0.0.1:502"),
                ]);
                match demo_config_file(cli.kafka) {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("ironbridge --demo: {e:#}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                match Config::load(&cli.config) {
                    Ok(c) => (c, cli.config.clone()),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                }
            };
            init_logging(&config.log.level, config.log.format);
            let opts = RunOptions {
                config_path: Some(path),
                demo_device: cli.demo,
            };
            match run(config, opts) {
                Ok(Exit::Stopped) => ExitCode::SUCCESS,
                Ok(Exit::Restart) => restart(),
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("ironbridge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Exit status that asks systemd to start the daemon again (the unit lists it in
/// `RestartForceExitStatus` and `SuccessExitStatus`).
const RESTART_EXIT: u8 = 75;

/// After an orderly shutdown on `POST /api/system/restart`: under systemd exit with
/// [`RESTART_EXIT`] so the service manager starts a fresh process; otherwise (demo, tests)
/// replace this process with a fresh one, same binary and arguments.
fn restart() -> ExitCode {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        return ExitCode::from(RESTART_EXIT);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("ironbridge: restart: {e}");
                return ExitCode::from(RESTART_EXIT);
            }
        };
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        eprintln!("ironbridge: restart: {err}");
    }
    ExitCode::from(RESTART_EXIT)
}

fn run(config: Config, opts: RunOptions) -> anyhow::Result<Exit> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ironbridge")
        .build()
        .context("starting the async runtime")?;
    let exit = rt.block_on(ironbridge::daemon::run(config, opts));
    // Background tasks must not outlive the runtime's sockets.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    exit
}
