//! The web port under hostile clients (issue 19, item 1), against the real daemon on loopback:
//! hundreds of silent TCP connections (HTTPS and the port-80 redirect), slow-header clients that
//! finished their TLS handshake, and idle keep-alive connections, each group from its own
//! loopback address (127.0.0.2-5), while a browser-like client on 127.0.0.1 still gets
//! `/healthz`, logs in and is redirected, each within 1 s. Afterwards `/metrics` shows the
//! refusals and the deadlines that were hit.
//!
//! Before the fix: 64 handshake slots taken before accept and held for 10 s, no header or idle
//! timeout, no connection cap — the first 100 silent sockets kept `/healthz` unanswered for 8 s.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ironbridge_e2e::gateway::{
    ADMIN_PASSWORD, ADMIN_USER, Gateway, GatewayOptions, metric, prepare,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

const SILENT_HTTPS: usize = 200;
const SLOW_HEADER: usize = 100;
const IDLE_KEEPALIVE: usize = 100;
const SILENT_HTTP: usize = 200;
/// What the legitimate client gets for each request while the attack runs.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    Ok(timeout(Duration::from_secs(5), s.connect(to)).await??)
}

/// A TLS client that accepts any certificate: the attacker does not care whom it talks to.
fn insecure_tls() -> Result<TlsConnector> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Opens up to `n` connections from `src` with `open`; returns those the daemon let through
/// (the rest it closed or refused, which is the point).
async fn hold<T, F, Fut>(n: usize, open: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut held = Vec::new();
    for _ in 0..n {
        if let Ok(c) = open().await {
            held.push(c);
        }
    }
    held
}

/// One timed request of the legitimate client.
async fn timed<T>(what: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let t = Instant::now();
    let r = timeout(ANSWER_WITHIN, f)
        .await
        .with_context(|| format!("{what}: no answer within {ANSWER_WITHIN:?} under attack"))??;
    eprintln!("{what}: {:?}", t.elapsed());
    Ok(r)
}

async fn legit_round(gw: &Gateway, redirect: &reqwest::Client) -> Result<()> {
    let client = gw.client()?;
    let code = timed("GET /healthz", async {
        Ok(client
            .get(gw.url("/healthz"))
            .send()
            .await?
            .status()
            .as_u16())
    })
    .await?;
    ensure!(code == 200, "/healthz answered {code}");
    let login = timed("POST /api/login", async {
        let r = client
            .post(gw.url("/api/login"))
            .json(&serde_json::json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD}))
            .send()
            .await?;
        let code = r.status().as_u16();
        let cookie = ironbridge_e2e::gateway::session_cookie(r.headers());
        Ok((code, cookie))
    })
    .await?;
    ensure!(login.0 == 200, "login answered {}", login.0);
    let cookie = login.1.context("no session cookie")?;
    let code = timed("GET /api/status (session)", async {
        Ok(client
            .get(gw.url("/api/status"))
            .header("cookie", format!("ib_session={cookie}"))
            .send()
            .await?
            .status()
            .as_u16())
    })
    .await?;
    ensure!(code == 200, "/api/status answered {code}");
    let code = timed("GET http:// (redirect)", async {
        Ok(redirect
            .get(format!("http://{}/dashboard", gw.http_addr()))
            .send()
            .await?
            .status()
            .as_u16())
    })
    .await?;
    ensure!(code == 308, "redirect answered {code}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn web_port_holds_against_silent_slow_and_idle_clients() -> Result<()> {
    prepare().await?;
    let gw = Gateway::start(GatewayOptions {
        http_redirect: true,
        ..GatewayOptions::default()
    })
    .await?;
    let web = gw.web_addr();
    let http = gw.http_addr();
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()?;
    legit_round(&gw, &redirect)
        .await
        .context("before the attack")?;
    let tls = insecure_tls()?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;

    // Silent sockets on both listeners.
    let silent_https = hold(SILENT_HTTPS, || {
        connect_from(Ipv4Addr::new(127, 0, 0, 2), web)
    })
    .await;
    let silent_http = hold(SILENT_HTTP, || {
        connect_from(Ipv4Addr::new(127, 0, 0, 5), http)
    })
    .await;
    // Slow headers after a finished handshake: half a request head, then nothing.
    let slow = hold(SLOW_HEADER, || {
        let (tls, name) = (tls.clone(), name.clone());
        async move {
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 3), web).await?;
            let mut t = timeout(Duration::from_secs(2), tls.connect(name, s)).await??;
            t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await?;
            t.flush().await?;
            Ok(t)
        }
    })
    .await;
    // Idle keep-alive: one complete request, then silence.
    let idle = hold(IDLE_KEEPALIVE, || {
        let (tls, name) = (tls.clone(), name.clone());
        async move {
            let s = connect_from(Ipv4Addr::new(127, 0, 0, 4), web).await?;
            let mut t = timeout(Duration::from_secs(2), tls.connect(name, s)).await??;
            t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await?;
            let mut buf = [0u8; 4096];
            let n = timeout(Duration::from_secs(2), t.read(&mut buf)).await??;
            ensure!(n > 0, "no response");
            Ok(t)
        }
    })
    .await;
    eprintln!(
        "holding: {} silent https, {} silent http, {} slow-header, {} idle keep-alive",
        silent_https.len(),
        silent_http.len(),
        slow.len(),
        idle.len()
    );

    // Past the old 10-s handshake hold and the header timeout, the legitimate client keeps
    // being served within 1 s.
    let until = Instant::now() + Duration::from_secs(12);
    let mut rounds = 0;
    while Instant::now() < until {
        legit_round(&gw, &redirect)
            .await
            .with_context(|| format!("round {rounds} under attack\n{}", gw.log_tail()))?;
        rounds += 1;
    }
    ensure!(rounds >= 3, "only {rounds} rounds");

    let m = gw.metrics().await?;
    let get = |s: &str| metric(&m, s).unwrap_or(0.0);
    for l in ["https", "http"] {
        let refused = get(&format!(
            "ironbridge_web_connections_refused_address_cap_total{{listener=\"{l}\"}}"
        ));
        ensure!(
            refused > 0.0,
            "{l}: no connection refused by the per-address cap:\n{m}"
        );
    }
    ensure!(
        get("ironbridge_web_tls_handshake_timeouts_total{listener=\"https\"}") > 0.0,
        "silent sockets were not timed out in the handshake:\n{m}"
    );
    ensure!(
        get("ironbridge_web_header_timeouts_total{listener=\"https\"}") > 0.0,
        "slow-header/idle connections were not timed out:\n{m}"
    );
    ensure!(
        get("ironbridge_web_header_timeouts_total{listener=\"http\"}") > 0.0,
        "silent port-80 connections were not timed out:\n{m}"
    );
    let open = get("ironbridge_web_connections_open{listener=\"https\"}");
    ensure!(open <= 256.0, "{open} open connections, above the cap");
    drop((silent_https, silent_http, slow, idle));
    Ok(())
}
