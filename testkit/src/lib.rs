//! Test support shared by the end-to-end tests: a private PostgreSQL
//! cluster per test (started with initdb/pg_ctl on a free port, as the
//! `postgres` user when running as root, stopped on drop), a private MariaDB
//! server, a private ODBC driver configuration and SQLite files, and polling.

mod mariadb;
mod odbc;
mod pg;

pub use mariadb::MariaDb;
pub use odbc::{OdbcConfig, SqliteDb};
pub use pg::PgCluster;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `timeout` with
/// `what` and the last value seen.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
