//! A private ODBC driver configuration (`ODBCSYSINI`), so tests never depend
//! on /etc/odbcinst.ini: the Debian drivers for SQLite, PostgreSQL and
//! MariaDB, and the IBM DB2 driver when its path is given.

use std::path::{Path, PathBuf};

pub const DRIVER_DIR: &str = "/usr/lib/x86_64-linux-gnu/odbc";

pub struct OdbcConfig {
    dir: tempfile::TempDir,
}

impl OdbcConfig {
    /// Writes odbcinst.ini with every driver found (`db2`: the IBM driver
    /// library, if any).
    pub fn new(db2: Option<&Path>) -> OdbcConfig {
        let dir = tempfile::Builder::new().prefix("odbc").tempdir().unwrap();
        let mut ini = String::new();
        for (name, file) in [
            ("SQLite3", "libsqlite3odbc.so"),
            ("PostgreSQL Unicode", "psqlodbcw.so"),
            ("MariaDB Unicode", "libmaodbc.so"),
        ] {
            let path = Path::new(DRIVER_DIR).join(file);
            assert!(
                path.exists(),
                "ODBC driver {} is missing (scripts/test.sh installs it)",
                path.display()
            );
            ini.push_str(&format!("[{name}]\nDriver={}\n\n", path.display()));
        }
        if let Some(db2) = db2 {
            ini.push_str(&format!(
                "[IBM DB2 ODBC DRIVER]\nDriver={}\n\n",
                db2.display()
            ));
        }
        std::fs::write(dir.path().join("odbcinst.ini"), ini).unwrap();
        std::fs::write(dir.path().join("odbc.ini"), "").unwrap();
        OdbcConfig { dir }
    }

    /// Adds a data source `name` (odbc.ini) with the given driver and
    /// attributes: a connection string `DSN=name;` then names no product.
    pub fn add_dsn(&self, name: &str, driver: &str, attributes: &[(&str, &str)]) {
        use std::io::Write;
        let mut ini = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("odbc.ini"))
            .unwrap();
        writeln!(ini, "[{name}]\nDriver={driver}").unwrap();
        for (k, v) in attributes {
            writeln!(ini, "{k}={v}").unwrap();
        }
        writeln!(ini).unwrap();
    }

    /// The environment a process needs to use this configuration.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ODBCSYSINI".into(), self.dir.path().display().to_string()),
            (
                "ODBCINI".into(),
                self.dir.path().join("odbc.ini").display().to_string(),
            ),
        ]
    }
}

/// An SQLite database file reachable through the SQLite3 ODBC driver.
pub struct SqliteDb {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl SqliteDb {
    pub fn new() -> SqliteDb {
        let dir = tempfile::Builder::new().prefix("sqlite").tempdir().unwrap();
        let path = dir.path().join("shop.db");
        SqliteDb { _dir: dir, path }
    }

    pub fn odbc(&self) -> String {
        // A writer waits for a lock instead of failing at once.
        format!(
            "Driver={{SQLite3}};Database={};Timeout=10000;",
            self.path.display()
        )
    }

    /// A sqlite3 shell on the file, reading SQL from its stdin.
    fn shell(&self) -> std::process::Child {
        std::process::Command::new("sqlite3")
            .arg("-bail")
            .arg("-cmd")
            .arg(".timeout 10000")
            .arg(&self.path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sqlite3 shell (scripts/test.sh installs it)")
    }

    /// Begins a transaction in a sqlite3 shell of its own, runs `sql` (a
    /// statement changing rows) in it and returns once it changed some,
    /// leaving the transaction open.
    pub fn open_transaction(&self, sql: &str) -> OpenTransaction {
        use std::io::{BufRead, Write};
        let mut child = self.shell();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("BEGIN; {sql}; SELECT 'changed ' || changes();\n").as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.trim()
                .strip_prefix("changed ")
                .is_some_and(|n| n != "0"),
            "sqlite3 `{sql}` changed nothing: {line:?}"
        );
        OpenTransaction { child, stdin }
    }

    /// Runs SQL with the sqlite3 shell; returns its output (`|`-separated).
    pub fn sql(&self, sql: &str) -> String {
        use std::io::Write;
        let mut child = self.shell();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{sql};\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sqlite3 `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Default for SqliteDb {
    fn default() -> Self {
        Self::new()
    }
}

/// A transaction left open by [`SqliteDb::open_transaction`].
pub struct OpenTransaction {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
}

impl OpenTransaction {
    pub fn commit(mut self) {
        use std::io::Write;
        self.stdin.write_all(b"COMMIT;\n").unwrap();
        drop(self.stdin);
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sqlite3 COMMIT: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
