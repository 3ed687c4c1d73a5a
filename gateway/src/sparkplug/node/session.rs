//! The session record persisted in sled: `bdSeq` and whether the last session ended with an
//! NDEATH.

use super::*;

/// Persisted per session: the last bdSeq used and whether the session may have ended without
/// an NDEATH (the emulated will is published at the next start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub bdseq: u64,
    pub online: bool,
}

pub async fn load_session(
    state: &StateStore,
    key: &str,
) -> Result<Option<SessionRecord>, NodeError> {
    let state = state.clone();
    let key = key.to_string();
    tokio::task::spawn_blocking(move || {
        let tree = state.tree(STATE_TREE)?;
        Ok(StateStore::get_json::<SessionRecord>(&tree, &key)?)
    })
    .await
    .map_err(|e| NodeError::Task(e.to_string()))?
}

/// Writes the record and flushes it to disk before returning.
pub async fn save_session(
    state: &StateStore,
    key: &str,
    rec: SessionRecord,
) -> Result<(), NodeError> {
    let state = state.clone();
    let key = key.to_string();
    tokio::task::spawn_blocking(move || {
        let tree = state.tree(STATE_TREE)?;
        StateStore::put_json_durable(&tree, &key, &rec)?;
        Ok(())
    })
    .await
    .map_err(|e| NodeError::Task(e.to_string()))?
}

/// The bdSeq of the next session after `prev` (0 for the first ever).
pub fn next_bdseq(prev: Option<SessionRecord>) -> u64 {
    prev.map(|r| (r.bdseq + 1) % 256).unwrap_or(0)
}
