//! Bad input against the real `ironbridge` binary: a broken config file is refused with exit code 2
//! and an error naming the field and the line; wrong MQTT credentials are refused while the daemon
//! keeps serving; a Kafka listener with an untrusted TLS certificate shows as a clear error while
//! the messages stay buffered (and arrive once the uplink is fixed); a route to a topic that does not
//! exist dead-letters its records, visibly, while the other topics keep flowing.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use ironbridge_e2e::gateway::{
    Delivery, Gateway, GatewayOptions, Progress, Route, StreamPublisher, StreamSpec, TlsListener,
    assert_complete, hash_password, metric, mosquitto_once, num, prepare, run_ironbridge,
    self_signed_cert, text, toml_str, within,
};
use ironbridge_e2e::{External, KafkaTool, Storage, Tansu, require};

/// The valid file the config cases start from; each case replaces one line.
fn base_config(state: &Path) -> Vec<String> {
    [
        "# ironbridge e2e: one mistake per file",
        "[gateway]",
        "id = \"gw\"",
        &format!("state_dir = {}", toml_str(&state.to_string_lossy())),
        "",
        "[buffer]",
        "max_bytes = \"64 MiB\"",
        "segment_bytes = \"4 MiB\"",
        "",
        "[web]",
        "listen = \"127.0.0.1:1\"",
        "",
        "[mqtt]",
        "listen = \"127.0.0.1:1\"",
        "allow_anonymous = true",
        "",
        "[kafka]",
        "bootstrap_servers = [\"127.0.0.1:9\"]",
        "",
        "[[kafka.routes]]",
        "filter = \"a/#\"",
        "topic = \"a\"",
        "",
        "[[kafka.routes]]",
        "filter = \"b/#\"",
        "topic = \"b\"",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

/// (line to replace, its new text, line the error must name, field (or words) it must name)
const CASES: &[(usize, &str, usize, &str)] = &[
    (7, "max_bytes = \"lots\"", 7, "buffer.max_bytes"),
    (15, "allow_anonymus = true", 15, "allow_anonymus"),
    (26, "topic = \"b topic\"", 26, "kafka.routes[1].topic"),
    (8, "segment_bytes = \"64 MiB\"", 7, "buffer.max_bytes"),
    (11, "listen = \"localhost\"", 11, "web.listen"),
    (
        18,
        "bootstrap_servers = [\"kafka-1\"]",
        18,
        "kafka.bootstrap_servers[0]",
    ),
    (21, "filter = \"a/#/b\"", 21, "kafka.routes[0].filter"),
    (3, "id = \"gw", 3, "TOML syntax"),
    (16, "users = { plc = \"secret\" }", 16, "mqtt.users.plc"),
];

#[tokio::test]
async fn malformed_config_exits_2_naming_field_and_line() -> Result<()> {
    prepare().await?;
    within(Duration::from_secs(120), "config cases", async {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let good = dir.path().join("good.toml");
        std::fs::write(&good, base_config(&state).join("\n"))?;
        let good_s = good.to_string_lossy().to_string();
        let out = run_ironbridge(&["check-config", &good_s], b"", Duration::from_secs(20)).await?;
        ensure!(
            out.status.code() == Some(0) && String::from_utf8_lossy(&out.stdout).contains("OK"),
            "the base config must be valid: {out:?}"
        );
        for (i, &(line, replacement, want_line, field)) in CASES.iter().enumerate() {
            let mut lines = base_config(&state);
            lines[line - 1] = replacement.to_string();
            let file = dir.path().join(format!("bad{i}.toml"));
            std::fs::write(&file, lines.join("\n"))?;
            let f = file.to_string_lossy().to_string();
            let want = format!("{f}:{want_line}: ");
            for args in [vec!["check-config", f.as_str()], vec!["--config", f.as_str()]] {
                let out = run_ironbridge(&args, b"", Duration::from_secs(20)).await?;
                let err = String::from_utf8_lossy(&out.stderr);
                ensure!(
                    out.status.code() == Some(2),
                    "`ironbridge {}` with {replacement:?} on line {line}: exit {:?}, stderr:\n{err}",
                    args.join(" "),
                    out.status.code()
                );
                let named = err
                    .lines()
                    .any(|l| l.starts_with(&want) && l.contains(field));
                ensure!(
                    named,
                    "`ironbridge {}` with {replacement:?} on line {line}: the error should start \
                     with {want:?} and name {field:?}; stderr:\n{err}",
                    args.join(" ")
                );
            }
        }
        // A refused config never got as far as opening the buffer.
        ensure!(
            !state.exists(),
            "a refused configuration created {}",
            state.display()
        );
        eprintln!(
            "config: {} broken files, each refused by check-config and at startup with exit 2",
            CASES.len()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_mqtt_credentials_are_refused_and_the_daemon_keeps_serving() -> Result<()> {
    if !require(&[External::MosquittoClients])? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(120), "credentials", async {
        let hash = hash_password("s3cret pw").await?;
        let gw = Gateway::start(GatewayOptions {
            allow_anonymous: false,
            users: vec![("plc7".into(), hash)],
            ..Default::default()
        })
        .await?;
        let port = gw.mqtt_port();
        let good = ["-q", "1", "-u", "plc7", "-P", "s3cret pw"];
        let out = mosquitto_once(port, "auth/ok", "first", &good).await?;
        ensure!(out.status.success(), "good credentials refused: {out:?}");
        let refused: [(&str, Vec<&str>); 5] = [
            ("wrong password", vec!["-u", "plc7", "-P", "guess"]),
            ("unknown user", vec!["-u", "intruder", "-P", "s3cret pw"]),
            ("no credentials", vec![]),
            (
                "wrong password, MQTT 5",
                vec!["-V", "mqttv5", "-u", "plc7", "-P", "x"],
            ),
            ("no credentials, MQTT 5", vec!["-V", "mqttv5"]),
        ];
        for (what, args) in &refused {
            let mut a = vec!["-q", "1"];
            a.extend(args);
            let out = mosquitto_once(port, "auth/bad", what, &a).await?;
            let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
            ensure!(
                !out.status.success()
                    && (err.contains("refused")
                        || err.contains("not authori")
                        || err.contains("bad user")),
                "{what}: mosquitto_pub should be refused: {out:?}"
            );
        }
        let out = mosquitto_once(port, "auth/ok", "second", &good).await?;
        ensure!(
            out.status.success(),
            "good credentials refused later: {out:?}"
        );
        let mut gw = gw;
        ensure!(gw.is_running(), "the daemon exited:\n{}", gw.log_tail());
        let (code, health) = gw.healthz().await?;
        ensure!(code == 200, "/healthz {code}: {health}");
        let s = gw.status().await?;
        ensure!(
            num(&s, "/mqtt/auth_failures") == Some(refused.len() as u64),
            "auth failures: {s}"
        );
        // Only the two accepted publishes reached the buffer.
        ensure!(
            num(&s, "/mqtt/publishes_appended") == Some(2)
                && num(&s, "/buffer/next_offset") == Some(2),
            "{s}"
        );
        let m = gw.metrics().await?;
        ensure!(
            metric(&m, "ironbridge_mqtt_auth_failures_total") == Some(refused.len() as f64),
            "metrics:\n{m}"
        );
        eprintln!(
            "credentials: {} refused connections, the daemon kept serving",
            refused.len()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_kafka_certificate_is_a_clear_error_and_loses_nothing() -> Result<()> {
    if !require(&[External::Tansu, External::PythonVenv])? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "TLS", untrusted_tls()).await
}

async fn untrusted_tls() -> Result<()> {
    let p = Progress::new("tls");
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("mqtt", 2).await?;
    // The listener's certificate is self-signed; the gateway trusts another CA.
    let (cert, key) = self_signed_cert(dir.path(), "listener", "kafka.test", false).await?;
    let (trusted, _) = self_signed_cert(dir.path(), "plant-ca", "Plant CA", true).await?;
    let mut listener = TlsListener::start(&cert, &key, tansu.addr()).await?;
    let tls_opts = GatewayOptions {
        id: "e2e-tls".into(),
        kafka: Some(listener.addr().to_string()),
        extra_toml: format!(
            "[kafka.tls]\nenabled = true\nca_file = {}\n",
            toml_str(&trusted.to_string_lossy())
        ),
        ..Default::default()
    };
    let mut gw = Gateway::start(tls_opts.clone()).await?;
    let topics = vec!["tls/dev0".to_string(), "tls/dev1".to_string()];
    let spec = StreamSpec::new(gw.mqtt_port(), "tls-dev", topics.clone(), 50);
    let r = StreamPublisher::spawn(&spec)?
        .finish(Duration::from_secs(30))
        .await?;
    ensure!(
        r.acked.len() == 100 && !r.broken,
        "publisher: {} acknowledged",
        r.acked.len()
    );
    let s = gw
        .wait_status("a TLS error in the status", Duration::from_secs(30), |s| {
            text(s, "/uplink/state") == Some("error") && num(s, "/uplink/lag_records") == Some(100)
        })
        .await?;
    let reason = text(&s, "/uplink/reason")
        .unwrap_or_default()
        .to_lowercase();
    let last = text(&s, "/uplink/last_error/message")
        .unwrap_or_default()
        .to_lowercase();
    p.note(format!("status: error: {reason}"));
    // Signed by nobody the gateway trusts: webpki's UnknownIssuer.
    ensure!(
        reason.contains("certificate")
            && reason.contains("unknownissuer")
            && last.contains("certificate"),
        "the status should say the certificate is the problem: {s}"
    );
    ensure!(
        num(&s, "/uplink/forwarded_records") == Some(0) && num(&s, "/buffer/records") == Some(100),
        "{s}"
    );
    let problems = s.get("problems").map(|v| v.to_string()).unwrap_or_default();
    ensure!(
        problems.to_lowercase().contains("certificate"),
        "problems: {problems}"
    );
    let m = gw.metrics().await?;
    ensure!(
        metric(&m, "ironbridge_uplink_state{state=\"error\"}") == Some(1.0)
            && metric(&m, "ironbridge_uplink_lag_records") == Some(100.0),
        "metrics:\n{m}"
    );
    // Buffering is not a failure of the gateway.
    let (code, health) = gw.healthz().await?;
    ensure!(code == 200, "/healthz {code}: {health}");
    ensure!(listener.is_running(), "the TLS listener died");

    // Fix the uplink (plain, straight to the broker) and restart: nothing was lost.
    let exit = gw.stop().await?;
    ensure!(exit.success(), "SIGTERM exit: {exit}");
    gw.set_options(GatewayOptions {
        kafka: Some(tansu.bootstrap()),
        extra_toml: String::new(),
        ..tls_opts
    });
    gw.restart().await?;
    gw.wait_forwarded(Duration::from_secs(60)).await?;
    let d = Delivery::analyse(kafka.consume("mqtt", None).await?)?;
    assert_complete(&d, &topics, 0, 50)?;
    p.note(format!(
        "tls: 100 messages buffered behind an untrusted certificate, all delivered after the fix ({} duplicates)",
        d.duplicates
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_to_a_missing_topic_dead_letters_and_others_keep_flowing() -> Result<()> {
    if !require(&[External::Tansu, External::PythonVenv])? {
        return Ok(());
    }
    prepare().await?;
    within(Duration::from_secs(150), "missing topic", missing_topic()).await
}

async fn missing_topic() -> Result<()> {
    let p = Progress::new("missing-topic");
    let dir = tempfile::tempdir()?;
    let tansu = Tansu::start(Storage::sqlite_in(dir.path())).await?;
    let kafka = KafkaTool::new(tansu.bootstrap());
    kafka.create_topic("ok-topic", 2).await?;
    let gw = Gateway::start(GatewayOptions {
        id: "e2e-missing".into(),
        kafka: Some(tansu.bootstrap()),
        routes: vec![
            Route::new("missing/#", "no-such-topic"),
            Route::new("ok/#", "ok-topic"),
        ],
        ..Default::default()
    })
    .await?;
    let ok = vec!["ok/a".to_string(), "ok/b".to_string()];
    let mut topics = vec!["missing/x".to_string()];
    topics.extend(ok.iter().cloned());
    // Interleaved: missing/x, ok/a, ok/b, missing/x, ...
    let spec = StreamSpec::new(gw.mqtt_port(), "mixed", topics, 100);
    let r = StreamPublisher::spawn(&spec)?
        .finish(Duration::from_secs(30))
        .await?;
    ensure!(r.acked.len() == 300, "{} acknowledged", r.acked.len());
    let s = gw.wait_forwarded(Duration::from_secs(60)).await?;
    p.note(format!(
        "forwarded: dead-lettered {:?}, last: {}",
        num(&s, "/uplink/dead_lettered"),
        s.pointer("/uplink/last_dead_letter")
            .map(|v| v.to_string())
            .unwrap_or_default()
    ));
    ensure!(
        num(&s, "/uplink/dead_lettered") == Some(100)
            && text(&s, "/uplink/last_dead_letter/topic") == Some("no-such-topic"),
        "dead letters: {s}"
    );
    ensure!(
        num(&s, "/uplink/routes/0/records") == Some(0)
            && num(&s, "/uplink/routes/1/records") == Some(200),
        "route counters: {s}"
    );
    let m = gw.metrics().await?;
    ensure!(
        metric(&m, "ironbridge_uplink_dead_lettered_total") == Some(100.0),
        "metrics:\n{m}"
    );
    // And later messages keep flowing.
    let mut more = StreamSpec::new(gw.mqtt_port(), "more", ok.clone(), 50);
    more.start = 100;
    let r = StreamPublisher::spawn(&more)?
        .finish(Duration::from_secs(30))
        .await?;
    ensure!(r.acked.len() == 100, "{} acknowledged", r.acked.len());
    let s = gw.wait_forwarded(Duration::from_secs(60)).await?;
    ensure!(
        num(&s, "/uplink/dead_lettered") == Some(100)
            && num(&s, "/uplink/routes/1/records") == Some(300),
        "{s}"
    );
    let (code, health) = gw.healthz().await?;
    ensure!(code == 200, "/healthz {code}: {health}");
    let d = Delivery::analyse(kafka.consume("ok-topic", None).await?)?;
    assert_complete(&d, &ok, 0, 150)?;
    let listed = kafka.offsets("no-such-topic").await;
    ensure!(listed.is_err(), "the missing topic was created: {listed:?}");
    p.note(format!(
        "missing topic: 100 dead-lettered, 300 delivered to ok-topic ({} duplicates)",
        d.duplicates
    ));
    Ok(())
}

/// TLS files that do not exist are problems of the file like any other: `check-config` must name
/// the field and the line with exit code 2, and so must a start that cannot listen without them.
///
/// (Found by this test: `check-config` used to print "OK" for missing TLS files, a start with a
/// missing `mqtt.tls.cert` exited 1 without a line, and a missing `kafka.tls.ca_file` left the
/// uplink restarting forever.)
#[tokio::test]
async fn missing_tls_files_are_config_errors() -> Result<()> {
    prepare().await?;
    within(Duration::from_secs(120), "TLS file cases", async {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let mut mqtt = base_config(&state);
        mqtt.extend(
            [
                "",
                "[mqtt.tls]",
                "listen = \"127.0.0.1:2\"",
                "cert = \"/nonexistent/mqtt.crt\"",
                "key = \"/nonexistent/mqtt.key\"",
            ]
            .map(String::from),
        );
        let mut kafka = base_config(&state);
        kafka.extend(
            [
                "",
                "[kafka.tls]",
                "enabled = true",
                "ca_file = \"/nonexistent/plant-ca.pem\"",
            ]
            .map(String::from),
        );
        let mut failures = Vec::new();
        for (name, lines, line, field, start_too) in [
            ("mqtt", mqtt, 30, "mqtt.tls.cert", true),
            ("kafka", kafka, 30, "kafka.tls.ca_file", false),
        ] {
            let file = dir.path().join(format!("{name}-tls.toml"));
            std::fs::write(&file, lines.join("\n"))?;
            let f = file.to_string_lossy().to_string();
            let want = format!("{f}:{line}: ");
            let mut runs = vec![vec!["check-config", f.as_str()]];
            if start_too {
                runs.push(vec!["--config", f.as_str()]);
            }
            for args in runs {
                let out = run_ironbridge(&args, b"", Duration::from_secs(20)).await?;
                let err = String::from_utf8_lossy(&out.stderr);
                let named = err
                    .lines()
                    .any(|l| l.starts_with(&want) && l.contains(field));
                if out.status.code() != Some(2) || !named {
                    failures.push(format!(
                        "`ironbridge {}`: exit {:?}, expected 2 and an error starting with {want:?} \
                         naming {field}; stdout {:?}, stderr {:?}",
                        args.join(" "),
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout).trim(),
                        err.trim()
                    ));
                }
            }
        }
        ensure!(failures.is_empty(), "{}", failures.join("\n"));
        Ok(())
    })
    .await
}
