use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong with a log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("buffer directory {path} is in use by another process (lock file {path}/LOCK)")]
    Locked { path: PathBuf },
    #[error("the file system holding the buffer is full ({path}): {source}")]
    DiskFull { path: PathBuf, source: io::Error },
    #[error("the buffer is full: {used} of {max} bytes used and the full policy is backpressure")]
    Full { used: u64, max: u64 },
    #[error("record payload of {size} bytes exceeds max_record_bytes ({max})")]
    RecordTooLarge { size: usize, max: u32 },
    #[error(
        "batch of {size} bytes cannot fit in a buffer of max_bytes {max} with segment_bytes {segment}"
    )]
    BatchTooLarge { size: u64, max: u64, segment: u64 },
    #[error("invalid buffer options: {0}")]
    InvalidOptions(String),
    #[error("invalid consumer name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidConsumerName(String),
    #[error(
        "an fdatasync of the buffer failed; the log refuses further appends until reopened: {0}"
    )]
    SyncFailed(Arc<io::Error>),
    #[error("the log has been closed")]
    Closed,
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Error {
    /// Wraps an I/O error on `path`, singling out a full file system.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            Error::DiskFull { path, source }
        } else {
            Error::Io { path, source }
        }
    }
}
