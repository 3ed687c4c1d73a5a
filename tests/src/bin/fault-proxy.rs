//! `fault-proxy --target 127.0.0.1:PORT [--listen 127.0.0.1:PORT]`
//!
//! A TCP fault proxy on loopback (see `ironbridge_e2e::proxy`). Prints `listening <addr>` on start, then
//! reads one command per line on stdin:
//!
//! - `pass` — forward both ways
//! - `cut` — close every connection, close new ones at once
//! - `blackhole` — keep connections open, forward nothing
//! - `slow <ms> [<bytes_per_sec>]` — delay each chunk, optionally limit bandwidth
//! - `status` — print mode, accepted/active connections, bytes forwarded
//!
//! Each command is answered with `ok <mode>` (or `error: <reason>`) on stdout. Exits when stdin closes.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use ironbridge_e2e::{FaultProxy, Mode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const USAGE: &str = "usage: fault-proxy --target 127.0.0.1:PORT [--listen 127.0.0.1:PORT]";

fn parse_args() -> Result<(SocketAddr, SocketAddr)> {
    let mut target = None;
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--target" => {
                let v = args.next().context("--target needs an address")?;
                target = Some(v.parse().with_context(|| format!("--target {v}"))?);
            }
            "--listen" => {
                let v = args.next().context("--listen needs an address")?;
                listen = v.parse().with_context(|| format!("--listen {v}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let target = target.with_context(|| format!("--target is required\n{USAGE}"))?;
    Ok((listen, target))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let (listen, target) = parse_args()?;
    let proxy = FaultProxy::start_on(listen, target).await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("listening {}\n", proxy.addr()).as_bytes())
        .await?;
    out.flush().await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let reply = if line == "status" {
            let (up, down) = proxy.bytes();
            format!(
                "ok {} accepted={} active={} bytes_up={up} bytes_down={down}",
                proxy.mode(),
                proxy.accepted(),
                proxy.active()
            )
        } else {
            match line.parse::<Mode>() {
                Ok(mode) => {
                    proxy.set_mode(mode);
                    format!("ok {mode}")
                }
                Err(e) => format!("error: {e:#}"),
            }
        };
        out.write_all(reply.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    Ok(())
}
