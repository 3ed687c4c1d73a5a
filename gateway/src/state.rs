//! Small keyed state in `sled` (`<gateway.state_dir>/state`): the Sparkplug birth cache and
//! `bdSeq`, web sessions, command-topic offsets. Never the event log: sled is beta software,
//! so everything kept here is either rebuildable or flushed on the write that matters
//! ([`StateStore::put_json_durable`]).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use sled::Tree;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    #[error("state value {key:?} in {tree:?} is not valid JSON: {source}")]
    Decode {
        tree: String,
        key: String,
        source: serde_json::Error,
    },
    #[error("state value encoding: {0}")]
    Encode(serde_json::Error),
}

/// The gateway's sled database. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct StateStore {
    db: sled::Db,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating) the store in `dir`. Blocking: call from `spawn_blocking` or at start-up.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        let db = sled::Config::new()
            .path(dir)
            // Small state: keep sled's page cache small on a small box.
            .cache_capacity(8 << 20)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|source| StateError::Open {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(StateStore {
            db,
            path: dir.to_path_buf(),
        })
    }

    /// A temporary store for tests, deleted when dropped.
    pub fn temporary() -> Result<StateStore, StateError> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(StateStore {
            db,
            path: PathBuf::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A named keyspace (e.g. `"sparkplug.births"`, `"web.sessions"`).
    pub fn tree(&self, name: &str) -> Result<Tree, StateError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Reads a JSON value; `None` when absent.
    pub fn get_json<T: DeserializeOwned>(tree: &Tree, key: &str) -> Result<Option<T>, StateError> {
        match tree.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Decode {
                        tree: String::from_utf8_lossy(&tree.name()).into_owned(),
                        key: key.to_string(),
                        source,
                    })
            }
        }
    }

    /// Writes a JSON value (flushed by sled within a second).
    pub fn put_json<T: Serialize>(tree: &Tree, key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(StateError::Encode)?;
        tree.insert(key, bytes)?;
        Ok(())
    }

    /// Writes a JSON value and flushes it to disk before returning (e.g. `bdSeq`, which must
    /// never repeat after a power cut). Blocking for the duration of an fsync.
    pub fn put_json_durable<T: Serialize>(
        tree: &Tree,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        Self::put_json(tree, key, value)?;
        tree.flush()?;
        Ok(())
    }

    /// Flushes everything (shutdown).
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = StateStore::open(dir.path()).expect("open");
            let t = s.tree("sparkplug").expect("tree");
            StateStore::put_json_durable(&t, "bdseq", &7u64).expect("put");
        }
        let s = StateStore::open(dir.path()).expect("reopen");
        let t = s.tree("sparkplug").expect("tree");
        assert_eq!(
            StateStore::get_json::<u64>(&t, "bdseq").expect("get"),
            Some(7)
        );
        assert_eq!(StateStore::get_json::<u64>(&t, "other").expect("get"), None);
        t.insert("bad", &b"{"[..]).expect("insert");
        let err = StateStore::get_json::<u64>(&t, "bad").expect_err("decode error");
        assert!(err.to_string().contains("\"bad\""), "{err}");
    }
}
