//! Modbus RTU over a `socat` pseudo-terminal pair: our RTU master on one end, on the other
//! the simulator's RTU server (tokio-modbus) or a hand-written responder that misbehaves.
//! Two unit ids share the line; a dead third unit must not starve them.

mod common;

use std::time::Duration;

use common::{PtyPair, devices, require_socat, wait_all_good, wait_for};
use ironbridge_adapters::modbus::pdu::{crc16, rtu_crc_ok};
use ironbridge_adapters::modbus::sim::Simulator;
use ironbridge_adapters::modbus::{Area, BadReason, LinkState, Poller, Quality, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn rtu_device(name: &str, path: &str, unit: u8, extra: &str, tags: &str) -> String {
    format!(
        "[[devices]]\nname = '{name}'\ntransport = {{ type = 'rtu', path = '{path}', baud = 19200, parity = 'even' }}\n\
         unit_id = {unit}\n{extra}\n{tags}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_units_share_a_line_and_a_dead_unit_does_not_starve_them() {
    if require_socat().is_none() {
        return;
    }
    let pty = PtyPair::start().await;
    let sim = Simulator::new();
    sim.add_unit(1);
    sim.add_unit(2);
    sim.set_registers(1, Area::HoldingRegister, 0, &[0x42F6, 0xE979]);
    sim.set_registers(2, Area::InputRegister, 10, &[321]);
    sim.set_bits(2, Area::Coil, 5, &[true]);
    let server = sim.spawn_rtu(&pty.a, 19200).expect("RTU server on pty");

    let tags1 = "[[devices.tags]]\nname='temp'\naddress='40001'\ntype='f32'\n\
                 [[devices.tags]]\nname='far'\naddress='40201'\ntype='u16'\n\
                 [[devices.tags]]\nname='sp'\naddress='40101'\ntype='u16'\naccess='read_write'\nverify_write=true\n";
    let tags2 = "[[devices.tags]]\nname='flow'\naddress='30011'\ntype='u16'\nscale=0.5\n\
                 [[devices.tags]]\nname='run'\naddress='00006'\ntype='bool'\n";
    let tags3 = "[[devices.tags]]\nname='x'\naddress='40001'\ntype='u16'\n";
    let text = format!(
        "{}{}{}",
        rtu_device(
            "meter1",
            &pty.b,
            1,
            "poll_interval_ms = 100\ntimeout_ms = 300",
            tags1
        ),
        rtu_device(
            "meter2",
            &pty.b,
            2,
            "poll_interval_ms = 100\ntimeout_ms = 300",
            tags2
        ),
        rtu_device(
            "dead3",
            &pty.b,
            3,
            "poll_interval_ms = 100\ntimeout_ms = 200\nretries = 2",
            tags3
        ),
    );
    let (tx, mut rx) = mpsc::channel(4096);
    let poller = Poller::spawn(devices(&text), tx);
    let got1 = wait_all_good(
        &mut rx,
        "meter1",
        &["temp", "far", "sp"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got1["temp"], Value::F32(123.456));
    let r = wait_for(&mut rx, Duration::from_secs(10), "dead unit", |r| {
        r.device == "dead3"
    })
    .await;
    assert_eq!(r.quality, Quality::Bad(BadReason::Timeout));
    sim.set_registers(2, Area::InputRegister, 10, &[322]);
    let r = wait_for(&mut rx, Duration::from_secs(10), "meter2 change", |r| {
        r.device == "meter2" && r.tag == "flow" && r.value == Some(Value::F64(161.0))
    })
    .await;
    assert!(r.quality.is_good());

    // Over a 2 s window, both live units keep being polled close to their 100 ms interval.
    let before = poller.health();
    let window = Duration::from_secs(2);
    let _ = tokio::time::timeout(window, async { while rx.recv().await.is_some() {} }).await;
    let after = poller.health();
    let polls = |i: usize| after[i].polls - before[i].polls;
    println!(
        "in {window:?}: unit 1 {} polls, unit 2 {} polls, dead unit 3 {} polls ({} timeouts in all)",
        polls(0),
        polls(1),
        polls(2),
        after[2].timeouts
    );
    assert!(polls(0) >= 8, "unit 1 starved: {} polls", polls(0));
    assert!(polls(1) >= 8, "unit 2 starved: {} polls", polls(1));
    // The dead unit backs off and is tried without retries.
    assert!(polls(2) <= 6, "dead unit polled {} times", polls(2));
    assert_eq!(after[2].state, LinkState::Failing);
    assert_eq!(after[0].state, LinkState::Ok);
    assert_eq!(after[0].crc_errors + after[1].crc_errors, 0);

    // A write on the shared line, verified by reading back.
    let out = poller
        .write("meter1", "sp", Value::U16(777))
        .await
        .expect("RTU write");
    assert!(out.verified);
    assert_eq!(sim.registers(1, Area::HoldingRegister, 100, 1), vec![777]);

    // The dead unit comes alive: it is picked up again (after its backoff, at most 10 s).
    sim.add_unit(3);
    sim.set_registers(3, Area::HoldingRegister, 0, &[33]);
    let r = wait_for(&mut rx, Duration::from_secs(15), "unit 3 alive", |r| {
        r.device == "dead3" && r.quality.is_good()
    })
    .await;
    assert_eq!(r.value, Some(Value::U16(33)));
    poller.shutdown().await;
    server.shutdown().await;
}

/// A responder on the far end of the line: answers reads of holding registers of unit 1 with
/// the value 0x1234, but misbehaves for the first requests as `faults` says. Records the
/// silence before each request (time since its previous reply).
async fn responder(
    path: String,
    mut faults: Vec<&'static str>,
    gaps: mpsc::UnboundedSender<Duration>,
) {
    let mut port =
        tokio_serial::SerialStream::open(&tokio_serial::new(&path, 19200)).expect("open pty end");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let mut last_reply: Option<Instant> = None;
    loop {
        let n = match port.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if buf.is_empty()
            && let Some(t) = last_reply
        {
            let _ = gaps.send(t.elapsed());
        }
        buf.extend_from_slice(&chunk[..n]);
        // Read requests are 8 bytes.
        while buf.len() >= 8 {
            let req: Vec<u8> = buf.drain(..8).collect();
            assert!(rtu_crc_ok(&req), "request CRC");
            let count = u16::from_be_bytes([req[4], req[5]]) as usize;
            let mut reply = vec![req[0], req[1], (count * 2) as u8];
            for _ in 0..count {
                reply.extend_from_slice(&[0x12, 0x34]);
            }
            let crc = crc16(&reply);
            reply.extend_from_slice(&crc.to_le_bytes());
            let fault = if faults.is_empty() {
                ""
            } else {
                faults.remove(0)
            };
            match fault {
                "crc" => {
                    let last = reply.len() - 1;
                    reply[last] ^= 0xFF;
                }
                "unit" => {
                    reply[0] = 9;
                    let body = reply.len() - 2;
                    let crc = crc16(&reply[..body]);
                    reply[body..].copy_from_slice(&crc.to_le_bytes());
                }
                "garbage" => reply = vec![req[0], 0x47, 1, 2, 3, 4, 5],
                "short" => {
                    // Byte count says one register fewer than asked.
                    reply = vec![req[0], req[1], (count * 2 - 2) as u8];
                    for _ in 1..count {
                        reply.extend_from_slice(&[0x12, 0x34]);
                    }
                    let crc = crc16(&reply);
                    reply.extend_from_slice(&crc.to_le_bytes());
                }
                "silent" => continue,
                _ => {}
            }
            if port.write_all(&reply).await.is_err() {
                return;
            }
            last_reply = Some(Instant::now());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc_errors_wrong_unit_garbage_and_short_frames_are_counted() {
    if require_socat().is_none() {
        return;
    }
    let pty = PtyPair::start().await;
    let (gap_tx, mut gap_rx) = mpsc::unbounded_channel();
    let faults = vec!["crc", "unit", "garbage", "short", "silent"];
    tokio::spawn(responder(pty.a.clone(), faults, gap_tx));
    // Two blocks per cycle (addresses far apart): requests go back to back on the line.
    let tags = "[[devices.tags]]\nname='a'\naddress='40001'\ntype='u16'\n\
                [[devices.tags]]\nname='b'\naddress='40501'\ntype='u16'\n";
    let text = rtu_device(
        "m",
        &pty.b,
        1,
        "poll_interval_ms = 50\ntimeout_ms = 250\nretries = 0",
        tags,
    );
    let (tx, mut rx) = mpsc::channel(256);
    let poller = Poller::spawn(devices(&text), tx);
    let mut seen = Vec::new();
    let r = wait_for(&mut rx, Duration::from_secs(15), "good after faults", |r| {
        if !r.quality.is_good() {
            seen.push(r.quality.clone());
        }
        r.quality.is_good() && r.tag == "a" && seen.len() >= 4
    })
    .await;
    assert_eq!(r.value, Some(Value::U16(0x1234)));
    println!("bad qualities seen: {seen:?}");
    assert!(seen.contains(&Quality::Bad(BadReason::Crc)), "{seen:?}");
    assert!(
        seen.contains(&Quality::Bad(BadReason::WrongUnit)),
        "{seen:?}"
    );
    assert!(seen.contains(&Quality::Bad(BadReason::Timeout)), "{seen:?}");
    assert!(
        seen.iter()
            .filter(|q| matches!(q, Quality::Bad(BadReason::Malformed(_))))
            .count()
            >= 2,
        "{seen:?}"
    );
    let h = &poller.health()[0];
    println!("{h:?}");
    assert_eq!((h.crc_errors, h.wrong_unit, h.timeouts), (1, 1, 1), "{h:?}");
    assert!(h.malformed >= 2, "{h:?}");
    assert_eq!(h.state, LinkState::Ok);
    // Inter-frame silence: 3.5 characters at 19200 8E1 = 2.0 ms before every request.
    let mut min_gap = Duration::MAX;
    let mut n = 0;
    while let Ok(g) = gap_rx.try_recv() {
        min_gap = min_gap.min(g);
        n += 1;
    }
    println!("{n} request gaps observed, shortest {min_gap:?}");
    assert!(n >= 6);
    assert!(
        min_gap >= Duration::from_micros(1900),
        "silence {min_gap:?}"
    );
    poller.shutdown().await;
}
