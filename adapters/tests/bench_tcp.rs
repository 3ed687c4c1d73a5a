//! Throughput of our Modbus TCP client against the local simulator, side by side with pymodbus's
//! client doing the same reads (the baseline). Ignored by default; run optimised:
//!
//! ```sh
//! cargo test -p ironbridge-adapters --profile test-opt --test bench_tcp -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use ironbridge_adapters::modbus::pdu::{Op, OpResult};
use ironbridge_adapters::modbus::sim::Simulator;
use ironbridge_adapters::modbus::{Area, Client, Transport};

const N: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn tcp_requests_per_second_vs_pymodbus() {
    let sim = Simulator::new();
    sim.add_unit(1);
    let server = sim
        .spawn_tcp("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let transport = Transport::Tcp {
        address: server.addr().to_string(),
    };
    let python = common::require_pymodbus();
    println!("sequential reads of holding registers, {N} requests, simulator on 127.0.0.1\n");
    println!(
        "| Modbus TCP poll: registers per read | ironbridge req/s | registers/s | pymodbus client req/s | ratio |"
    );
    println!("|---|---|---|---|---|");
    for count in [1u16, 10, 125] {
        let mut client = Client::connect(&transport, 1, Duration::from_secs(1))
            .await
            .expect("connect");
        let op = Op::Read {
            area: Area::HoldingRegister,
            start: 0,
            count,
        };
        for _ in 0..20 {
            client.call(&op).await.expect("warm-up");
        }
        let t0 = Instant::now();
        for _ in 0..N {
            match client.call(&op).await {
                Ok(OpResult::Registers(r)) => assert_eq!(r.len(), usize::from(count)),
                other => panic!("{other:?}"),
            }
        }
        let ours = N as f64 / t0.elapsed().as_secs_f64();
        let baseline: Option<f64> = match &python {
            Some(py) => {
                let out = tokio::process::Command::new(py)
                    .arg(
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("tests/py/pymodbus_client_bench.py"),
                    )
                    .args([
                        server.addr().port().to_string(),
                        N.to_string(),
                        count.to_string(),
                    ])
                    .output()
                    .await
                    .expect("python runs");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            }
            None => None,
        };
        let (base, ratio) = match baseline {
            Some(b) => (format!("{b:.0}"), format!("{:.2}×", ours / b)),
            None => ("- (pymodbus not installed)".into(), "-".into()),
        };
        println!(
            "| {count} | {ours:.0} | {:.0} | {base} | {ratio} |",
            ours * f64::from(count)
        );
    }
    server.shutdown().await;
}
