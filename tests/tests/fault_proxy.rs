//! The fault proxy, in-process and as the `fault-proxy` binary, against a real TCP echo server.

use std::io::ErrorKind;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ironbridge_e2e::{EchoServer, FaultProxy, Mode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Upper bound for anything that is expected to happen promptly.
const PROMPT: Duration = Duration::from_secs(5);
/// How long a blackholed read must stay silent for the test to call it stalled.
const STALL: Duration = Duration::from_millis(500);

async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> Result<()> {
    s.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    timeout(PROMPT, s.read_exact(&mut got))
        .await
        .context("echo timed out")??;
    assert_eq!(got, msg);
    Ok(())
}

/// Asserts that the peer closed `s` (EOF or reset) promptly.
async fn assert_closed(s: &mut TcpStream) -> Result<()> {
    let mut b = [0u8; 64];
    match timeout(PROMPT, s.read(&mut b)).await {
        Err(_) => bail!("connection still open {PROMPT:?} after cut"),
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(n)) => bail!("read {n} bytes from a cut connection"),
        Ok(Err(e)) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
            Ok(())
        }
        Ok(Err(e)) => Err(e.into()),
    }
}

/// Asserts that nothing arrives on `s` for [`STALL`] (the read times out).
async fn assert_stalled(s: &mut TcpStream) -> Result<()> {
    let mut b = [0u8; 64];
    match timeout(STALL, s.read(&mut b)).await {
        Err(_elapsed) => Ok(()),
        Ok(r) => bail!("expected a stalled read, got {r:?}"),
    }
}

#[tokio::test]
async fn pass_forwards_both_ways_with_bounded_buffers() -> Result<()> {
    let echo = EchoServer::start().await?;
    let proxy = FaultProxy::start(echo.addr()).await?;
    let mut s = TcpStream::connect(proxy.addr()).await?;
    echo_roundtrip(&mut s, b"hello").await?;

    // 4 MiB through 16 KiB buffers, written and read concurrently.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.into_split();
    let expected = data.clone();
    let writer = tokio::spawn(async move { w.write_all(&data).await.map(|_| w) });
    let mut got = vec![0u8; expected.len()];
    timeout(Duration::from_secs(30), r.read_exact(&mut got))
        .await
        .context("4 MiB echo timed out")??;
    assert!(got == expected, "4 MiB echo differs");
    let _w = writer.await??;
    assert_eq!(proxy.bytes(), (4 * 1024 * 1024 + 5, 4 * 1024 * 1024 + 5));
    assert_eq!(proxy.active(), 1);
    Ok(())
}

#[tokio::test]
async fn cut_closes_existing_and_new_connections_then_pass_recovers() -> Result<()> {
    let echo = EchoServer::start().await?;
    let proxy = FaultProxy::start(echo.addr()).await?;
    let mut s = TcpStream::connect(proxy.addr()).await?;
    echo_roundtrip(&mut s, b"before").await?;

    proxy.set_mode(Mode::Cut);
    assert_closed(&mut s).await?;
    // A new connection is accepted by the kernel, then closed by the proxy at once.
    let mut s2 = TcpStream::connect(proxy.addr()).await?;
    assert_closed(&mut s2).await?;

    proxy.set_mode(Mode::Pass);
    let mut s3 = TcpStream::connect(proxy.addr()).await?;
    echo_roundtrip(&mut s3, b"after").await?;
    Ok(())
}

#[tokio::test]
async fn blackhole_stalls_existing_and_new_connections_then_pass_delivers() -> Result<()> {
    let echo = EchoServer::start().await?;
    let proxy = FaultProxy::start(echo.addr()).await?;
    let mut s = TcpStream::connect(proxy.addr()).await?;
    echo_roundtrip(&mut s, b"before").await?;

    proxy.set_mode(Mode::Blackhole);
    s.write_all(b"held").await?;
    assert_stalled(&mut s).await?;
    let mut s2 = TcpStream::connect(proxy.addr()).await?;
    s2.write_all(b"new").await?;
    assert_stalled(&mut s2).await?;
    assert_eq!(proxy.active(), 2, "blackhole keeps both connections open");

    // Healing the partition delivers what was held, on both connections.
    proxy.set_mode(Mode::Pass);
    let mut got = [0u8; 4];
    timeout(PROMPT, s.read_exact(&mut got)).await??;
    assert_eq!(&got, b"held");
    let mut got = [0u8; 3];
    timeout(PROMPT, s2.read_exact(&mut got)).await??;
    assert_eq!(&got, b"new");
    Ok(())
}

#[tokio::test]
async fn cut_while_blackholed_closes() -> Result<()> {
    let echo = EchoServer::start().await?;
    let proxy = FaultProxy::start(echo.addr()).await?;
    let mut s = TcpStream::connect(proxy.addr()).await?;
    echo_roundtrip(&mut s, b"x").await?;
    proxy.set_mode(Mode::Blackhole);
    s.write_all(b"y").await?;
    assert_stalled(&mut s).await?;
    proxy.set_mode(Mode::Cut);
    assert_closed(&mut s).await
}

#[tokio::test]
async fn slow_adds_delay_and_limits_bandwidth() -> Result<()> {
    let echo = EchoServer::start().await?;
    let proxy = FaultProxy::start(echo.addr()).await?;
    let mut s = TcpStream::connect(proxy.addr()).await?;

    let t = Instant::now();
    echo_roundtrip(&mut s, b"ping").await?;
    let fast = t.elapsed();

    // 150 ms per chunk, each way: a round trip takes at least 300 ms.
    proxy.set_mode(Mode::slow(Duration::from_millis(150)));
    let t = Instant::now();
    echo_roundtrip(&mut s, b"ping").await?;
    let slow = t.elapsed();
    assert!(
        slow >= Duration::from_millis(300),
        "slow round trip took {slow:?}"
    );
    assert!(slow > fast, "slow {slow:?} vs pass {fast:?}");

    // 64 KiB at 128 KiB/s each way: the upstream direction alone sleeps 0.5 s in total (the two directions
    // overlap, so the round trip is a little over that).
    proxy.set_mode(Mode::Slow {
        delay: Duration::ZERO,
        bytes_per_sec: Some(128 * 1024),
    });
    let data = vec![7u8; 64 * 1024];
    let t = Instant::now();
    let (mut r, mut w) = s.into_split();
    let d = data.clone();
    let writer = tokio::spawn(async move { w.write_all(&d).await.map(|_| w) });
    let mut got = vec![0u8; data.len()];
    timeout(Duration::from_secs(10), r.read_exact(&mut got)).await??;
    let _w = writer.await??;
    let took = t.elapsed();
    assert_eq!(got, data);
    assert!(
        took >= Duration::from_millis(500),
        "64 KiB round trip at 128 KiB/s took {took:?}"
    );
    Ok(())
}

#[test]
fn mode_commands_parse() {
    assert_eq!("pass".parse::<Mode>().expect("pass"), Mode::Pass);
    assert_eq!(" cut ".parse::<Mode>().expect("cut"), Mode::Cut);
    assert_eq!(
        "blackhole".parse::<Mode>().expect("blackhole"),
        Mode::Blackhole
    );
    assert_eq!(
        "slow 250".parse::<Mode>().expect("slow"),
        Mode::slow(Duration::from_millis(250))
    );
    assert_eq!(
        "slow 0 1000".parse::<Mode>().expect("slow bw"),
        Mode::Slow {
            delay: Duration::ZERO,
            bytes_per_sec: Some(1000)
        }
    );
    for bad in ["", "slow", "slow x", "slow 1 0", "pass now", "drop"] {
        assert!(bad.parse::<Mode>().is_err(), "{bad:?} should not parse");
    }
    assert_eq!(Mode::slow(Duration::from_millis(5)).to_string(), "slow 5");
}

#[tokio::test]
async fn rejects_non_loopback() {
    let target = "192.0.2.1:9".parse().expect("addr");
    assert!(FaultProxy::start(target).await.is_err());
}

/// The binary: prints its address, obeys stdin commands, exits when stdin closes.
#[tokio::test]
async fn binary_takes_commands_on_stdin() -> Result<()> {
    let echo = EchoServer::start().await?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
        .arg("--target")
        .arg(echo.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let first = timeout(PROMPT, out.next_line())
        .await??
        .context("no output")?;
    let addr: std::net::SocketAddr = first
        .strip_prefix("listening ")
        .with_context(|| format!("unexpected first line {first:?}"))?
        .parse()?;

    let mut s = TcpStream::connect(addr).await?;
    echo_roundtrip(&mut s, b"via binary").await?;

    stdin.write_all(b"cut\n").await?;
    assert_eq!(
        timeout(PROMPT, out.next_line()).await??.as_deref(),
        Some("ok cut")
    );
    assert_closed(&mut s).await?;

    stdin.write_all(b"bogus\n").await?;
    let reply = timeout(PROMPT, out.next_line()).await??.unwrap_or_default();
    assert!(reply.starts_with("error: "), "{reply}");

    stdin.write_all(b"slow 100\n").await?;
    assert_eq!(
        timeout(PROMPT, out.next_line()).await??.as_deref(),
        Some("ok slow 100")
    );
    let mut s = TcpStream::connect(addr).await?;
    let t = Instant::now();
    echo_roundtrip(&mut s, b"slow").await?;
    assert!(t.elapsed() >= Duration::from_millis(200));

    stdin.write_all(b"status\n").await?;
    let status = timeout(PROMPT, out.next_line()).await??.unwrap_or_default();
    assert!(
        status.starts_with("ok slow 100 accepted=2 active=1"),
        "{status}"
    );

    drop(stdin);
    let status = timeout(PROMPT, child.wait()).await??;
    assert!(status.success(), "fault-proxy exited with {status}");
    Ok(())
}
