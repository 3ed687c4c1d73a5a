//! Loopback networking helpers: free ports, readiness, a TCP echo server.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// The loopback address every peer of these tests listens on.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it; there is a small race until the
/// caller binds it, so starters that hand it to a child process retry on a clash).
pub fn free_port() -> Result<u16> {
    let l = StdTcpListener::bind((LOCALHOST, 0)).context("bind 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until `addr` accepts a TCP connection, retrying with a short backoff, up to `limit`.
pub async fn wait_for_port(addr: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut backoff = Duration::from_millis(5);
    loop {
        match timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if Instant::now() >= deadline => {
                bail!("{addr} did not accept connections within {limit:?}: {e}")
            }
            Err(_) if Instant::now() >= deadline => {
                bail!("{addr} did not accept connections within {limit:?}: connect timed out")
            }
            _ => {}
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}

/// A TCP echo server on 127.0.0.1 (each connection echoes what it reads); stops on drop.
pub struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start() -> Result<EchoServer> {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .context("bind echo server")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut s, _)) = accepted else { continue };
                        conns.spawn(async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                        });
                    }
                    // Reap finished connections so the set stays small.
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(EchoServer { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        // Aborting the accept task drops the JoinSet, which aborts every connection.
        self.task.abort();
    }
}
