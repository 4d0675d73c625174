//! Store errors, classified for the worker's one retry policy.

use connector_core::{ConnectorError, ErrorKind, Stage};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store holds malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot open the store at {path}: {message}")]
    Open { path: String, message: String },
}

impl StoreError {
    /// Busy/locked databases are transient (another process holds the write
    /// lock past the busy timeout), and so is a full disk (the transaction
    /// was rolled back; once space is freed the task goes on where it
    /// stopped, as after any outage); everything else is permanent.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                ) =>
            {
                ErrorKind::Transient
            }
            _ => ErrorKind::Permanent,
        }
    }
}

impl From<StoreError> for ConnectorError {
    fn from(e: StoreError) -> Self {
        ConnectorError::new(e.kind(), Stage::Store, e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> StoreError {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn a_full_disk_is_retried_and_a_corrupt_store_is_not() {
        use rusqlite::ffi;
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED, ffi::SQLITE_FULL] {
            assert_eq!(failure(code).kind(), ErrorKind::Transient, "{code}");
        }
        for code in [ffi::SQLITE_CORRUPT, ffi::SQLITE_IOERR, ffi::SQLITE_READONLY] {
            assert_eq!(failure(code).kind(), ErrorKind::Permanent, "{code}");
        }
    }
}
