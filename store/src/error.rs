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
    /// lock past the busy timeout); everything else is permanent.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
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
