//! Consumer cursors, stored in one small file in the log directory and replaced atomically
//! (write a temporary file, fdatasync, rename, fsync the directory).
//!
//! They live beside the segments rather than in sled: the cursor decides what is re-sent after
//! a crash, so it must share the log's durability and recovery story, and a lost or corrupt
//! cursor file only causes re-delivery (at-least-once), never loss.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::Error;

pub(crate) const CURSOR_FILE: &str = "cursors";
const CURSOR_TMP: &str = "cursors.tmp";
const HEADER: &str = "ironbridge-cursors 1";

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn encode(cursors: &BTreeMap<String, u64>) -> String {
    let mut body = format!("{HEADER}\n");
    for (name, offset) in cursors {
        body.push_str(&format!("{name} {offset}\n"));
    }
    let crc = crc32c::crc32c(body.as_bytes());
    body.push_str(&format!("crc32c {crc:08x}\n"));
    body
}

fn decode(text: &str) -> Option<BTreeMap<String, u64>> {
    let (body, trailer) = text.trim_end_matches('\n').rsplit_once('\n')?;
    let body = format!("{body}\n");
    let crc = u32::from_str_radix(trailer.strip_prefix("crc32c ")?, 16).ok()?;
    if crc32c::crc32c(body.as_bytes()) != crc {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut cursors = BTreeMap::new();
    for line in lines {
        let (name, offset) = line.split_once(' ')?;
        if !valid_name(name) {
            return None;
        }
        cursors.insert(name.to_string(), offset.parse().ok()?);
    }
    Some(cursors)
}

/// Loads the cursors. A missing file means none; a corrupt one yields none and `true`, so the
/// caller can report it (consumers then start over from the oldest record: re-delivery, no loss).
pub(crate) fn load(dir: &Path) -> Result<(BTreeMap<String, u64>, bool), Error> {
    let path = dir.join(CURSOR_FILE);
    match fs::read(&path) {
        Ok(bytes) => match std::str::from_utf8(&bytes).ok().and_then(decode) {
            Some(c) => Ok((c, false)),
            None => Ok((BTreeMap::new(), true)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((BTreeMap::new(), false)),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub(crate) fn store(dir: &Path, cursors: &BTreeMap<String, u64>) -> Result<(), Error> {
    let tmp = dir.join(CURSOR_TMP);
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(encode(cursors).as_bytes())?;
        f.sync_data()
    };
    write().map_err(|e| Error::io(&tmp, e))?;
    let path = dir.join(CURSOR_FILE);
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detected() {
        let mut c = BTreeMap::new();
        c.insert("uplink".to_string(), 17);
        c.insert("retained.compact".to_string(), 3);
        let text = encode(&c);
        assert_eq!(decode(&text), Some(c));
        let flipped = text.replace("17", "18");
        assert_eq!(decode(&flipped), None);
        assert_eq!(decode(""), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("uplink-1.kafka_main"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
