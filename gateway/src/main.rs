//! `ironbridge`: the edge gateway daemon.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ironbridge::config::{Config, DEFAULT_CONFIG_PATH, LogFormat};

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
    c.web.listen = SocketAddr::from(([127, 0, 0, 1], 18080));
    if let Some(k) = kafka {
        c.kafka.bootstrap_servers = k.split(',').map(|s| s.trim().to_string()).collect();
    }
    c
}

fn init_logging(level: &str, format: LogFormat) {
    // rumqttd (the internal router) logs ordinary client disconnects as errors, and rskafka logs
    // every retry at info; our own components log what matters, so quiet them unless named.
    let mut level = level.to_string();
    if !level.contains("rumqttd") {
        level.push_str(",rumqttd=off");
    }
    if !level.contains("rskafka") {
        level.push_str(",rskafka=warn");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
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
            let config = if cli.demo {
                demo_config(cli.kafka)
            } else {
                match Config::load(&cli.config) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                }
            };
            init_logging(&config.log.level, config.log.format);
            match run(config, cli.demo) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("ironbridge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: Config, demo: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ironbridge")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(ironbridge::daemon::run(config, demo))
}
