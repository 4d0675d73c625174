//! A private MariaDB server per test (mariadb-install-db + mariadbd on a
//! free port, as the `mysql` user when running as root), stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::pg::{free_port, is_root};

pub struct MariaDb {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

pub const USER: &str = "connector";
pub const PASSWORD: &str = "connector-test";

impl MariaDb {
    pub fn start() -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("mariadb")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let root = is_root();
        if root {
            Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db");
        if root {
            install.arg("--user=mysql");
        }
        // One install at a time: two tests' installs at once failed now
        // and then (seen once in nine runs of two tests).
        static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let out = {
            let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
            install
                .output()
                .expect("mariadb-install-db (scripts/test.sh installs mariadb-server)")
        };
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        if root {
            let _ = Command::new("chown").arg("mysql:mysql").arg(&tmp).status();
        }
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!("--port={port}"))
            // Its own: a server starting cleans `#sql*` files out of its
            // tmpdir, and with a shared /tmp it deleted the temporary
            // tables of the servers of tests running beside it.
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--skip-name-resolve");
        if root {
            cmd.arg("--user=mysql");
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mariadbd");
        let db = MariaDb { dir, child, port };
        crate::wait_for(
            "mariadbd to accept connections",
            Duration::from_secs(60),
            || db.try_sql_root("SELECT 1").ok(),
        );
        db.sql_root(&format!(
            "CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON *.* TO '{USER}'@'%'; FLUSH PRIVILEGES;"
        ));
        db
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    fn try_sql_root(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--default-character-set=utf8mb4")
            .args(["-u", "root", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Runs SQL as root over the socket; returns tab-separated output.
    pub fn sql_root(&self, sql: &str) -> String {
        self.try_sql_root(sql)
            .unwrap_or_else(|e| panic!("mariadb `{sql}`: {e}"))
    }

    /// Runs SQL in database `db`.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.sql_root(&format!("USE `{db}`; {sql}"))
    }

    pub fn create_db(&self, db: &str) {
        self.sql_root(&format!("CREATE DATABASE IF NOT EXISTS `{db}`"));
    }

    /// The ODBC connection string for database `db` (TCP, MariaDB Unicode).
    pub fn odbc(&self, db: &str) -> String {
        format!(
            "Driver={{MariaDB Unicode}};Server=127.0.0.1;Port={};Database={db};Uid={USER};Pwd={PASSWORD};",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
