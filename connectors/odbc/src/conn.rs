//! ODBC connections: the driver manager environment, connecting, running
//! blocking driver calls off the async runtime, and classifying errors.
//!
//! odbc-api is blocking. A [`Session`] owns one connection and lends it to
//! one closure at a time on tokio's blocking pool, so a slow driver never
//! stalls the runtime and the connection is never used from two threads at
//! once. A failed connection is dropped; the worker's retry reopens it.
//!
//! A driver call that does not return within the provider's call timeout
//! (`call_timeout_s`, 600 s by default: a network gone without a reset,
//! a lock held for ever) is a transient error: the session is lost and the
//! worker's retry opens another. The stuck thread and its connection are
//! left to the driver (dropped whenever the call returns). Before, such a
//! call stalled its provider silently, with the process alive and its
//! watchdog fed. A sink's write transaction is never given up that way
//! ([`Session::run_to_the_end`]): left running, it could commit after the
//! retry's newer write. Its lock waits end by the database's lock timeout,
//! which each dialect's session settings bound (DB2 waits for ever by
//! default).

use std::sync::OnceLock;
use std::time::Duration;

use odbc_api::{Connection, ConnectionOptions, Environment};

use connector_core::error::kind_for_sqlstate;
use connector_core::redact::redact;
use connector_core::{ConnectorError, ErrorKind, Result, Stage};

/// The process-wide ODBC environment (the driver manager keeps one).
fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| Environment::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| {
            ConnectorError::permanent(
                Stage::Connect,
                format!("cannot load the ODBC driver manager (install unixodbc): {e}"),
            )
        })
}

/// A parsed ODBC connection string (`Key=Value;…`, values in `{}` allowed).
#[derive(Clone)]
pub struct OdbcConn {
    text: String,
    /// (lowercased key, value)
    pairs: Vec<(String, String)>,
    /// How long one driver call (the connect too) may take.
    pub call_timeout: Duration,
}

/// The default of `call_timeout_s`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(600);

impl OdbcConn {
    pub fn parse(text: &str) -> Result<OdbcConn> {
        let mut pairs = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let Some(eq) = rest.find('=') else {
                return Err(ConnectorError::permanent(
                    Stage::Connect,
                    format!(
                        "ODBC connection string `{}`: expected Key=Value; pairs",
                        redact(text)
                    ),
                ));
            };
            let key = rest[..eq].trim().to_ascii_lowercase();
            rest = &rest[eq + 1..];
            let value = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced.find('}').ok_or_else(|| {
                    ConnectorError::permanent(
                        Stage::Connect,
                        format!("ODBC connection string `{}`: unclosed `{{`", redact(text)),
                    )
                })?;
                rest = braced[end + 1..].trim_start_matches(';');
                braced[..end].to_string()
            } else {
                let end = rest.find(';').unwrap_or(rest.len());
                let v = rest[..end].trim().to_string();
                rest = rest.get(end + 1..).unwrap_or("");
                v
            };
            pairs.push((key, value));
            rest = rest.trim_start();
        }
        if !pairs.iter().any(|(k, _)| k == "driver" || k == "dsn") {
            return Err(ConnectorError::permanent(
                Stage::Connect,
                format!(
                    "ODBC connection string `{}` names no Driver={{…}} or DSN=…",
                    redact(text)
                ),
            ));
        }
        Ok(OdbcConn {
            text: text.to_string(),
            pairs,
            call_timeout: CALL_TIMEOUT,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The driver name or DSN (for dialect detection and messages).
    pub fn driver(&self) -> &str {
        self.get("driver").or_else(|| self.get("dsn")).unwrap_or("")
    }

    /// Where the database is, for messages: `host:port`, or the file.
    pub fn endpoint(&self) -> String {
        let host = self
            .get("hostname")
            .or_else(|| self.get("server"))
            .or_else(|| self.get("host"));
        match (host, self.get("port")) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => self
                .get("database")
                .or_else(|| self.get("dsn"))
                .unwrap_or("?")
                .to_string(),
        }
    }

    /// Connects (blocking). A failure names the product and the endpoint.
    pub fn connect(&self, product: &str) -> Result<Connection<'static>> {
        let env = environment()?;
        env.connect_with_connection_string(&self.text, ConnectionOptions::default())
            .map_err(|e| {
                let mut err = classify(&e, Stage::Connect, "");
                let reason = err.message.trim_start_matches(": ").to_string();
                // A server that cannot be reached may come back.
                if is_unreachable(&reason) {
                    err.kind = ErrorKind::Transient;
                }
                err.message = format!(
                    "cannot connect to {product} at {} (driver {}): {reason}",
                    self.endpoint(),
                    self.driver()
                );
                err
            })
    }
}

fn is_unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection refused",
        "could not connect",
        "can't connect",
        "communication error",
        "sql30081n",
        "timeout",
        "unable to connect",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// An ODBC error → a typed error, by SQLSTATE ([`kind_for_sqlstate`]);
/// SQLite's "database is locked" is transient too. The message keeps the
/// driver's text and the SQLSTATE.
pub fn classify(e: &odbc_api::Error, stage: Stage, context: &str) -> ConnectorError {
    let (kind, detail) = match e {
        odbc_api::Error::Diagnostics { record, .. } => {
            let state = record.state.as_str().to_string();
            let message = String::from_utf8_lossy(&record.message).trim().to_string();
            (
                kind_of(&state, &message),
                format!("{message} (SQLSTATE {state})"),
            )
        }
        other => (ErrorKind::Permanent, other.to_string()),
    };
    ConnectorError::new(kind, stage, format!("{context}: {detail}"))
}

/// The kind of a diagnostic: by SQLSTATE, except for what drivers report
/// as the catch-all HY000 (SQLite for every statement error, MariaDB for
/// a lock wait timeout) and lock conflicts in any words.
fn kind_of(state: &str, message: &str) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    // Refused credentials stay refused until ops act (DB2 reports them as
    // 08001, SQL30082N; retrying can lock the account).
    if state.starts_with("28")
        || lower.contains("sql30082n")
        || lower.contains("password authentication failed")
        || lower.contains("access denied for user")
    {
        return ErrorKind::Permanent;
    }
    if ["database is locked", "deadlock", "lock wait timeout"]
        .iter()
        .any(|s| lower.contains(s))
    {
        ErrorKind::Transient
    } else if state == "HY000"
        && (lower.contains("constraint failed") || lower.contains("datatype mismatch"))
    {
        ErrorKind::BadRecord
    } else {
        kind_for_sqlstate(state)
    }
}

/// Whether an error says that a table does not exist, in any dialect's words.
pub fn is_missing_table(e: &ConnectorError) -> bool {
    let m = e.message.to_ascii_lowercase();
    m.contains("42s02")
        || m.contains("42p01")
        || m.contains("42704")
        || m.contains("no such table")
        || m.contains("doesn't exist")
        || m.contains("does not exist")
}

/// One connection, lent to blocking closures one at a time.
pub struct Session {
    conn: Option<Connection<'static>>,
    stage: Stage,
    timeout: Duration,
}

impl Session {
    pub async fn open(conn: &OdbcConn, product: &'static str, stage: Stage) -> Result<Session> {
        let timeout = conn.call_timeout;
        let conn = conn.clone();
        let c = run_blocking(stage, Some(timeout), move || conn.connect(product)).await?;
        Ok(Session {
            conn: Some(c),
            stage,
            timeout,
        })
    }

    /// Runs `f` with the connection on the blocking pool, for at most the
    /// call timeout.
    pub async fn run<T, F>(&mut self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection<'static>) -> Result<T> + Send + 'static,
    {
        let timeout = self.timeout;
        self.run_for(Some(timeout), f).await
    }

    /// Runs `f`, a write transaction into the provider's tables, for as
    /// long as it takes: given up, it could still commit later, over a
    /// newer write of the retry's (its echo then merged as the provider's
    /// own, newest change). Its lock waits end by the database's own lock
    /// timeout (each dialect's session settings) instead.
    pub async fn run_to_the_end<T, F>(&mut self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection<'static>) -> Result<T> + Send + 'static,
    {
        self.run_for(None, f).await
    }

    async fn run_for<T, F>(&mut self, timeout: Option<Duration>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection<'static>) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.take().ok_or_else(|| {
            ConnectorError::transient(self.stage, "the ODBC connection was lost; reconnecting")
        })?;
        let (conn, out) = run_blocking(self.stage, timeout, move || {
            let out = f(&conn);
            Ok((conn, out))
        })
        .await?;
        self.conn = Some(conn);
        out
    }
}

async fn run_blocking<T: Send + 'static>(
    stage: Stage,
    timeout: Option<Duration>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let call = tokio::task::spawn_blocking(f);
    let done = match timeout {
        None => call.await,
        Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| {
            ConnectorError::transient(
                stage,
                format!(
                    "an ODBC driver call did not return within {} s (call_timeout_s): a lost network or a lock held too long; reconnecting",
                    limit.as_secs()
                ),
            )
        })?,
    };
    done.map_err(|e| {
        ConnectorError::transient(stage, format!("an ODBC driver call panicked: {e}"))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_conflicts_are_retried_whatever_the_sqlstate() {
        let mariadb_1205 =
            "[ma-3.1.15][10.11.6-MariaDB]Lock wait timeout exceeded; try restarting transaction";
        assert_eq!(kind_of("HY000", mariadb_1205), ErrorKind::Transient);
        assert_eq!(
            kind_of("HY000", "database is locked (5)"),
            ErrorKind::Transient
        );
        assert_eq!(
            kind_of("HY000", "UNIQUE constraint failed: orders.order_id (19)"),
            ErrorKind::BadRecord
        );
        assert_eq!(
            kind_of("HY000", "near \"x\": syntax error"),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn refused_credentials_are_not_retried() {
        let db2 = "[IBM][CLI Driver] SQL30082N  Security processing failed with reason \"24\" (\"USERNAME AND/OR PASSWORD INVALID\").  SQLSTATE=08001";
        assert_eq!(kind_of("08001", db2), ErrorKind::Permanent);
        assert_eq!(
            kind_of("28000", "[ma-3.1.15]Access denied for user 'x'@'h'"),
            ErrorKind::Permanent
        );
        assert_eq!(
            kind_of("08001", "could not connect to server: Connection refused"),
            ErrorKind::Transient
        );
    }

    #[test]
    fn connection_strings_parse_with_braces_and_name_their_endpoint() {
        let c = OdbcConn::parse(
            "Driver={IBM DB2 ODBC DRIVER};Database=SAMPLE;Hostname=db2.example;Port=50000;Protocol=TCPIP;Uid=u;Pwd={a;b};",
        )
        .unwrap();
        assert_eq!(c.driver(), "IBM DB2 ODBC DRIVER");
        assert_eq!(c.endpoint(), "db2.example:50000");
        assert_eq!(c.get("pwd"), Some("a;b"));
        let s = OdbcConn::parse("Driver={SQLite3};Database=/tmp/x.db").unwrap();
        assert_eq!(s.endpoint(), "/tmp/x.db");
        assert!(OdbcConn::parse("Database=x").is_err());
        assert!(OdbcConn::parse("Driver={x").is_err());
    }
}
