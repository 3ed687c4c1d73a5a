//! The daemon under a systemd-style notify socket: READY only once the MQTT port is bound,
//! WATCHDOG pings at half the watchdog period with STATUS lines, STOPPING on SIGTERM, exit 0.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn ready_watchdog_status_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (mqtt, web) = (free_port(), free_port());
    let config = dir.path().join("ironbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"notify-test\"\nstate_dir = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\nallow_anonymous = true\n[web]\nlisten = \"127.0.0.1:{web}\"\n",
            dir.path().join("state").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ironbridge"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ironbridge");
    let pid = child.id();

    let mut buf = [0u8; 4096];
    let mut recv = || -> String {
        let n = sock
            .recv(&mut buf)
            .expect("a notification before the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first message: {first:?}"
    );
    assert!(first.contains("STATUS=uplink "), "{first:?}");
    // READY came after the listeners were bound.
    std::net::TcpStream::connect(("127.0.0.1", mqtt)).expect("MQTT port bound at READY");
    std::net::TcpStream::connect(("127.0.0.1", web)).expect("web port bound at READY");

    // Pings every 0.5 s for a 1 s watchdog: expect at least 3 within 2.5 s.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let m = recv();
        if m.lines().any(|l| l == "WATCHDOG=1") {
            assert!(m.contains("STATUS=uplink disconnected"), "{m:?}");
            pings += 1;
        }
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "watchdog pings too slow"
        );
    }

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let mut stopping = false;
    while !stopping {
        stopping = recv().lines().any(|l| l == "STOPPING=1");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code:?}");
}
