//! Provider options (`CONNECTOR_<NAME>_OPTIONS=key=value,…`; the legacy
//! `IBMCLOUD_*` provider gets `dialect=db2`).
//!
//! * `dialect`: db2, postgres, sqlite or mariadb; when absent, detected
//!   from the driver name, else (a DSN that names no product) from the
//!   DBMS name the driver reports on the first connection.
//! * `journal`: the change journal table (default `connector_journal`).
//! * `gap_timeout_s`: how long a sequence number missing below the highest
//!   one read is waited for (a transaction that took it may still commit)
//!   before it is taken for a rollback (default 300).
//! * `call_timeout_s`: how long one driver call may take before the
//!   session is given up and opened again (default 600; see `conn`).

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

/// The `call_timeout_s` option of `spec` ([`crate::conn::CALL_TIMEOUT`]
/// when absent): needed before the first connection, which the dialect
/// may wait for.
pub fn call_timeout(spec: &ProviderSpec) -> Result<Duration, ConnectorError> {
    match spec.options.get("call_timeout_s") {
        None => Ok(crate::conn::CALL_TIMEOUT),
        Some(v) => match v.parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(ConnectorError::permanent(
                Stage::Connect,
                format!(
                    "provider `{}`: option call_timeout_s={v}: expected seconds, more than 0",
                    spec.name
                ),
            )),
        },
    }
}

impl OdbcOptions {
    /// The options of `spec`; `Ok(None)` when only the database can tell the
    /// dialect (call again with the DBMS name it reports as `dbms`).
    pub fn from_spec(
        spec: &ProviderSpec,
        conn: &OdbcConn,
        dbms: Option<&str>,
    ) -> Result<Option<OdbcOptions>, ConnectorError> {
        let bad = |msg: String| {
            ConnectorError::permanent(Stage::Connect, format!("provider `{}`: {msg}", spec.name))
        };
        let mut journal = "connector_journal".to_string();
        let mut gap_timeout = Duration::from_secs(300);
        for (key, value) in &spec.options {
            match key.as_str() {
                "dialect" | "call_timeout_s" => {}
                "journal" => journal = value.clone(),
                "gap_timeout_s" => {
                    gap_timeout = Duration::from_secs(value.parse().map_err(|_| {
                        bad(format!("option gap_timeout_s={value}: expected seconds"))
                    })?)
                }
                other => {
                    return Err(bad(format!(
                        "unknown option `{other}` (expected dialect, journal, gap_timeout_s, call_timeout_s)"
                    )))
                }
            }
        }
        let dialect = match (
            spec.options.get("dialect"),
            DialectKind::detect(conn.driver()),
            dbms,
        ) {
            (Some(d), _, _) => d.parse::<DialectKind>().map_err(bad)?,
            (None, Some(d), _) => d,
            (None, None, Some(dbms)) => DialectKind::detect(dbms).ok_or_else(|| {
                bad(format!(
                    "cannot tell the SQL dialect from the driver `{}` or the DBMS name `{dbms}`; \
                     set dialect=db2|postgres|sqlite|mariadb in CONNECTOR_{}_OPTIONS",
                    conn.driver(),
                    spec.name.to_ascii_uppercase()
                ))
            })?,
            // Known once connected.
            (None, None, None) => return Ok(None),
        };
        Ok(Some(OdbcOptions {
            dialect,
            journal,
            schema: spec.schema.clone(),
            gap_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(conn: &str, options: &[(&str, &str)]) -> (ProviderSpec, OdbcConn) {
        let spec = ProviderSpec {
            name: "lite".into(),
            kind: connector_core::ProviderKind::Odbc,
            enabled: true,
            connection_string: conn.into(),
            database: None,
            schema: None,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        let conn = OdbcConn::parse(conn).unwrap();
        (spec, conn)
    }

    #[test]
    fn the_dialect_comes_from_the_options_the_driver_or_the_dbms_name() {
        let (s, c) = spec("Driver={IBM DB2 ODBC DRIVER};Hostname=h;", &[]);
        let o = OdbcOptions::from_spec(&s, &c, None).unwrap().unwrap();
        assert_eq!(o.dialect, DialectKind::Db2);
        let (s, c) = spec("DSN=SAMPLE;UID=u;", &[("dialect", "mariadb")]);
        let o = OdbcOptions::from_spec(&s, &c, None).unwrap().unwrap();
        assert_eq!(o.dialect, DialectKind::MariaDb);
        // A DSN that names no product: known once connected.
        let (s, c) = spec("DSN=SAMPLE;UID=u;", &[("gap_timeout_s", "30")]);
        assert!(OdbcOptions::from_spec(&s, &c, None).unwrap().is_none());
        let o = OdbcOptions::from_spec(&s, &c, Some("DB2/LINUXX8664"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.dialect, o.gap_timeout),
            (DialectKind::Db2, Duration::from_secs(30))
        );
        let e = OdbcOptions::from_spec(&s, &c, Some("Informix")).unwrap_err();
        assert!(e.message.contains("DBMS name `Informix`"), "{e}");
    }

    #[test]
    fn a_bad_option_is_refused_before_any_connection() {
        let (s, c) = spec("DSN=SAMPLE;", &[("gap_timeout", "30")]);
        let e = OdbcOptions::from_spec(&s, &c, None).unwrap_err();
        assert!(e.message.contains("unknown option `gap_timeout`"), "{e}");
    }
}
