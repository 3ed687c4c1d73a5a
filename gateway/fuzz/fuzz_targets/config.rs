//! The configuration file as an operator (or a broken upload from the web UI) might write it:
//! any text. Parsing never panics, and every rejection names where: the source and, for each
//! issue, a message (and a field or line when one exists).
#![no_main]

use ironbridge::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Paths to devices that block on open (FIFOs, ttys) are not a parser concern.
    if text.contains("/dev/") || text.contains("/proc/") || text.contains("/sys/") {
        return;
    }
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            // A valid config's derived values are computable.
            let _ = config.buffer_dir();
            let _ = config.buffer.options();
        }
        Err(e) => {
            assert!(!e.issues.is_empty(), "an error without issues");
            for issue in &e.issues {
                assert!(!issue.message.is_empty(), "an issue without a message: {e}");
                if let Some(line) = issue.line {
                    assert!(
                        line >= 1 && line <= text.lines().count().max(1) + 1,
                        "line {line} out of range"
                    );
                }
            }
            assert!(e.to_string().contains("fuzz.toml"));
        }
    }
});
