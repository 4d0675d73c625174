//! Connections: one parsed connection string, two kinds of session (SQL via
//! tokio-postgres, replication via pgwire-replication), the same pinned
//! session settings on both, and error classification.

use std::str::FromStr;
use std::time::Duration;

use connector_core::{ConnectorError, ErrorKind, Stage};
use pgwire_replication::{Lsn, ReplicationConfig};
use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{SslMode, TlsSettings};
use tracing::warn;

/// Session settings that make text values parse the same everywhere, and
/// a lock wait that ends: a sink blocked by an application's long row lock
/// (or a copy behind an ALTER TABLE) fails after a minute, a transient
/// error retried, instead of hanging green for ever.
pub const SESSION_OPTIONS: &str = "-c DateStyle=ISO,YMD -c TimeZone=UTC -c extra_float_digits=3 \
     -c IntervalStyle=iso_8601 -c bytea_output=hex -c lock_timeout=60s";

/// The replication session's: no lock timeout (CREATE_REPLICATION_SLOT
/// waits for every open write transaction, which is a lock wait; it must
/// not give up after a minute and start over).
pub const REPLICATION_OPTIONS: &str =
    "-c DateStyle=ISO,YMD -c TimeZone=UTC -c extra_float_digits=3 \
     -c IntervalStyle=iso_8601 -c bytea_output=hex";

/// A parsed connection string (URL or `key=value` form, as libpq takes).
#[derive(Clone)]
pub struct PgConn {
    config: Config,
    tls: TlsSettings,
}

impl PgConn {
    pub fn parse(conn: &str) -> Result<PgConn, ConnectorError> {
        let (conn, tls) = TlsSettings::extract(conn)?;
        let mut config = Config::from_str(&conn).map_err(|e| {
            ConnectorError::permanent(
                Stage::Connect,
                format!("invalid PostgreSQL connection string: {e}"),
            )
        })?;
        config.options(SESSION_OPTIONS);
        if config.get_application_name().is_none() {
            config.application_name("connector");
        }
        config.connect_timeout(Duration::from_secs(10));
        // A connection cut without a reset (a firewall, a failed-over host)
        // is found in about a minute, not after the OS's two hours.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        // Several hosts (an HA list): SQL sessions go to the primary, as
        // the replication session does (`PgConn::primary`).
        if config.get_hosts().len() > 1
            && config.get_target_session_attrs() == TargetSessionAttrs::Any
        {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        if tls.mode == SslMode::VerifyFull {
            if let Some(Host::Tcp(h)) = config.get_hosts().first() {
                if h.parse::<std::net::IpAddr>().is_ok() {
                    return Err(ConnectorError::permanent(
                        Stage::Connect,
                        format!(
                            "sslmode=verify-full needs a host name, not the address {h}: the replication \
                             session cannot check an IP address against the certificate; use the name the \
                             certificate is for, or sslmode=verify-ca"
                        ),
                    ));
                }
            }
        }
        Ok(PgConn { config, tls })
    }

    pub fn dbname(&self) -> String {
        self.config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("postgres")
            .to_string()
    }

    /// Where it connects, for messages (no credentials).
    pub fn endpoint(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}/{}", self.dbname())
    }

    /// A SQL session; its connection task runs in the background.
    pub async fn connect(&self) -> Result<Client, ConnectorError> {
        self.connect_to(&self.config).await
    }

    /// The connection with one host: the only one, or of several (an HA
    /// list, `host=a,b`) the first that answers as a primary (not in
    /// recovery). The replication session dials one host; it always took
    /// the first, and with that one down or a standby it never streamed.
    pub async fn primary(&self) -> Result<PgConn, ConnectorError> {
        let hosts = self.config.get_hosts();
        if hosts.len() <= 1 {
            return Ok(self.clone());
        }
        let ports = self.config.get_ports();
        let mut tried = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let port = match ports.len() {
                0 => 5432,
                1 => ports[0],
                _ => ports.get(i).copied().unwrap_or(5432),
            };
            let one = PgConn {
                config: self.one_host(host, port),
                tls: self.tls.clone(),
            };
            let answer = match one.connect().await {
                Ok(client) => client
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .await
                    .map(|r| r.get::<_, bool>(0))
                    .map_err(|e| classify(&e, Stage::Connect, "asking for recovery")),
                Err(e) => Err(e),
            };
            match answer {
                Ok(false) => return Ok(one),
                Ok(true) => tried.push(format!("{}: a standby", one.endpoint())),
                Err(e) => tried.push(e.message),
            }
        }
        Err(ConnectorError::transient(
            Stage::Connect,
            format!(
                "no primary among the connection string's hosts ({})",
                tried.join("; ")
            ),
        ))
    }

    /// This connection's settings with only `host` and `port`.
    fn one_host(&self, host: &Host, port: u16) -> Config {
        let mut c = Config::new();
        if let Some(user) = self.config.get_user() {
            c.user(user);
        }
        if let Some(password) = self.config.get_password() {
            c.password(password);
        }
        if let Some(db) = self.config.get_dbname() {
            c.dbname(db);
        }
        if let Some(name) = self.config.get_application_name() {
            c.application_name(name);
        }
        match host {
            Host::Tcp(h) => c.host(h),
            Host::Unix(p) => c.host_path(p),
        };
        c.port(port)
            .options(SESSION_OPTIONS)
            .ssl_mode(self.config.get_ssl_mode())
            .connect_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        c
    }

    async fn connect_to(&self, config: &Config) -> Result<Client, ConnectorError> {
        let context = || format!("cannot connect to PostgreSQL at {}", self.endpoint());
        let client = if self.tls.mode == SslMode::Disable {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|e| classify(&e, Stage::Connect, &context()))?;
            drive(connection);
            client
        } else {
            let tls = MakeRustlsConnect::new(self.tls.client_config()?);
            let (client, connection) = config
                .connect(tls)
                .await
                .map_err(|e| classify(&e, Stage::Connect, &context()))?;
            drive(connection);
            client
        };
        Ok(client)
    }

    /// A replication session configuration for `slot` and `publication`.
    pub fn replication(&self, slot: &str, publication: &str, start: Lsn) -> ReplicationConfig {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let password = self
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        ReplicationConfig::new(
            host,
            self.config.get_user().unwrap_or("postgres"),
            password,
            self.dbname(),
            slot,
            publication,
        )
        .with_port(self.config.get_ports().first().copied().unwrap_or(5432))
        .with_start_lsn(start)
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1))
        .with_options(REPLICATION_OPTIONS)
        .with_application_name(format!("connector-{slot}"))
        .with_tls(self.tls.replication())
    }
}

/// Runs a connection's I/O in the background until it closes.
fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "PostgreSQL connection closed");
        }
    });
}

/// Classifies a tokio-postgres error: connection trouble and server
/// restarts are transient; authentication, missing objects, privileges and
/// syntax are permanent; data and constraint errors are the record's fault.
pub fn classify(e: &tokio_postgres::Error, stage: Stage, context: &str) -> ConnectorError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // The cause (a refused connection, a certificate the TLS
            // handshake rejected) is in the source chain.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    };
    let kind = match e.code() {
        None if never_passes(&detail) => ErrorKind::Permanent,
        None => ErrorKind::Transient, // I/O, closed connection, timeout
        Some(code) => connector_core::error::kind_for_sqlstate(code.code()),
    };
    ConnectorError::new(kind, stage, format!("{context}: {detail}"))
}

/// Errors without a SQLSTATE that no retry mends until ops act: a
/// certificate that does not verify, a connection string without the
/// password the server asks for, TLS required of a server without it.
fn never_passes(detail: &str) -> bool {
    [
        "certificate",
        "password missing",
        "server does not support TLS",
        "invalid configuration",
    ]
    .iter()
    .any(|m| detail.contains(m))
}

/// Classifies a replication transport error.
pub fn classify_replication(
    e: &pgwire_replication::PgWireError,
    stage: Stage,
    context: &str,
) -> ConnectorError {
    use pgwire_replication::PgWireError as E;
    let text = e.to_string();
    let kind = match e {
        E::Io(_) | E::Task(_) => ErrorKind::Transient,
        E::Server(msg)
            if msg.contains("terminating connection") || msg.contains("is active for PID") =>
        {
            ErrorKind::Transient
        }
        // By its SQLSTATE, as for SQL sessions: 53300 (too many walsenders,
        // a lingering one after a partition), 57P01/57P03 (shutting down,
        // starting up) are retried. No replication error is a record's.
        E::Server(msg) => match sqlstate(msg).map(connector_core::error::kind_for_sqlstate) {
            Some(ErrorKind::Transient) => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        },
        // A handshake cut by a reset is retried; a certificate that does
        // not verify stays so until ops act.
        E::Tls(msg) if !msg.to_ascii_lowercase().contains("certificate") => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    ConnectorError::new(kind, stage, format!("{context}: {text}"))
}

/// The `SQLSTATE xxxxx` in a server error's text.
fn sqlstate(msg: &str) -> Option<&str> {
    let at = msg.find("SQLSTATE ")? + "SQLSTATE ".len();
    msg.get(at..at + 5)
}

/// Quotes an identifier: a name from YAML can never inject SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// Quotes a string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_errors_that_pass_are_retried() {
        use pgwire_replication::PgWireError as E;
        let kind = |e: E| classify_replication(&e, Stage::Source, "x").kind;
        let server = |code: &str| E::Server(format!("FATAL: something (SQLSTATE {code})"));
        for code in ["53300", "57P01", "57P03", "08006"] {
            assert_eq!(kind(server(code)), ErrorKind::Transient, "{code}");
        }
        for code in ["42704", "55000", "23505", "28P01"] {
            assert_eq!(kind(server(code)), ErrorKind::Permanent, "{code}");
        }
        assert_eq!(
            kind(E::Server(
                "replication slot \"s\" is active for PID 7".into()
            )),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(E::Tls("TLS handshake failed: connection reset".into())),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(E::Tls("invalid peer certificate: UnknownIssuer".into())),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn identifiers_and_literals_cannot_break_out() {
        assert_eq!(ident("orders"), "\"orders\"");
        assert_eq!(
            ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert_eq!(
            qualified("public", "Order Items"),
            "\"public\".\"Order Items\""
        );
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn setup_mistakes_without_a_sqlstate_are_permanent() {
        for detail in [
            "error connecting to server: password missing",
            "error performing TLS handshake: server does not support TLS",
            "invalid certificate: UnknownIssuer",
        ] {
            assert!(never_passes(detail), "{detail}");
        }
        assert!(!never_passes(
            "error connecting to server: Connection refused (os error 111)"
        ));
        assert!(!never_passes("connection closed"));
    }

    #[test]
    fn both_connection_string_forms_parse() {
        let a = PgConn::parse("postgres://sync:pw@db.example:6543/hq").unwrap();
        assert_eq!(a.endpoint(), "db.example:6543/hq");
        let b = PgConn::parse("host=127.0.0.1 port=5544 user=postgres dbname=shop").unwrap();
        assert_eq!(b.endpoint(), "127.0.0.1:5544/shop");
        let r = b.replication("slot_a", "pub_a", Lsn(0));
        assert_eq!(
            (r.port, r.database.as_str(), r.slot.as_str()),
            (5544, "shop", "slot_a")
        );
        assert!(PgConn::parse("postgres://10.0.0.1/db?sslmode=verify-full")
            .is_err_and(|e| e.message.contains("needs a host name")));
        let t = PgConn::parse("postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            t.replication("s", "p", Lsn(0)).tls.mode,
            pgwire_replication::SslMode::VerifyFull
        );
        assert!(PgConn::parse("not a connection string ===").is_err());
    }
}
