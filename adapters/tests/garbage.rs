//! Peers that answer every request with random bytes (plausible headers, random lengths and
//! bodies): the poller must count, report and carry on — never panic or stall.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{PtyPair, devices, require_socat};
use ironbridge_adapters::modbus::{Poller, Reading, Value, WriteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const TAGS: &str = "[[devices.tags]]\nname='a'\naddress='40001'\ntype='f64'\n\
                    [[devices.tags]]\nname='b'\naddress='00001'\ntype='bool'\n\
                    [[devices.tags]]\nname='c'\naddress='30001'\ntype='string'\nlength=8\n\
                    [[devices.tags]]\nname='w'\naddress='40101'\ntype='u16'\naccess='read_write'\n";

async fn exercise(text: String) {
    let (tx, mut rx) = mpsc::channel::<Reading>(4096);
    let poller = Poller::spawn(devices(&text), tx);
    let readings = Arc::new(AtomicU64::new(0));
    let drain = {
        let readings = readings.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                readings.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let it chew on noise for at least 3 s, and until it has polled and reported; the bus task
    // must stay alive throughout. The upper bound only matters on a starved CI machine.
    let start = tokio::time::Instant::now();
    let mut writes = 0;
    loop {
        let r = poller.write("g", "w", Value::U16(1)).await;
        assert_ne!(r, Err(WriteError::Stopped), "bus task died");
        writes += 1;
        let elapsed = start.elapsed();
        let enough = readings.load(Ordering::Relaxed) >= 1 && poller.health()[0].requests >= 10;
        if (elapsed >= Duration::from_secs(3) && enough) || elapsed >= Duration::from_secs(30) {
            break;
        }
    }
    let h = poller.health().remove(0);
    println!("{writes} writes attempted; {h:?}");
    assert!(h.requests >= 10, "{h:?}");
    let errors =
        h.timeouts + h.malformed + h.wrong_unit + h.crc_errors + h.io_errors + h.exceptions;
    assert!(errors >= 5, "{h:?}");
    poller.shutdown().await;
    drain.await.expect("drain");
    assert!(
        readings.load(Ordering::Relaxed) >= 1,
        "no reading reported in 30 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tcp_replies_never_crash_the_poller() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        while let Ok((mut s, _)) = listener.accept().await {
            let seed = noise.next();
            tokio::spawn(async move {
                let mut noise = Noise(seed | 1);
                let mut buf = [0u8; 300];
                while let Ok(n) = s.read(&mut buf).await {
                    if n < 8 {
                        return;
                    }
                    // Keep the transaction id and protocol id half of the time, so the noise
                    // reaches the PDU decoder rather than only the header check.
                    let body_len = (noise.next() % 20) as usize;
                    let mut reply = if noise.next().is_multiple_of(2) {
                        let mut h = buf[..7].to_vec();
                        let len = (body_len + 1) as u16;
                        h[4..6].copy_from_slice(&len.to_be_bytes());
                        h
                    } else {
                        noise.bytes(7)
                    };
                    if noise.next().is_multiple_of(2) {
                        reply.push(buf[7]);
                        reply.extend(noise.bytes(body_len.saturating_sub(1)));
                    } else {
                        reply.extend(noise.bytes(body_len));
                    }
                    if noise.next().is_multiple_of(10) {
                        return; // hang up
                    }
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    exercise(format!(
        "[[devices]]\nname='g'\ntransport={{type='tcp', address='{addr}'}}\npoll_interval_ms=10\ntimeout_ms=100\n{TAGS}"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_rtu_replies_never_crash_the_poller() {
    if require_socat().is_none() {
        return;
    }
    let pty = PtyPair::start().await;
    let path = pty.a.clone();
    tokio::spawn(async move {
        let mut port =
            tokio_serial::SerialStream::open(&tokio_serial::new(&path, 115_200)).expect("open");
        let mut noise = Noise(0xD1B5_4A32_D192_ED03);
        let mut buf = [0u8; 300];
        while let Ok(n) = port.read(&mut buf).await {
            if n == 0 {
                return;
            }
            // Unit and function of the request half of the time, then noise.
            let mut reply = if noise.next().is_multiple_of(2) {
                vec![buf[0], buf[1]]
            } else {
                noise.bytes(2)
            };
            let len = (noise.next() % 12) as usize;
            reply.extend(noise.bytes(len));
            if noise.next().is_multiple_of(4) {
                // Sometimes a valid CRC over the noise, to get past the CRC check.
                let crc = ironbridge_adapters::modbus::pdu::crc16(&reply);
                reply.extend_from_slice(&crc.to_le_bytes());
            }
            if port.write_all(&reply).await.is_err() {
                return;
            }
        }
    });
    exercise(format!(
        "[[devices]]\nname='g'\ntransport={{type='rtu', path='{}', baud=115200}}\npoll_interval_ms=10\ntimeout_ms=100\nretries=0\n{TAGS}",
        pty.b
    ))
    .await;
    drop(pty);
}
