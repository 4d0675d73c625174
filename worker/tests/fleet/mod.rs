//! A PostgreSQL fleet for end-to-end tests: one private cluster with the
//! databases `hq` (retail sample loaded) and `shop` (empty schema), and the
//! `connector` binary run as a real process against them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use connector_testkit::{wait_for, PgCluster};
use serde_json::Value;

/// A finished command's standard output and error, together.
pub fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// [`said`], asserting the command succeeded.
pub fn ok(out: &Output) -> String {
    let text = said(out);
    assert!(out.status.success(), "{text}");
    text
}

/// [`said`], asserting the command failed.
pub fn failed(out: &Output) -> String {
    let text = said(out);
    assert!(!out.status.success(), "{text}");
    text
}

pub const SYNCED: [&str; 8] = [
    "stores",
    "customers",
    "categories",
    "products",
    "inventory",
    "orders",
    "order_items",
    "store_order_numbers",
];

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A test-only collection: `devices.serial_no` is a nullable id field, so a
/// bad row (null id) can be made in PostgreSQL.
/// It also opts in to TRUNCATE propagation (the retail collections do not).
const TEST_MAPPING: &str = "collections:\n  devices:\n    id: {mode: single_field, field: serial_no}\n    propagate_truncate: true\n";

pub struct Fleet {
    pub pg: PgCluster,
    pub dir: tempfile::TempDir,
    /// More environment for the connector processes.
    pub extra_env: Vec<(String, String)>,
    child: Option<Child>,
    runs: usize,
}

impl Fleet {
    pub fn new(scale: &str) -> Fleet {
        let pg = PgCluster::start();
        let schema = repo().join("scripts/retail/schema.sql");
        for db in ["hq", "shop"] {
            pg.create_db(db);
            pg.psql_file(db, &schema, &[]);
            pg.psql(
                db,
                "CREATE TABLE devices (id serial PRIMARY KEY, serial_no text UNIQUE, name text)",
            );
        }
        pg.psql_file(
            "hq",
            &repo().join("scripts/retail/generate.sql"),
            &[("scale", scale)],
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mappings")).unwrap();
        std::fs::copy(
            repo().join("mappings/retail.yaml"),
            dir.path().join("mappings/retail.yaml"),
        )
        .unwrap();
        std::fs::write(dir.path().join("mappings/test.yaml"), TEST_MAPPING).unwrap();
        Fleet {
            pg,
            dir,
            extra_env: Vec::new(),
            child: None,
            runs: 0,
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "CONNECTOR_PROVIDERS".into(),
                "hq=postgres,shop=postgres".into(),
            ),
            ("CONNECTOR_HQ_CONNECTION_STRING".into(), self.pg.url("hq")),
            (
                "CONNECTOR_SHOP_CONNECTION_STRING".into(),
                self.pg.url("shop"),
            ),
            (
                "CONNECTOR_STORE".into(),
                self.dir.path().join("store.db").display().to_string(),
            ),
            (
                "CONNECTOR_MAPPINGS".into(),
                self.dir.path().join("mappings").display().to_string(),
            ),
            ("DITTO_CLOUD_SYNC_INTERVAL".into(), "200".into()),
            ("CONNECTOR_HQ_OPTIONS".into(), "heartbeat_ms=1000".into()),
            ("CONNECTOR_SHOP_OPTIONS".into(), "heartbeat_ms=1000".into()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_connector"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(self.dir.path())
            .args(args);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// A connector command with the fleet's environment and `extra`, not
    /// started (for a second process beside the fleet's own).
    pub fn command_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut cmd = self.command(args);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a connector command to completion.
    pub fn connector(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts a connector command in the background, its output in a log file.
    pub fn spawn(&mut self, args: &[&str]) -> &mut Child {
        self.runs += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("run{}.log", self.runs))).unwrap();
        let child = self
            .command(args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.child.as_mut().unwrap()
    }

    /// A fleet that ran until hq and shop were in sync, then stopped
    /// cleanly: for changes made while the worker is down.
    pub fn synced_and_stopped(scale: &str) -> Fleet {
        let mut f = Fleet::new(scale);
        f.start();
        f.wait_in_sync();
        assert_eq!(f.stop(), Some(0));
        f
    }

    /// Rows the store's initial-sync progress of `provider` counts as
    /// copied.
    pub fn progress_rows(&self, provider: &str) -> u64 {
        connector_store::Store::open(self.dir.path().join("store.db"))
            .and_then(|s| s.initial_sync_progress(provider))
            .unwrap()
            .2
    }

    /// Runs `initial-sync` for `provider` after an interrupted one and checks
    /// that it copied exactly the rows the first run had not finished: a
    /// copy that started a begun collection over would copy more.
    pub fn resume_initial_sync(&self, provider: &str) {
        let before = self.progress_rows(provider);
        assert!(before > 0, "the interrupted copy saved progress");
        let out = self.connector(&["initial-sync", "--provider", provider]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        let copied: u64 = said
            .split("initial sync done: ")
            .nth(1)
            .and_then(|rest| rest.split(" rows").next())
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary: {said}"));
        assert!(copied > 0, "nothing left to resume: the copy had finished");
        assert_eq!(
            before + copied,
            self.progress_rows(provider),
            "the resumed copy copies only what the first did not: {said}"
        );
    }

    /// `connector initial-sync --provider P` in the background, slowed by a
    /// test hook (a pause after each chunk) so that a kill lands halfway.
    pub fn spawn_slowed_copy(&mut self, provider: &str) {
        self.extra_env
            .push(("CONNECTOR_TEST_PAUSE_AFTER_CHUNK_MS".into(), "300".into()));
        self.spawn(&["initial-sync", "--provider", provider]);
        self.extra_env
            .retain(|(k, _)| k != "CONNECTOR_TEST_PAUSE_AFTER_CHUNK_MS");
    }

    /// The retail mapping with the first `from` replaced by `to`, the
    /// providers' names of a collection, e.g. (asserting it was there).
    pub fn edit_retail_mapping(&self, from: &str, to: &str) {
        let path = self.dir.path().join("mappings/retail.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        assert!(yaml.contains(from), "`{from}` not in the retail mapping");
        std::fs::write(&path, yaml.replacen(from, to, 1)).unwrap();
    }

    /// Asserts the store holds no dead letter.
    pub fn no_dead_letters(&self) {
        let out = ok(&self.connector(&["dead-letters", "list", "--json"]));
        assert_eq!(out.trim(), "[]", "{out}");
    }

    /// `connector run` whose first copy waits `ms` after creating hq's slot
    /// (a test hook), returned once the slot exists.
    pub fn start_with_first_copy_paused(&mut self, ms: &str) {
        self.extra_env
            .push(("CONNECTOR_TEST_PAUSE_AFTER_SLOT_MS".into(), ms.into()));
        self.start();
        self.wait_for_hq_slot();
        self.extra_env
            .retain(|(k, _)| k != "CONNECTOR_TEST_PAUSE_AFTER_SLOT_MS");
    }

    /// Waits until hq's replication slot exists (a first copy created it).
    pub fn wait_for_hq_slot(&self) {
        wait_for("hq's slot", Duration::from_secs(60), || {
            (self
                .pg
                .query(
                    "hq",
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'connector_hq'",
                )
                .as_deref()
                == Some("1"))
            .then_some(())
        });
    }

    /// The first inventory row of hq: its id and quantity (a counter).
    pub fn first_inventory(&self) -> (String, i64) {
        let row = self
            .pg
            .query(
                "hq",
                "SELECT id || ' ' || quantity FROM inventory ORDER BY id LIMIT 1",
            )
            .unwrap();
        let (id, qty) = row.split_once(' ').unwrap();
        (id.to_string(), qty.parse().unwrap())
    }

    /// `connector run` in the background.
    pub fn start(&mut self) {
        self.spawn(&["run"]);
    }

    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("run{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..300 {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.kill().unwrap();
        panic!(
            "connector did not stop within 30 s of SIGTERM:\n{}",
            self.logs()
        );
    }

    pub fn status(&self) -> Value {
        let out = self.connector(&["status", "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// A value from both databases once they agree, or panic with both.
    pub fn converged(&self, sql: &str) -> Option<String> {
        wait_for(
            &format!("hq and shop to agree on {sql}\n{}", self.logs()),
            Duration::from_secs(60),
            || {
                let (a, b) = (self.pg.query("hq", sql), self.pg.query("shop", sql));
                (a == b).then_some(a)
            },
        )
    }

    /// Waits until `get()` returns `want`, or panics with the last value and
    /// the connector's logs.
    pub fn expect<T: PartialEq + std::fmt::Debug>(&self, what: &str, want: T, get: impl Fn() -> T) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = get();
            if got == want {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!("{what}: expected {want:?}, got {got:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Fleet::expect`] for text, e.g. a query's output.
    pub fn expect_text(&self, what: &str, want: &str, get: impl Fn() -> String) {
        self.expect(what, want.to_string(), get);
    }

    /// Waits until both databases return `expected` (agreeing on something
    /// else on the way is not enough: a conflict may still be settling).
    pub fn expect_both(&self, sql: &str, expected: &str) {
        let want = Some(expected.to_string());
        self.expect(
            &format!("{sql} in hq and shop"),
            (want.clone(), want),
            || (self.pg.query("hq", sql), self.pg.query("shop", sql)),
        );
    }

    /// Waits until database `db` returns `expected`.
    pub fn expect_in(&self, db: &str, sql: &str, expected: &str) {
        self.expect(
            &format!("{sql} in {db}"),
            Some(expected.to_string()),
            || self.pg.query(db, sql),
        );
    }

    /// One provider's entry of `connector status --json`.
    pub fn provider_status(&self, provider: &str) -> Option<Value> {
        self.status()["providers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == provider)
            .cloned()
    }

    /// `devices` in `db` made again, partitioned in two by its id
    /// (`serial_no`).
    pub fn partitioned_devices(&self, db: &str) {
        self.pg.psql(
            db,
            "DROP TABLE devices;
             CREATE TABLE devices (id serial, serial_no text PRIMARY KEY, name text) PARTITION BY HASH (serial_no);
             CREATE TABLE devices_0 PARTITION OF devices FOR VALUES WITH (MODULUS 2, REMAINDER 0);
             CREATE TABLE devices_1 PARTITION OF devices FOR VALUES WITH (MODULUS 2, REMAINDER 1);",
        );
    }

    /// A generated `orders.total_x2` (total * 2) in both databases.
    pub fn generated_total_in_both(&self) {
        for db in ["hq", "shop"] {
            self.pg.psql(
                db,
                "ALTER TABLE orders ADD COLUMN total_x2 numeric GENERATED ALWAYS AS (total * 2) STORED",
            );
        }
    }

    /// In hq, without foreign keys: order 900001's two items inserted
    /// before the order, in one transaction.
    pub fn hq_inserts_children_first(&self) {
        self.pg.psql(
            "hq",
            "BEGIN;
             INSERT INTO order_items VALUES (gen_random_uuid(), 900001, 1, 2, 3.50);
             INSERT INTO order_items VALUES (gen_random_uuid(), 900001, 2, 1, 1.25);
             INSERT INTO orders VALUES (900001, 1, 1, now(), 'child-first', 8.25);
             COMMIT;",
        );
    }

    /// In shop: a validation trigger refusing orders of status `bad`.
    pub fn shop_refuses_bad_statuses(&self) {
        self.pg.psql(
            "shop",
            "CREATE FUNCTION no_bad() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.status = 'bad' THEN RAISE EXCEPTION 'status bad refused'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER no_bad BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION no_bad();",
        );
    }

    /// In hq: device `d-1`, a scanner, which then reaches shop.
    pub fn hq_adds_a_scanner(&self) {
        self.pg.psql(
            "hq",
            "INSERT INTO devices (serial_no, name) VALUES ('d-1', 'scanner')",
        );
        self.expect_in(
            "shop",
            "SELECT name FROM devices WHERE serial_no = 'd-1'",
            "scanner",
        );
    }

    /// In hq: order 900001 deleted before its items, in one transaction.
    pub fn hq_deletes_the_parent_first(&self) {
        self.pg.psql(
            "hq",
            "BEGIN;
             DELETE FROM orders WHERE order_id = 900001;
             DELETE FROM order_items WHERE order_id = 900001;
             COMMIT;",
        );
    }

    /// Waits until every synced table has the same rows (by content) in both.
    pub fn wait_in_sync(&self) {
        for t in SYNCED {
            let filter = if t == "customers" {
                " WHERE NOT deleted"
            } else {
                ""
            };
            let sql = format!("SELECT count(*) || ':' || coalesce(sum(hashtext(x::text)::int8), 0) FROM {t} x{filter}");
            self.converged(&sql);
        }
    }

    /// The store's change log for one document, for failure messages.
    pub fn history(&self, collection: &str, id: serde_json::Value) -> String {
        let store = connector_store::Store::open(self.dir.path().join("store.db")).unwrap();
        store
            .read_log(0, 1_000_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.collection == collection && e.id == id)
            .map(|e| format!("{} {} {:?}", e.seq, e.origin, e.write))
            .collect::<Vec<_>>()
            .join("\n")
            + &format!(
                "\nshadows, intents, positions:\n{}\nlogs:\n{}",
                String::from_utf8_lossy(
                    &Command::new("sqlite3")
                        .arg(self.dir.path().join("store.db"))
                        .arg(format!(
                            "select provider, held, seen from shadows where collection = '{collection}' and id = '{id}'; \
                             select provider, shadow from sink_intents where collection = '{collection}' and id = '{id}'; \
                             select provider, position from positions;"
                        ))
                        .output()
                        .map(|o| o.stdout)
                        .unwrap_or_default()
                ),
                self.logs()
            )
    }

    pub fn verify(&self) -> Output {
        self.connector(&["verify"])
    }
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("connector logs:\n{}", self.logs());
        }
    }
}
