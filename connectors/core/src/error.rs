//! The one typed error every provider returns, and the one place that says
//! what a worker does about it.
//!
//! * [`ErrorKind::Transient`]: the network, a restart, a lock timeout: retry
//!   with exponential backoff and jitter; nothing is lost because positions
//!   only advance after a commit.
//! * [`ErrorKind::Permanent`]: bad credentials, a missing slot or table, a
//!   configuration mistake: that provider stops with this message, the
//!   others go on.
//! * [`ErrorKind::BadRecord`]: this record alone cannot be synced (no id, a
//!   value the column rejects): it goes to the dead-letter table and the
//!   stream goes on.
//! * [`ErrorKind::NeedsSnapshot`]: the feed has a gap that streaming cannot
//!   fill (a lost replication slot, with the re-snapshot policy configured):
//!   the provider's rows are copied again, then streaming resumes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Transient,
    Permanent,
    BadRecord,
    NeedsSnapshot,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::BadRecord => "bad_record",
            ErrorKind::NeedsSnapshot => "needs_snapshot",
        }
    }
}

/// Where in the pipeline an error happened (the `stage` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Connect,
    Setup,
    Source,
    Snapshot,
    Mapping,
    Store,
    Sink,
    Verify,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Setup => "setup",
            Stage::Source => "source",
            Stage::Snapshot => "snapshot",
            Stage::Mapping => "mapping",
            Stage::Store => "store",
            Stage::Sink => "sink",
            Stage::Verify => "verify",
        }
    }
}

#[derive(Debug)]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub stage: Stage,
    pub message: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, stage: Stage, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            stage,
            message: message.into(),
            source: None,
        }
    }

    pub fn transient(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, stage, message)
    }

    pub fn permanent(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, stage, message)
    }

    pub fn bad_record(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRecord, stage, message)
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} error", self.message, self.kind.as_str())?;
        write!(f, " in {})", self.stage.as_str())?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The kind of an error from its SQLSTATE, for every SQL provider:
/// connection (`08`), operator intervention and resources (`57`, `53`),
/// serialization failures, deadlocks, lock and query timeouts are transient;
/// data (`22`) and constraint (`23`) errors are the record's own fault;
/// anything else (syntax, missing objects, privileges) is permanent.
pub fn kind_for_sqlstate(state: &str) -> ErrorKind {
    if state.starts_with("08")
        || state.starts_with("57")
        || state.starts_with("53")
        || matches!(
            state,
            "40001" | "40P01" | "55P03" | "HYT00" | "HYT01" | "40003"
        )
    {
        ErrorKind::Transient
    } else if state.starts_with("22") || state.starts_with("23") {
        ErrorKind::BadRecord
    } else {
        ErrorKind::Permanent
    }
}

/// Whether a SQLSTATE (or SQLite's catch-all with its words) is an
/// integrity constraint violation: a row another row of the batch may
/// satisfy ([`crate::row_passes`]).
pub fn is_constraint_violation(state: &str, message: &str) -> bool {
    state.starts_with("23")
        || (state == "HY000" && message.to_ascii_lowercase().contains("constraint failed"))
}

/// Whether a refusal is a foreign key's: the row references one the
/// database lacks (or a parent still has children), so it may pass once
/// another write lands — PostgreSQL and DB2 23503/23504, DB2 23001; SQLite,
/// MariaDB and the rest say so in words.
pub fn is_missing_reference(state: &str, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    // (SQLite's "foreign key mismatch" is a schema error, not a row's.)
    matches!(state, "23503" | "23504" | "23001")
        || (message.contains("foreign key") && !message.contains("mismatch"))
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_key_refusals_are_told_from_other_constraints() {
        // As the drivers word them (psqlODBC, SQLite ODBC, MariaDB ODBC, DB2 CLI).
        let refusals = [
            ("23503", "ERROR: insert or update on table \"order_items\" violates foreign key constraint \"order_items_order_id_fkey\""),
            ("HY000", "FOREIGN KEY constraint failed (787)"),
            ("23000", "[ma-3.1.15][10.11.6-MariaDB]Cannot add or update a child row: a foreign key constraint fails (`shop`.`order_items`, CONSTRAINT `order_items_ibfk_1` FOREIGN KEY (`order_id`) REFERENCES `orders` (`order_id`))"),
            ("23504", "[IBM][CLI Driver][DB2/LINUXX8664] SQL0532N  A parent row cannot be deleted because the relationship \"ORDERS_FK\" restricts the deletion.  SQLSTATE=23504"),
        ];
        for (state, message) in refusals {
            assert!(is_missing_reference(state, message), "{message}");
            assert!(is_constraint_violation(state, message), "{message}");
        }
        let others = [
            (
                "23505",
                "duplicate key value violates unique constraint \"orders_pkey\"",
            ),
            ("HY000", "NOT NULL constraint failed: orders.status (1299)"),
            ("23000", "Duplicate entry '1' for key 'PRIMARY'"),
            ("22001", "value too long for type character varying(20)"),
            (
                "HY000",
                "foreign key mismatch - \"order_items\" referencing \"orders\"",
            ),
        ];
        for (state, message) in others {
            assert!(!is_missing_reference(state, message), "{message}");
        }
    }
}
