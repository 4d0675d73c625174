//! A private PostgreSQL cluster (never the machine's own on 5432).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn find_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .find(|b| b.join("initdb").exists())
        .expect("PostgreSQL server binaries not found under /usr/lib/postgresql (scripts/test.sh installs them)")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
}

impl PgCluster {
    /// initdb + start with logical replication enabled.
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("pgcluster")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let mut c = PgCluster {
            bin: find_bin(),
            port: 0,
            dir,
            as_postgres,
        };
        let data = c.data();
        let out = c.run(
            &c.bin.join("initdb"),
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for attempt in 0..5 {
            c.port = free_port();
            if c.pg_ctl_start() {
                return c;
            }
            eprintln!("cluster start attempt {attempt} failed; trying another port");
        }
        panic!(
            "could not start PostgreSQL: see {}/server.log",
            c.dir.path().display()
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &Path, args: &[&str]) -> Output {
        self.try_run(program, args)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    fn try_run(&self, program: &Path, args: &[&str]) -> std::io::Result<Output> {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // A clean environment: the server inherits it (PGAPPNAME and friends).
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .args(args)
            .output()
    }

    fn pg_ctl_start(&self) -> bool {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=20 \
             -c max_wal_senders=20 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c shared_buffers=128MB -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        )
        .status
        .success()
    }

    /// Stops (fast) and starts the server again on the same port.
    pub fn restart(&self) {
        self.stop();
        assert!(self.pg_ctl_start(), "restart failed: {}", self.log());
    }

    pub fn stop(&self) {
        let _ = self.try_run(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Turns TLS on and refuses plain TCP connections (`hostnossl … reject`):
    /// a private CA signs a server certificate for `localhost` and
    /// 127.0.0.1. Returns (the CA's PEM file, an unrelated CA's PEM file).
    pub fn enable_tls(&self) -> (PathBuf, PathBuf) {
        self.tls(false)
    }

    /// As [`Pg::enable_tls`], and every session must also present a client
    /// certificate signed by the CA whose CN is its user (`pg_hba` method
    /// `cert`). Returns (CA, the client certificate for `postgres`, its key).
    pub fn enable_tls_with_client_certs(&self) -> (PathBuf, PathBuf, PathBuf) {
        let (ca, _) = self.tls(true);
        let dir = self.dir.path().join("tls");
        (ca, dir.join("client.crt"), dir.join("client.key"))
    }

    fn tls(&self, client_certs: bool) -> (PathBuf, PathBuf) {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-subj",
                &format!("/CN=connector test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        // A key and a certificate signed by the CA: `{name}.key`, `{name}.crt`.
        let issue = |name: &str, subject: &str, extensions: &str| {
            let (key, csr, ext, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.ext"),
                format!("{name}.crt"),
            );
            openssl(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                subject,
            ]);
            std::fs::write(dir.join(&ext), extensions).unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ]);
        };
        issue(
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        );
        if client_certs {
            issue(
                "client",
                "/CN=postgres",
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=clientAuth\n",
            );
        }
        let method = if client_certs { "cert" } else { "trust" };
        std::fs::write(
            self.dir.path().join("data/pg_hba.conf"),
            format!(
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 {method}\n\
                 hostssl replication all 127.0.0.1/32 {method}\n\
                 hostnossl all all 127.0.0.1/32 reject\n\
                 hostnossl replication all 127.0.0.1/32 reject\n"
            ),
        )
        .unwrap();
        let conf = self.dir.path().join("data/postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
        text.push_str(&format!(
            "ssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n\
             ssl_ca_file = '{0}/ca.pem'\n",
            dir.display()
        ));
        std::fs::write(&conf, text).unwrap();
        if self.as_postgres {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(self.dir.path())
                .status()
                .unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        for key in ["server.key", "client.key"] {
            if dir.join(key).exists() {
                std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }
        }
        self.restart();
        (dir.join("ca.pem"), dir.join("other-ca.pem"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// A `psql` on `db`, not started (for a session held open beside others).
    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = Command::new("psql");
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .arg("-p")
            .arg(self.port.to_string());
        // The server wants client certificates: psql shows the test's.
        let tls = self.dir.path().join("tls");
        if tls.join("client.crt").exists() {
            cmd.env("PGSSLCERT", tls.join("client.crt"))
                .env("PGSSLKEY", tls.join("client.key"));
        }
        cmd
    }

    /// Runs SQL; panics with the error if it fails.
    pub fn psql(&self, db: &str, sql: &str) {
        let out = self.psql_cmd(db).arg("-c").arg(sql).output().unwrap();
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts SQL in a psql of its own and returns at once (for statements
    /// that block until the test releases them).
    pub fn psql_spawn(&self, db: &str, sql: &str) -> std::process::Child {
        self.psql_cmd(db)
            .arg("-c")
            .arg(sql)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs a file with psql variables.
    pub fn psql_file(&self, db: &str, file: &Path, vars: &[(&str, &str)]) {
        let mut cmd = self.psql_cmd(db);
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        let out = cmd.arg("-f").arg(file).output().unwrap();
        assert!(
            out.status.success(),
            "psql -f {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One value (first column of the first row) as text; `None` for no rows or NULL.
    pub fn query(&self, db: &str, sql: &str) -> Option<String> {
        let out = self
            .psql_cmd(db)
            .args(["-A", "-t", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string();
        (!text.is_empty()).then_some(text)
    }

    pub fn count(&self, db: &str, table: &str) -> i64 {
        self.query(db, &format!("SELECT count(*) FROM {table}"))
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.try_run(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}
