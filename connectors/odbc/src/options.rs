//! Provider options (`CONNECTOR_<NAME>_OPTIONS=key=value,…`; the legacy
//! `IBMCLOUD_*` provider gets `dialect=db2`).
//!
//! * `dialect`: db2, postgres, sqlite or mariadb; detected from the driver
//!   name when absent.
//! * `journal`: the change journal table (default `connector_journal`).
//! * `gap_timeout_s`: how long a sequence number missing below the highest
//!   one read is waited for (a transaction that took it may still commit)
//!   before it is taken for a rollback (default 300).

use std::time::Duration;

use connector_core::{ConnectorError, ProviderSpec, Stage};

use crate::conn::OdbcConn;
use crate::dialect::DialectKind;

#[derive(Debug, Clone)]
pub struct OdbcOptions {
    pub dialect: DialectKind,
    pub journal: String,
    /// Schema of tables whose mapping names none (and of the journal).
    pub schema: Option<String>,
    pub gap_timeout: Duration,
}

impl OdbcOptions {
    pub fn from_spec(spec: &ProviderSpec, conn: &OdbcConn) -> Result<OdbcOptions, ConnectorError> {
        let bad = |msg: String| {
            ConnectorError::permanent(Stage::Connect, format!("provider `{}`: {msg}", spec.name))
        };
        let dialect = match spec.options.get("dialect") {
            Some(d) => d.parse::<DialectKind>().map_err(bad)?,
            None => DialectKind::detect(conn.driver()).ok_or_else(|| {
                bad(format!(
                    "cannot tell the SQL dialect from the driver `{}`; set dialect=db2|postgres|sqlite|mariadb in CONNECTOR_{}_OPTIONS",
                    conn.driver(),
                    spec.name.to_ascii_uppercase()
                ))
            })?,
        };
        let mut o = OdbcOptions {
            dialect,
            journal: "connector_journal".into(),
            schema: spec.schema.clone(),
            gap_timeout: Duration::from_secs(300),
        };
        for (key, value) in &spec.options {
            match key.as_str() {
                "dialect" => {}
                "journal" => o.journal = value.clone(),
                "gap_timeout_s" => {
                    o.gap_timeout = Duration::from_secs(value.parse().map_err(|_| {
                        bad(format!("option gap_timeout_s={value}: expected seconds"))
                    })?)
                }
                other => {
                    return Err(bad(format!(
                        "unknown option `{other}` (expected dialect, journal, gap_timeout_s)"
                    )))
                }
            }
        }
        Ok(o)
    }
}
