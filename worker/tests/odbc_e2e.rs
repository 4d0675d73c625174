//! The ODBC provider end to end, on real ODBC drivers: PostgreSQL `hq`
//! (logical replication) ↔ store ↔ `shop`, where `shop` is an SQLite file
//! through the SQLite ODBC driver, a MariaDB server through MariaDB
//! Connector/ODBC, or a PostgreSQL database through psqlODBC. Every server
//! is started and stopped by the test.
#![cfg(all(feature = "postgres", feature = "odbc"))]

mod fleet;

use std::time::Duration;

use connector_testkit::{MariaDb, OdbcConfig, SqliteDb};
use fleet::{failed, ok, repo, wait_for, Fleet};

/// Points the fleet's `shop` at an ODBC connection string.
fn odbc_shop(f: &mut Fleet, odbc: &OdbcConfig, conn: String) {
    f.extra_env.extend(odbc.env());
    f.extra_env.extend([
        ("CONNECTOR_PROVIDERS".into(), "hq=postgres,shop=odbc".into()),
        ("CONNECTOR_SHOP_CONNECTION_STRING".into(), conn),
        ("CONNECTOR_SHOP_OPTIONS".into(), "gap_timeout_s=30".into()),
        ("DITTO_CLOUD_SYNC_INTERVAL".into(), "100".into()),
    ]);
}

/// Points the fleet's `shop` at its PostgreSQL database through psqlODBC.
fn psqlodbc_shop(f: &mut Fleet, odbc: &OdbcConfig) {
    let conn = format!(
        "Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={};Database=shop;Uid=postgres;Pwd=;SSLmode=disable;",
        f.pg.port
    );
    odbc_shop(f, odbc, conn);
}

/// hq and a psqlODBC shop whose `devices` both have `column` (its DDL),
/// shop holding `shop_row` before the first copy; set up and running.
fn psqlodbc_devices_with(column: &str, shop_row: &str) -> (Fleet, OdbcConfig) {
    let mut f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(db, &format!("ALTER TABLE devices ADD COLUMN {column}"));
    }
    f.pg.psql("shop", shop_row);
    let odbc = OdbcConfig::new(None);
    psqlodbc_shop(&mut f, &odbc);
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    (f, odbc)
}

#[test]
fn binary_copied_through_psqlodbc_arrives_as_the_same_bytes() {
    let (f, _odbc) = psqlodbc_devices_with(
        "blob bytea",
        "INSERT INTO devices (serial_no, name, blob) VALUES ('b-1', 'copied', '\\x00ff0a')",
    );
    // Copied (before, psqlODBC dropped the `\x` and hq stored the text).
    f.expect_in(
        "hq",
        "SELECT encode(blob, 'hex') FROM devices WHERE serial_no = 'b-1'",
        "00ff0a",
    );
    // Streamed through the journal: the same form.
    f.pg.psql(
        "shop",
        "INSERT INTO devices (serial_no, name, blob) VALUES ('b-2', 'streamed', '\\x0102')",
    );
    f.expect_in(
        "hq",
        "SELECT encode(blob, 'hex') FROM devices WHERE serial_no = 'b-2'",
        "0102",
    );
}

#[test]
fn intervals_and_floats_through_psqlodbc_take_the_native_providers_forms() {
    let (f, _odbc) = psqlodbc_devices_with(
        "span interval, ADD COLUMN ratio float8, ADD COLUMN until timestamptz",
        "INSERT INTO devices (serial_no, name, span, ratio, until) VALUES ('i-0', 'copied', '1 day 02:03:04', 0.1, 'infinity')",
    );
    f.expect_in(
        "hq",
        "SELECT span::text FROM devices WHERE serial_no = 'i-0'",
        "1 day 02:03:04",
    );
    // An application session with styles of its own: its trigger wrote the
    // image in them (one spurious change per write against hq's forms).
    f.pg.psql(
        "shop",
        "SET IntervalStyle = 'postgres_verbose'; SET extra_float_digits = 0; \
         INSERT INTO devices (serial_no, name, span, ratio, until) VALUES ('i-1', 'streamed', '3 hours', 0.1::float8 + 0.2::float8, '-infinity')",
    );
    f.expect_in(
        "hq",
        "SELECT span::text || ' ' || (ratio = 0.1::float8 + 0.2::float8) FROM devices WHERE serial_no = 'i-1'",
        "03:00:00 true",
    );
    for (id, span, until) in [
        ("i-0", "P1DT2H3M4S", "infinity"),
        ("i-1", "PT3H", "-infinity"),
    ] {
        let doc = ok(&f.connector(&["query", "devices", id]));
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(doc["span"], serde_json::json!(span), "{doc}");
        assert_eq!(doc["until"], serde_json::json!(until), "{doc}");
    }
    f.expect_in(
        "hq",
        "SELECT string_agg(until::text, ',' ORDER BY serial_no) FROM devices WHERE serial_no LIKE 'i-%'",
        "infinity,-infinity",
    );
}

#[test]
fn a_psqlodbc_copy_keyed_by_time_pages_in_time_order() {
    let mut f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(
            db,
            "CREATE TABLE readings (at timestamptz PRIMARY KEY, v int)",
        );
    }
    // Read as text (for `infinity`), the key must still sort as a time,
    // across the copy's chunks of 5,000: 6000 BC is before 1 BC, though
    // its text sorts after.
    f.pg.psql(
        "shop",
        "INSERT INTO readings VALUES ('-infinity', 1), ('2024-01-01 00:00:00', 4), \
         ('2024-01-01 00:00:00.5', 5), ('infinity', 6); \
         INSERT INTO readings SELECT '0001-06-01 00:00:00+00 BC'::timestamptz - make_interval(years => g / 2, days => g % 2), 0 \
         FROM generate_series(0, 5999) g",
    );
    std::fs::write(
        f.dir.path().join("mappings/readings.yaml"),
        "collections:\n  readings:\n    id: {mode: single_field, field: at}\n",
    )
    .unwrap();
    let odbc = OdbcConfig::new(None);
    psqlodbc_shop(&mut f, &odbc);
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in(
        "hq",
        "SELECT count(*) || ' ' || string_agg(v::text, ',' ORDER BY at) FILTER (WHERE v > 0) FROM readings",
        "6004 1,4,5,6",
    );
}

#[test]
fn an_array_column_through_psqlodbc_is_written_back_as_an_array() {
    let (f, _odbc) = psqlodbc_devices_with(
        "tags text[]",
        "INSERT INTO devices (id, serial_no, name, tags) VALUES (100, 'd-0', 'copied', ARRAY['x', 'y z'])",
    );
    // Copied as the journal gives it: a list, not PostgreSQL's `{x,"y z"}`
    // (the copy and the stream then disagreed on every such row).
    f.expect_in(
        "hq",
        "SELECT tags::text FROM devices WHERE serial_no = 'd-0'",
        r#"{x,"y z"}"#,
    );
    let doc = ok(&f.connector(&["query", "devices", "d-0"]));
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["tags"], serde_json::json!(["x", "y z"]), "{doc}");
    f.hq_adds_a_scanner();
    f.expect_in(
        "shop",
        "SELECT name FROM devices WHERE serial_no = 'd-1'",
        "scanner",
    );
    // shop's journal gives the array as a JSON list.
    f.pg.psql(
        "shop",
        "UPDATE devices SET tags = ARRAY['a', 'b c'] WHERE serial_no = 'd-1'",
    );
    f.expect_in(
        "hq",
        "SELECT tags::text FROM devices WHERE serial_no = 'd-1'",
        r#"{a,"b c"}"#,
    );
    // hq's change makes shop's sink write the whole document back, the
    // list with it (before, `CAST('["a","b c"]' AS text[])` refused it).
    f.pg.psql(
        "hq",
        "UPDATE devices SET name = 'old scanner' WHERE serial_no = 'd-1'",
    );
    f.expect_in(
        "shop",
        "SELECT name || ' ' || tags::text FROM devices WHERE serial_no = 'd-1'",
        r#"old scanner {a,"b c"}"#,
    );
}

fn sqlite_shop(f: &mut Fleet, odbc: &OdbcConfig) -> SqliteDb {
    let db = SqliteDb::new();
    let schema = std::fs::read_to_string(repo().join("scripts/retail/schema.sqlite.sql")).unwrap();
    db.sql(&schema);
    db.sql("CREATE TABLE devices (id INTEGER, serial_no TEXT PRIMARY KEY, name TEXT)");
    odbc_shop(f, odbc, db.odbc());
    db
}

/// A MariaDB server with a `shop` database of the retail schema.
fn mariadb_shop() -> MariaDb {
    let db = MariaDb::start();
    db.create_db("shop");
    let schema = std::fs::read_to_string(repo().join("scripts/retail/schema.mariadb.sql")).unwrap();
    db.sql("shop", &schema);
    db.sql(
        "shop",
        "CREATE TABLE devices (id INT, serial_no VARCHAR(100) PRIMARY KEY, name VARCHAR(100))",
    );
    db
}

/// hq and an SQLite shop that ran until shop held every order, then
/// stopped cleanly: for changes made while the worker is down. The ODBC
/// configuration must outlive the fleet.
fn sqlite_synced_and_stopped() -> (Fleet, OdbcConfig, SqliteDb) {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_text("orders copied", "200", || {
        shop.sql("SELECT count(*) FROM orders")
    });
    assert_eq!(f.stop(), Some(0));
    (f, odbc, shop)
}

fn verify_passes(f: &Fleet) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = f.verify();
        if out.status.success() {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "connector verify keeps failing:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// shop inserts and updates a row with a composite id (store_id, order_no).
fn composite_id_from_shop(shop: &dyn Fn(&str) -> String) {
    shop("INSERT INTO store_order_numbers VALUES (3, 17, '2024-06-01 12:00:00', 'first')");
    shop("UPDATE store_order_numbers SET note = 'changed' WHERE store_id = 3 AND order_no = 17");
}

/// hq holds what [`composite_id_from_shop`] wrote.
fn composite_id_arrived(f: &Fleet) {
    f.expect_in(
        "hq",
        "SELECT note || ' ' || issued_at FROM store_order_numbers WHERE store_id = 3 AND order_no = 17",
        "changed 2024-06-01 12:00:00+00",
    );
}

/// A decrement of an inventory counter in hq and one in shop add up in
/// both (shop's SQL through `shop`).
fn counter_decrements_add_up(f: &Fleet, what: &str, shop: &dyn Fn(&str) -> String) {
    let (id, qty) = f.first_inventory();
    let want = (qty - 5).to_string();
    f.pg.psql(
        "hq",
        &format!("UPDATE inventory SET quantity = quantity - 2 WHERE id = '{id}'"),
    );
    shop(&format!(
        "UPDATE inventory SET quantity = quantity - 3 WHERE id = '{id}'"
    ));
    f.expect_in(
        "hq",
        &format!("SELECT quantity FROM inventory WHERE id = '{id}'"),
        &want,
    );
    f.expect_text(&format!("the counter in {what}"), &want, || {
        shop(&format!("SELECT quantity FROM inventory WHERE id = '{id}'"))
    });
}

#[test]
fn postgres_and_sqlite_stay_in_sync_both_ways() {
    let mut f = Fleet::new("0.002");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);

    let dry = ok(&f.connector(&["setup", "--provider", "shop", "--dry-run"]));
    assert!(
        dry.contains("CREATE TABLE IF NOT EXISTS \"connector_journal\"")
            && dry.contains(
                "CREATE TRIGGER \"connector_journal_orders_upd\" AFTER UPDATE ON \"orders\""
            )
            && dry.contains("dry run: nothing was executed"),
        "{dry}"
    );
    assert_eq!(
        shop.sql("SELECT count(*) FROM sqlite_master WHERE name = 'connector_journal'"),
        "0",
        "--dry-run executes nothing"
    );
    ok(&f.connector(&["setup", "--provider", "shop"]));
    let again = ok(&f.connector(&["setup", "--provider", "shop"]));
    assert!(
        again.contains("the journal \"connector_journal\" exists"),
        "{again}"
    );
    assert_eq!(
        shop.sql("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"),
        "27",
        "three triggers per mapped table"
    );

    f.start();
    for t in fleet::SYNCED {
        let filter = if t == "customers" {
            " WHERE NOT deleted"
        } else {
            ""
        };
        let want =
            f.pg.query("hq", &format!("SELECT count(*) FROM {t}{filter}"))
                .unwrap();
        f.expect_text(&format!("{t} copied"), &want, || {
            shop.sql(&format!("SELECT count(*) FROM {t}"))
        });
    }

    // hq → SQLite
    f.pg.psql(
        "hq",
        "INSERT INTO orders VALUES (900001, 1, 1, '2024-05-01 10:00:00+02', 'new', 10.50)",
    );
    f.pg.psql("hq", "UPDATE orders SET status = 'paid' WHERE order_id = 1");
    f.pg.psql("hq", "DELETE FROM orders WHERE order_id = 2");
    f.expect_text(
        "an insert from hq",
        "new|10.5|2024-05-01 08:00:00.000000",
        || shop.sql("SELECT status, total, order_date FROM orders WHERE order_id = 900001"),
    );
    f.expect_text("an update from hq", "paid", || {
        shop.sql("SELECT status FROM orders WHERE order_id = 1")
    });
    f.expect_text("a delete from hq", "0", || {
        shop.sql("SELECT count(*) FROM orders WHERE order_id = 2")
    });

    // SQLite → hq: insert, update, delete, a composite id, JSON, a boolean
    composite_id_from_shop(&|sql| shop.sql(sql));
    shop.sql("UPDATE products SET attributes = '{\"color\": \"teal\"}' WHERE product_id = 1");
    shop.sql("UPDATE orders SET status = 'shipped' WHERE order_id = 3");
    shop.sql("DELETE FROM orders WHERE order_id = 4");
    composite_id_arrived(&f);
    f.expect_in(
        "hq",
        "SELECT attributes->>'color' FROM products WHERE product_id = 1",
        "teal",
    );
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 3",
        "shipped",
    );
    f.expect_in("hq", "SELECT count(*) FROM orders WHERE order_id = 4", "0");

    counter_decrements_add_up(&f, "SQLite", &|sql| shop.sql(sql));

    // A NULL id goes to the dead letters; the stream goes on.
    shop.sql("INSERT INTO devices VALUES (1, NULL, 'no serial')");
    shop.sql("UPDATE orders SET status = 'after-null' WHERE order_id = 5");
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 5",
        "after-null",
    );
    let dead = ok(&f.connector(&["dead-letters", "list", "--json"]));
    assert!(
        dead.contains("devices") && dead.contains("no serial"),
        "{dead}"
    );

    // No echo loop: once quiet, nothing more is written anywhere.
    std::thread::sleep(Duration::from_secs(2));
    let journal = || shop.sql("SELECT coalesce(max(seq), 0) FROM connector_journal");
    let (j1, s1) = (journal(), f.status());
    std::thread::sleep(Duration::from_secs(3));
    let (j2, s2) = (journal(), f.status());
    assert_eq!(j1, j2, "the SQLite journal keeps growing: an echo loop");
    assert_eq!(
        s1["store"]["last_seq"], s2["store"]["last_seq"],
        "the store's log keeps growing: an echo loop"
    );
    // Journal rows are pruned once merged, all but the last one read.
    f.expect_text("the journal to be pruned", "1", || {
        shop.sql("SELECT count(*) FROM connector_journal")
    });
    // `status` shows the journal and how far it was read.
    journal_read_and_pruned(&f);

    // kill -9 while polling: nothing lost, nothing doubled.
    for i in 0..200 {
        shop.sql(&format!(
            "INSERT INTO orders VALUES ({}, 1, 1, '2024-07-01 00:00:00', 'burst', {i})",
            800_000 + i
        ));
        if i == 100 {
            f.kill9();
        }
    }
    f.start();
    f.expect_in(
        "hq",
        "SELECT count(*) FROM orders WHERE status = 'burst'",
        "200",
    );
    verify_passes(&f);
    assert_eq!(f.stop(), Some(0));
}

#[test]
fn an_sqlite_target_with_foreign_keys_gets_parents_first() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    shop.sql(
        "DROP TABLE order_items;
         CREATE TABLE order_items (id TEXT PRIMARY KEY,
           order_id BIGINT NOT NULL REFERENCES orders (order_id),
           product_id INT NOT NULL, quantity INT NOT NULL, price NUMERIC(10,2))",
    );
    // The driver enforces foreign keys when asked to.
    let fk = format!("{}FKSupport=1;", shop.odbc());
    f.extra_env
        .push(("CONNECTOR_SHOP_CONNECTION_STRING".into(), fk));
    parents_first_into(&mut f, &|sql| shop.sql(sql));
}

#[test]
fn a_mariadb_target_with_foreign_keys_gets_parents_first() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let db = mariadb_shop();
    db.sql(
        "shop",
        "ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders (order_id)",
    );
    odbc_shop(&mut f, &odbc, db.odbc("shop"));
    parents_first_into(&mut f, &|sql| db.sql("shop", sql));
}

#[test]
fn a_mariadb_schema_other_than_the_connections_database_is_journaled_there() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let db = mariadb_shop();
    db.create_db("elsewhere");
    // The session's default database is another one: the triggers were
    // made there and refused ("Trigger in wrong schema").
    odbc_shop(&mut f, &odbc, db.odbc("elsewhere"));
    f.extra_env
        .push(("CONNECTOR_SHOP_SCHEMA".into(), "shop".into()));
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_text("orders copied", "200", || {
        db.sql("shop", "SELECT count(*) FROM orders")
    });
    db.sql(
        "shop",
        "UPDATE orders SET status = 'from shop' WHERE order_id = 3",
    );
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 3",
        "from shop",
    );
}

#[test]
fn mariadb_foreign_key_cascades_reach_the_other_databases() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let db = mariadb_shop();
    // InnoDB's cascades fire no trigger: the rows they delete or change
    // were never journaled and stayed everywhere else.
    db.sql(
        "shop",
        "CREATE TABLE fk_orders (id INT PRIMARY KEY, note VARCHAR(20));
         CREATE TABLE fk_lines (id INT PRIMARY KEY, order_id INT NOT NULL, qty INT,
           FOREIGN KEY (order_id) REFERENCES fk_orders (id) ON DELETE CASCADE ON UPDATE CASCADE);
         CREATE TABLE fk_notes (id INT PRIMARY KEY, line_id INT NOT NULL, body VARCHAR(20),
           FOREIGN KEY (line_id) REFERENCES fk_lines (id) ON DELETE CASCADE);
         CREATE TABLE fk_tags (id INT PRIMARY KEY, order_id INT NULL, label VARCHAR(20),
           FOREIGN KEY (order_id) REFERENCES fk_orders (id) ON DELETE SET NULL ON UPDATE SET NULL);",
    );
    f.pg.psql(
        "hq",
        "CREATE TABLE fk_orders (id int PRIMARY KEY, note text);
         CREATE TABLE fk_lines (id int PRIMARY KEY, order_id int NOT NULL, qty int);
         CREATE TABLE fk_notes (id int PRIMARY KEY, line_id int NOT NULL, body text);
         CREATE TABLE fk_tags (id int PRIMARY KEY, order_id int, label text);",
    );
    let yaml: String = ["fk_orders", "fk_lines", "fk_notes", "fk_tags"]
        .iter()
        .map(|t| format!("  {t}:\n    id: {{mode: single_field, field: id}}\n"))
        .collect();
    std::fs::write(
        f.dir.path().join("mappings/fk.yaml"),
        format!("collections:\n{yaml}"),
    )
    .unwrap();
    odbc_shop(&mut f, &odbc, db.odbc("shop"));
    let setup = ok(&f.connector(&["setup", "--provider", "shop"]));
    assert!(setup.contains("fk_orders_fkdel"), "{setup}");
    f.start();
    f.expect_text("orders copied", "200", || {
        db.sql("shop", "SELECT count(*) FROM orders")
    });
    db.sql(
        "shop",
        "INSERT INTO fk_orders VALUES (1, 'one'), (2, 'two'), (3, 'three');
         INSERT INTO fk_lines VALUES (11, 1, 5), (12, 1, 6), (21, 2, 7), (31, 3, 8);
         INSERT INTO fk_notes VALUES (211, 21, 'on a line of 2'), (311, 31, 'stays');
         INSERT INTO fk_tags VALUES (1, 1, 'of one'), (2, 2, 'of two'), (3, 3, 'of three');",
    );
    f.expect_in("hq", "SELECT count(*) FROM fk_notes", "2");
    f.expect_in("hq", "SELECT count(*) FROM fk_tags", "3");
    // A key update cascades to the lines and nulls the tags.
    db.sql("shop", "UPDATE fk_orders SET id = 10 WHERE id = 1");
    f.expect_in(
        "hq",
        "SELECT string_agg(id || ':' || order_id, ',' ORDER BY id) FROM fk_lines",
        "11:10,12:10,21:2,31:3",
    );
    f.expect_in(
        "hq",
        "SELECT string_agg(id || ':' || coalesce(order_id::text, '-'), ',' ORDER BY id) FROM fk_tags",
        "1:-,2:2,3:3",
    );
    // A delete cascades two levels down and nulls the tags.
    db.sql("shop", "DELETE FROM fk_orders WHERE id = 2");
    f.expect_in(
        "hq",
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM fk_lines",
        "11,12,31",
    );
    f.expect_in(
        "hq",
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM fk_notes",
        "311",
    );
    f.expect_in(
        "hq",
        "SELECT string_agg(id || ':' || coalesce(order_id::text, '-'), ',' ORDER BY id) FROM fk_tags",
        "1:-,2:-,3:3",
    );
    f.expect_in(
        "hq",
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM fk_orders",
        "3,10",
    );
    // Setup again: the same triggers, made again, none dropped.
    let again = ok(&f.connector(&["setup", "--provider", "shop", "--dry-run"]));
    assert!(!again.contains("DROP TRIGGER"), "{again}");
    verify_passes(&f);
}

#[test]
fn mariadb_bytes_wide_characters_and_generated_columns_go_both_ways() {
    let mut f = Fleet::new("0.001");
    f.pg.psql(
        "hq",
        "ALTER TABLE devices ADD COLUMN payload bytea, ADD COLUMN label text, ADD COLUMN flag int",
    );
    let odbc = OdbcConfig::new(None);
    let db = mariadb_shop();
    // A database whose default charset is latin1 (upstream's before 11.6),
    // and a generated column of shop's own.
    db.sql(
        "shop",
        "ALTER DATABASE shop CHARACTER SET latin1;
         ALTER TABLE devices ADD COLUMN payload BLOB, ADD COLUMN label VARCHAR(100) CHARACTER SET utf8mb4,
           ADD COLUMN flag BIT(1),
           ADD COLUMN name_len INT AS (CHAR_LENGTH(name)) STORED;
         -- A journal an earlier version made: in the database's charset.
         CREATE TABLE connector_journal (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
           tbl VARCHAR(128) NOT NULL, op CHAR(1) NOT NULL, new_image LONGTEXT, old_image LONGTEXT,
           changed_ms BIGINT NOT NULL) ENGINE=InnoDB;",
    );
    odbc_shop(&mut f, &odbc, db.odbc("shop"));
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name, payload, label, flag) VALUES ('d-1', 'scanner', '\\x00ff0a', '€ 日本', 1)",
    );
    // Bytes as bytes (before, the text `\x00ff0a`), and the upsert leaves
    // the generated column to shop.
    f.expect_text("the device in shop", "00FF0A|7|1", || {
        db.sql(
            "shop",
            "SELECT CONCAT(HEX(payload), '|', name_len, '|', flag + 0) FROM devices WHERE serial_no = 'd-1'",
        )
    });
    // shop's own change, through its journal: a wide character in the
    // image (before, the latin1 journal refused it and so the application's
    // own UPDATE), and bytes as bytes.
    db.sql(
        "shop",
        "UPDATE devices SET label = '😀 ok', payload = UNHEX('0102') WHERE serial_no = 'd-1'",
    );
    f.expect_in(
        "hq",
        "SELECT label || ' ' || encode(payload, 'hex') FROM devices WHERE serial_no = 'd-1'",
        "😀 ok 0102",
    );
    // The document holds no `name_len` (shop's image leaves it out), so
    // hq's next change is written without it (naming it, MariaDB refused
    // the upsert: error 1906).
    f.pg.psql(
        "hq",
        "UPDATE devices SET name = 'old scanner' WHERE serial_no = 'd-1'",
    );
    f.expect_text("the rename in shop", "old scanner|11", || {
        db.sql(
            "shop",
            "SELECT CONCAT(name, '|', name_len) FROM devices WHERE serial_no = 'd-1'",
        )
    });
}

#[test]
fn a_mariadb_table_keyed_by_bytes_is_copied_past_its_first_chunk() {
    let mut f = Fleet::new("0.001");
    f.pg.psql("hq", "CREATE TABLE bin_keys (k bytea PRIMARY KEY, n int)");
    let odbc = OdbcConfig::new(None);
    let db = mariadb_shop();
    // UUIDs as BINARY(16), more rows than a chunk of the copy.
    db.sql(
        "shop",
        "CREATE TABLE bin_keys (k BINARY(16) PRIMARY KEY, n INT);
         INSERT INTO bin_keys SELECT UNHEX(MD5(seq)), seq FROM seq_1_to_12000;",
    );
    std::fs::write(
        f.dir.path().join("mappings/bin_keys.yaml"),
        "collections:\n  bin_keys:\n    id: {mode: single_field, field: k}\n",
    )
    .unwrap();
    odbc_shop(&mut f, &odbc, db.odbc("shop"));
    ok(&f.connector(&["setup", "--provider", "shop"]));
    // Before, the resume point (`\x…` text) went into UNHEX as it was:
    // NULL, and the copy ended after its first chunk.
    ok(&f.connector(&["initial-sync", "--provider", "shop"]));
    f.start();
    f.expect_in("hq", "SELECT count(*) FROM bin_keys", "12000");
    f.expect_in(
        "hq",
        "SELECT n FROM bin_keys WHERE k = decode(md5('77'), 'hex')",
        "77",
    );
}

#[test]
fn a_mariadb_row_clashing_on_another_unique_column_is_refused_not_written_over_the_other() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let db = mariadb_shop();
    db.sql(
        "shop",
        "CREATE UNIQUE INDEX customers_email ON customers (email)",
    );
    odbc_shop(&mut f, &odbc, db.odbc("shop"));
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_text("customer 1 copied", "Customer 1", || {
        db.sql("shop", "SELECT name FROM customers WHERE customer_id = 1")
    });
    // hq (no such index) gives a new customer customer 1's email.
    f.pg.psql(
        "hq",
        "INSERT INTO customers VALUES (900, 1, 'clash', 'customer1@example.com', false, now());
         UPDATE orders SET status = 'after the clash' WHERE order_id = 1;",
    );
    f.expect_text("the later change in shop", "after the clash", || {
        db.sql("shop", "SELECT status FROM orders WHERE order_id = 1")
    });
    // Before, ON DUPLICATE KEY UPDATE wrote customer 900 over customer 1.
    assert_eq!(
        db.sql("shop", "SELECT name FROM customers WHERE customer_id = 1"),
        "Customer 1"
    );
    f.expect_text("customer 900 refused", "customers", || {
        let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .filter(|d| d["record"]["_id"] == 900)
            .map(|d| d["collection"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    });
    // An AUTO_INCREMENT key would take the guard's NULL as 0 (the other
    // row re-keyed, no error): the guard is off there, and the sink says
    // why. (One server for both: parallel MariaDB servers are flaky here.)
    assert_eq!(f.stop(), Some(0));
    db.sql(
        "shop",
        "ALTER TABLE customers MODIFY customer_id INT NOT NULL AUTO_INCREMENT",
    );
    f.start();
    f.pg.psql(
        "hq",
        "INSERT INTO customers VALUES (901, 1, 'clash 2', 'customer2@example.com', false, now());
         UPDATE orders SET status = 'second clash' WHERE order_id = 1;",
    );
    f.expect_text("the later change in shop", "second clash", || {
        db.sql("shop", "SELECT status FROM orders WHERE order_id = 1")
    });
    assert_eq!(
        db.sql(
            "shop",
            "SELECT count(*) FROM customers WHERE customer_id = 0"
        ),
        "0"
    );
    assert!(f.logs().contains("the id is nullable or AUTO_INCREMENT"));
}

/// Sets shop up, then: the copy, children written before their parent and
/// a parent deleted before its children in hq (which has no foreign keys)
/// all arrive in shop's table with the key; an orphan is refused, and
/// written by itself once hq commits its parent.
fn parents_first_into(f: &mut Fleet, shop: &dyn Fn(&str) -> String) {
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    let want =
        f.pg.query("hq", "SELECT count(*) FROM order_items")
            .unwrap();
    f.expect_text("order_items copied", &want, || {
        shop("SELECT count(*) FROM order_items")
    });
    f.hq_inserts_children_first();
    f.expect_text("children written before their parent in hq", "2", || {
        shop("SELECT count(*) FROM order_items WHERE order_id = 900001")
    });
    f.hq_deletes_the_parent_first();
    f.expect_text("the parent deleted before its child in hq", "0", || {
        shop(
            "SELECT (SELECT count(*) FROM orders WHERE order_id = 900001) + \
             (SELECT count(*) FROM order_items WHERE order_id = 900001)",
        )
    });
    // An orphan is refused: the foreign key is enforced.
    f.pg.psql(
        "hq",
        "INSERT INTO order_items VALUES (gen_random_uuid(), 999999, 1, 1, 1)",
    );
    let stages = || {
        let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let stages: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["stage"].as_str().unwrap().to_string())
            .collect();
        stages.join(",")
    };
    f.expect_text("the orphan waits for its parent", "sink-waiting", stages);
    // Its parent, committed later in hq: the item is tried again and lands.
    f.pg.psql(
        "hq",
        "INSERT INTO orders VALUES (999999, 1, 1, now(), 'parent after child', 1)",
    );
    f.expect_text("the orphan written after its parent", "1", || {
        shop("SELECT count(*) FROM order_items WHERE order_id = 999999")
    });
    f.expect_text("no dead letter left", "", stages);
}

#[test]
fn a_blob_in_sqlite_does_not_fail_the_applications_write() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    shop.sql(
        "ALTER TABLE stores ADD COLUMN logo BLOB;
         INSERT INTO stores VALUES (90, 'copied with a blob', 'x', NULL, x'00FF')",
    );
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in(
        "hq",
        "SELECT name FROM stores WHERE store_id = 90",
        "copied with a blob",
    );
    // The application's write of a BLOB goes through the journal trigger
    // (once hq's store 1 reached shop).
    f.expect_text("hq's store 1 in shop", "1", || {
        shop.sql("SELECT count(*) FROM stores WHERE store_id = 1")
    });
    shop.sql("UPDATE stores SET logo = x'0102', name = 'blob store' WHERE store_id = 1");
    f.expect_in(
        "hq",
        "SELECT name FROM stores WHERE store_id = 1",
        "blob store",
    );
    // The copy and the journal give a BLOB the same form.
    for (id, logo) in [("90", "\\\\x00ff"), ("1", "\\\\x0102")] {
        let doc = ok(&f.connector(&["query", "stores", id]));
        assert!(doc.contains(&format!("\"logo\": \"{logo}\"")), "{doc}");
    }
}

#[test]
fn an_sqlite_table_of_seventy_columns_is_journaled_whole() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    // More columns than one json_object call takes (63 pairs in SQLite
    // before 3.48): setup was refused. One name needs quoting in a path.
    let cols: Vec<String> = (1..=69)
        .map(|i| format!("c{i}"))
        .chain(["odd\"name".into()])
        .collect();
    let ddl = |ty: &str| {
        format!(
            "CREATE TABLE wide (id INTEGER PRIMARY KEY, {})",
            cols.iter()
                .map(|c| format!("\"{}\" {ty}", c.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    shop.sql(&ddl("TEXT"));
    f.pg.psql("hq", &ddl("text"));
    std::fs::write(
        f.dir.path().join("mappings/wide.yaml"),
        "collections:\n  wide:\n    id: {mode: single_field, field: id}\n",
    )
    .unwrap();
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in("hq", "SELECT count(*) FROM orders", "200");
    shop.sql(
        "INSERT INTO wide (id, c1, c63, c64, c69, \"odd\"\"name\") VALUES (1, 'first', 'x}', NULL, 'last', 'odd')",
    );
    f.expect_in(
        "hq",
        "SELECT concat_ws('|', c1, c63, coalesce(c64, 'null'), c69, \"odd\"\"name\") FROM wide WHERE id = 1",
        "first|x}|null|last|odd",
    );
}

#[test]
fn sqlite_setup_names_unique_indexes_whose_replace_deletes_go_unjournaled() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    shop.sql("CREATE UNIQUE INDEX devices_by_name ON devices (name, id)");
    let out = ok(&f.connector(&["setup", "--provider", "shop", "--dry-run"]));
    let notes: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("INSERT OR REPLACE"))
        .collect();
    // devices' id is serial_no (its primary key index is not named).
    assert_eq!(notes.len(), 1, "{out}");
    assert!(
        notes[0].contains("\"devices\" has the unique index devices_by_name"),
        "{out}"
    );
}

#[test]
fn an_sqlite_copy_resumes_after_an_upper_case_uuid_key() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    // A UUID column holding upper-case text (as .NET writes GUIDs), more
    // rows than one chunk of the copy: the next chunk starts after the last
    // key as SQLite compares it, not after its lower-cased JSON form.
    shop.sql(
        "DROP TABLE categories;
         CREATE TABLE categories (id UUID PRIMARY KEY, name TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000),
           h(i, x) AS (SELECT i, upper(hex(randomblob(16))) FROM n)
         INSERT INTO categories
         SELECT substr(x, 1, 8) || '-' || substr(x, 9, 4) || '-' || substr(x, 13, 4) || '-' ||
                substr(x, 17, 4) || '-' || substr(x, 21, 12), 'upper ' || i FROM h",
    );
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in(
        "hq",
        "SELECT count(*) FROM categories WHERE name LIKE 'upper %'",
        "12000",
    );
    // hq changes one (its id lower case, as the store has it) and deletes
    // another: shop's upper-case rows take both, no second row.
    f.pg.psql(
        "hq",
        "UPDATE categories SET name = 'renamed in hq' WHERE name = 'upper 1';
         DELETE FROM categories WHERE name = 'upper 2';",
    );
    f.expect_text("the update and the delete in shop", "1|0|11999", || {
        shop.sql(
            "SELECT (SELECT count(*) FROM categories WHERE name = 'renamed in hq') || '|' || \
                    (SELECT count(*) FROM categories WHERE name = 'upper 2') || '|' || \
                    (SELECT count(*) FROM categories WHERE name LIKE 'upper %' OR name = 'renamed in hq')",
        )
    });
    assert_eq!(
        shop.sql("SELECT count(*) FROM categories WHERE name = 'renamed in hq' AND id = upper(id)"),
        "1",
        "the row keeps its own (upper-case) key"
    );
}

#[test]
fn a_dsn_naming_no_product_gets_its_dialect_from_the_dbms_name() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let db = SqliteDb::new();
    let schema = std::fs::read_to_string(repo().join("scripts/retail/schema.sqlite.sql")).unwrap();
    db.sql(&schema);
    db.sql("CREATE TABLE devices (id INTEGER, serial_no TEXT PRIMARY KEY, name TEXT)");
    odbc.add_dsn(
        "shopdata",
        "SQLite3",
        &[
            ("Database", &db.path.display().to_string()),
            ("Timeout", "10000"),
        ],
    );
    odbc_shop(&mut f, &odbc, "DSN=shopdata;".into());
    let tested = ok(&f.connector(&["test-connection", "--provider", "shop"]));
    assert!(tested.contains("(dialect SQLite)"), "{tested}");
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_text("orders copied", "200", || {
        db.sql("SELECT count(*) FROM orders")
    });
    db.sql("UPDATE orders SET status = 'via-dsn' WHERE order_id = 1");
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 1",
        "via-dsn",
    );
}

#[test]
fn postgres_and_mariadb_sync_both_ways_and_a_bad_value_or_lost_journal_stops_only_what_it_must() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let db = mariadb_shop();
    // A TIMESTAMP (zoned by the session) beside the schema's DATETIMEs.
    db.sql(
        "shop",
        "ALTER TABLE customers MODIFY created_at TIMESTAMP(6) NULL",
    );
    // Totals wider than a 64-bit float holds exactly.
    db.sql("shop", "ALTER TABLE orders MODIFY total DECIMAL(30,4)");
    f.pg.psql(
        "hq",
        "ALTER TABLE orders ALTER COLUMN total TYPE numeric(30,4)",
    );
    odbc_shop(&mut f, &odbc, db.odbc("shop"));
    let tested = ok(&f.connector(&["test-connection"]));
    assert!(tested.contains("MariaDB"), "{tested}");
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    let want =
        f.pg.query("hq", "SELECT count(*) FROM order_items")
            .unwrap();
    f.expect_text("order_items copied to MariaDB", &want, || {
        db.sql("shop", "SELECT count(*) FROM order_items")
    });

    // Both ways, with MariaDB's own types (DATETIME, DECIMAL, BOOLEAN, JSON).
    f.pg.psql("hq", "UPDATE orders SET status = 'paid', order_date = '2024-05-01 10:00:00+02' WHERE order_id = 1");
    f.expect_text(
        "an update from hq",
        "paid\t2024-05-01 08:00:00.000000",
        || {
            db.sql(
                "shop",
                "SELECT status, order_date FROM orders WHERE order_id = 1",
            )
        },
    );
    db.sql(
        "shop",
        "UPDATE products SET price = 7.25, attributes = '{\"size\": \"L\"}' WHERE product_id = 1",
    );
    db.sql(
        "shop",
        "UPDATE customers SET email = 'm@example.com' WHERE customer_id = 1",
    );
    f.expect_in(
        "hq",
        "SELECT price || ' ' || (attributes->>'size') FROM products WHERE product_id = 1",
        "7.25 L",
    );
    // Through the journal's JSON image, every digit.
    db.sql(
        "shop",
        "UPDATE orders SET total = 12345678901234567.25 WHERE order_id = 3",
    );
    f.expect_in(
        "hq",
        "SELECT total FROM orders WHERE order_id = 3",
        "12345678901234567.2500",
    );
    f.pg.psql(
        "hq",
        "UPDATE orders SET total = 98765432109876543.125 WHERE order_id = 4",
    );
    f.expect_text("a wide total from hq", "98765432109876543.1250", || {
        db.sql("shop", "SELECT total FROM orders WHERE order_id = 4")
    });
    f.expect_in(
        "hq",
        "SELECT email || ' ' || deleted FROM customers WHERE customer_id = 1",
        "m@example.com false",
    );
    // An application session two hours east of UTC writes a TIMESTAMP: the
    // instant, not the wall time, reaches hq.
    db.sql(
        "shop",
        "SET time_zone = '+02:00'; \
         UPDATE customers SET created_at = '2024-07-01 12:00:00.250000' WHERE customer_id = 2",
    );
    f.expect_in(
        "hq",
        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') FROM customers WHERE customer_id = 2",
        "2024-07-01 10:00:00.250",
    );

    // Inserts and deletes both ways, a composite id, and a counter.
    f.pg.psql(
        "hq",
        "INSERT INTO orders VALUES (900001, 1, 1, '2024-05-01 10:00:00+02', 'new', 10.50)",
    );
    f.pg.psql("hq", "DELETE FROM orders WHERE order_id = 7");
    f.expect_text("an insert from hq", "new", || {
        db.sql("shop", "SELECT status FROM orders WHERE order_id = 900001")
    });
    f.expect_text("a delete from hq", "0", || {
        db.sql("shop", "SELECT count(*) FROM orders WHERE order_id = 7")
    });
    composite_id_from_shop(&|sql| db.sql("shop", sql));
    db.sql("shop", "DELETE FROM orders WHERE order_id = 8");
    composite_id_arrived(&f);
    f.expect_in("hq", "SELECT count(*) FROM orders WHERE order_id = 8", "0");
    counter_decrements_add_up(&f, "MariaDB", &|sql| db.sql("shop", sql));

    // A status too long for MariaDB's VARCHAR(20): dead letter, the rest goes on.
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'this status is far too long for shop' WHERE order_id = 2",
    );
    f.pg.psql("hq", "UPDATE orders SET status = 'fits' WHERE order_id = 3");
    f.expect_text("the next change to arrive", "fits", || {
        db.sql("shop", "SELECT status FROM orders WHERE order_id = 3")
    });
    let dead = ok(&f.connector(&["dead-letters", "list", "--json"]));
    assert!(dead.contains("orders") && dead.contains("22001"), "{dead}");

    // The journal disappears: shop stops with the reason, hq goes on.
    db.sql("shop", "DROP TABLE connector_journal");
    wait_for(
        "shop to report the missing journal",
        Duration::from_secs(60),
        || {
            let shop = f.provider_status("shop")?;
            shop["last_error"]
                .as_str()?
                .contains("connector_journal` does not exist")
                .then_some(())
        },
    );
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'hq-goes-on' WHERE order_id = 6",
    );
    wait_for("hq's stream to go on", Duration::from_secs(60), || {
        let out = f.connector(&["query", "orders", "6"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("hq-goes-on")
            .then_some(())
    });
    drop(db);
}

#[test]
fn a_journal_row_committed_after_a_later_one_is_not_lost() {
    // shop is a PostgreSQL database read through psqlODBC: sequence values
    // are taken at insert time and become visible at commit, so two
    // concurrent writers commit them out of order.
    let mut f = Fleet::new("0.001");
    // A length the sink must not cut a value to (see the end).
    f.pg.psql(
        "shop",
        "ALTER TABLE orders ALTER COLUMN status TYPE varchar(20)",
    );
    // A generated column on both sides: row_to_json shows it, the copy and
    // the sinks leave it to each database.
    f.generated_total_in_both();
    // A partitioned table: its rows' triggers fire under their partition's
    // name; the journal must name the mapped table.
    f.partitioned_devices("shop");
    let odbc = OdbcConfig::new(None);
    psqlodbc_shop(&mut f, &odbc);
    let tested = ok(&f.connector(&["test-connection"]));
    assert!(tested.contains("PostgreSQL"), "{tested}");
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in("shop", "SELECT count(*) FROM order_items", "400");
    f.pg.psql(
        "shop",
        "INSERT INTO devices VALUES (1, 'SN-1', 'a'), (2, 'SN-2', 'b'), (3, 'SN-3', 'c')",
    );
    f.expect_in(
        "hq",
        "SELECT string_agg(name, ',' ORDER BY name) FROM devices",
        "a,b,c",
    );
    // An application on another search_path: the journal trigger still
    // finds its journal (before, the application's write failed: 42P01).
    f.pg.psql(
        "shop",
        "SET search_path = pg_catalog; UPDATE public.orders SET status = 'other path' WHERE order_id = 5",
    );
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 5",
        "other path",
    );
    f.pg.psql("shop", "UPDATE orders SET total = 21 WHERE order_id = 12");
    f.expect_in(
        "hq",
        "SELECT total || ' ' || total_x2 FROM orders WHERE order_id = 12",
        "21.00 42.00",
    );

    f.pg.psql("shop", "CREATE TABLE release_a (id int)");
    std::thread::scope(|s| {
        // A takes the lower sequence numbers, 12,000 of them (more than a
        // copy's window: its first is far below B's), and commits once the
        // test releases it (an advisory lock says it got there).
        let slow = s.spawn(|| {
            f.pg.psql(
                "shop",
                "BEGIN; UPDATE orders SET status = 'A-late' WHERE order_id = 10; \
                 DO $$ BEGIN FOR i IN 1..30 LOOP UPDATE order_items SET price = price; END LOOP; END $$; \
                 SELECT pg_advisory_lock(777); \
                 DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM release_a) LOOP PERFORM pg_sleep(0.02); END LOOP; END $$; \
                 COMMIT;",
            )
        });
        wait_for("A to hold its numbers", Duration::from_secs(60), || {
            (f.pg.query(
                "shop",
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 777 AND granted",
            )
            .as_deref()
                == Some("1"))
            .then_some(())
        });
        // B takes the next number and commits at once; the poller reads it
        // (and passes A's number) while A is still open.
        f.pg.psql(
            "shop",
            "UPDATE orders SET status = 'B-early' WHERE order_id = 11",
        );
        f.expect_in(
            "hq",
            "SELECT status FROM orders WHERE order_id = 11",
            "B-early",
        );
        assert_ne!(
            f.pg.query("hq", "SELECT status FROM orders WHERE order_id = 10")
                .as_deref(),
            Some("A-late"),
            "A is not committed yet"
        );
        f.pg.psql("shop", "INSERT INTO release_a VALUES (1)");
        slow.join().unwrap();
    });
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 10",
        "A-late",
    );
    wait_for(
        "the journal to be pruned after the gap filled (all but the last row)",
        Duration::from_secs(30),
        || {
            (f.pg
                .query("shop", "SELECT count(*) FROM connector_journal")
                .as_deref()
                == Some("1"))
            .then_some(())
        },
    );
    verify_passes(&f);
    // A status too long for shop's varchar(20) is a dead letter, not cut.
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'this status is far too long for shop' WHERE order_id = 2",
    );
    wait_for("the dead letter", Duration::from_secs(30), || {
        let dead = ok(&f.connector(&["dead-letters", "list", "--json"]));
        dead.contains("22001").then_some(())
    });
    assert_ne!(
        f.pg.query("shop", "SELECT status FROM orders WHERE order_id = 2")
            .as_deref(),
        Some("this status is far "),
        "the value was cut to the column's length"
    );
}

#[test]
fn a_gap_that_committed_while_the_worker_was_down_is_read_in_full() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    psqlodbc_shop(&mut f, &odbc);
    // Batches far smaller than the late transaction; a short gap timeout.
    f.extra_env.extend([
        ("CONNECTOR_SHOP_OPTIONS".into(), "gap_timeout_s=2".into()),
        ("DITTO_CLOUD_SYNC_BATCH_SIZE".into(), "50".into()),
    ]);
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in("shop", "SELECT count(*) FROM order_items", "400");
    // A journals 400 rows and commits late; B, after it, at once.
    let mut late =
        f.pg.psql_cmd("shop")
            .arg("-c")
            .arg(
                "BEGIN; UPDATE order_items SET quantity = quantity + 1000; \
             SELECT pg_sleep(4); COMMIT;",
            )
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    f.pg.psql("shop", "UPDATE orders SET status = 'B' WHERE order_id = 1");
    f.expect_in("hq", "SELECT status FROM orders WHERE order_id = 1", "B");
    // The worker stops while A's numbers are gaps; A commits, and the
    // gaps are older than the timeout when it starts again.
    assert_eq!(f.stop(), Some(0));
    assert!(late.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(3));
    f.start();
    f.expect_in(
        "hq",
        "SELECT count(*) FROM order_items WHERE quantity > 1000",
        "400",
    );
}

#[test]
fn json_strings_and_truncates_come_through_a_postgres_journal() {
    let mut f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(
            db,
            "ALTER TABLE devices ADD COLUMN tags text[], ADD COLUMN meta jsonb",
        );
    }
    let odbc = OdbcConfig::new(None);
    psqlodbc_shop(&mut f, &odbc);
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in("shop", "SELECT count(*) FROM order_items", "400");
    // Through shop's journal (row_to_json gave `[...]` and the number 42).
    f.pg.psql(
        "shop",
        r#"INSERT INTO devices (serial_no, name, tags, meta) VALUES ('d-1', 'a', '{x,"y z"}', '"42"')"#,
    );
    f.expect_in(
        "hq",
        "SELECT tags::text || ' ' || meta::text || ' ' || jsonb_typeof(meta) FROM devices WHERE serial_no = 'd-1'",
        r#"{x,"y z"} "42" string"#,
    );
    // And back, through hq's stream and shop's sink.
    f.pg.psql(
        "hq",
        r#"UPDATE devices SET tags = '{1,2}', meta = '{"k": [1, "2"]}' WHERE serial_no = 'd-1'"#,
    );
    f.expect_in(
        "shop",
        "SELECT tags::text || ' ' || meta::text FROM devices WHERE serial_no = 'd-1'",
        r#"{1,2} {"k": [1, "2"]}"#,
    );
    f.no_dead_letters();
    // A migration dropping the json column leaves the application's writes
    // alone (the trigger names no column), and the rest still arrives.
    f.pg.psql("shop", "ALTER TABLE devices DROP COLUMN meta");
    f.pg.psql(
        "shop",
        "INSERT INTO devices (serial_no, name) VALUES ('d-2', 'after the migration')",
    );
    f.expect_in(
        "hq",
        "SELECT name FROM devices WHERE serial_no = 'd-2'",
        "after the migration",
    );
    // TRUNCATE fires no row trigger; its statement trigger journals it, and
    // devices opt in to emptying every database (order_items do not).
    f.pg.psql("shop", "TRUNCATE devices; TRUNCATE order_items");
    f.expect_in("hq", "SELECT count(*) FROM devices", "0");
    f.pg.psql(
        "shop",
        "UPDATE orders SET status = 'after the truncates' WHERE order_id = 1",
    );
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 1",
        "after the truncates",
    );
    assert_eq!(
        f.pg.query("hq", "SELECT count(*) FROM order_items")
            .as_deref(),
        Some("400"),
        "a truncate not opted in is skipped"
    );
}

#[test]
fn a_driver_call_that_hangs_is_given_up_and_the_provider_goes_on() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    psqlodbc_shop(&mut f, &odbc);
    f.extra_env.push((
        "CONNECTOR_SHOP_OPTIONS".into(),
        "gap_timeout_s=30,call_timeout_s=2".into(),
    ));
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    f.expect_in("shop", "SELECT count(*) FROM order_items", "400");
    std::thread::scope(|s| {
        // Another session holds the journal: shop's poll waits on it, as
        // on a network gone silent (no lock timeout for a read's wait).
        let holder = s.spawn(|| {
            f.pg.psql(
                "shop",
                "BEGIN; LOCK TABLE connector_journal IN ACCESS EXCLUSIVE MODE; \
                 SELECT pg_sleep(8); COMMIT;",
            )
        });
        f.expect_text("the hung poll given up", "true", || {
            let shop = f.provider_status("shop");
            let said = shop
                .as_ref()
                .and_then(|s| s["last_error"].as_str())
                .unwrap_or_default();
            said.contains("did not return within 2 s").to_string()
        });
        holder.join().unwrap();
    });
    // The provider went on: shop's change reaches hq.
    f.pg.psql(
        "shop",
        "UPDATE orders SET status = 'after the hang' WHERE order_id = 3",
    );
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 3",
        "after the hang",
    );
}

/// The real IBM DB2 ODBC driver (`libdb2.so` from the PyPI `ibm_db` wheel,
/// fetched by scripts/test.sh into the path in `CONNECTOR_DB2_DRIVER`).
fn db2_driver() -> std::path::PathBuf {
    let path = std::env::var_os("CONNECTOR_DB2_DRIVER").map(std::path::PathBuf::from).expect(
        "CONNECTOR_DB2_DRIVER is not set: run scripts/test.sh, which fetches IBM's DB2 ODBC driver",
    );
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

#[test]
fn db2_with_no_server_behind_is_a_clear_cannot_connect_and_a_retry() {
    let odbc = OdbcConfig::new(Some(&db2_driver()));
    let port = fleet::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = odbc.env();
    env.extend([
        ("DITTO_SYNC_IBMCLOUD".to_string(), "true".to_string()),
        (
            "IBMCLOUD_CONNECTION_STRING".to_string(),
            format!(
                "Driver={{IBM DB2 ODBC DRIVER}};Database=SAMPLE;Hostname=127.0.0.1;Port={port};Protocol=TCPIP;Uid=db2inst1;Pwd=s3cret-pw;"
            ),
        ),
        (
            "CONNECTOR_STORE".to_string(),
            dir.path().join("store.db").display().to_string(),
        ),
        (
            "CONNECTOR_MAPPINGS".to_string(),
            repo().join("mappings").display().to_string(),
        ),
    ]);
    let command = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_connector"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .args(args)
            .envs(env.iter().cloned());
        c
    };
    let out = command(&["test-connection"]).output().unwrap();
    let text = failed(&out);
    assert!(
        text.contains(&format!("cannot connect to DB2 at 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        text.contains("SQL30081N") || text.contains("08001"),
        "the driver's own diagnosis: {text}"
    );
    assert!(
        !text.contains("panicked") && !text.contains("s3cret-pw"),
        "{text}"
    );

    // `run` keeps retrying with backoff instead of dying.
    let log = dir.path().join("run.log");
    let mut child = command(&["run"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let logs = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("run.err")).unwrap_or_default()
    };
    wait_for("two connection attempts", Duration::from_secs(60), || {
        (logs().matches("cannot connect to DB2").count() >= 2).then_some(())
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "run gave up: {}",
        logs()
    );
    assert!(logs().contains("retrying"), "{}", logs());
    assert!(
        !logs().contains("panicked") && !logs().contains("s3cret-pw"),
        "{}",
        logs()
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", logs());
}

#[test]
fn kill_9_during_an_odbc_initial_sync_resumes_and_loses_nothing() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    // shop already holds 60,000 order items that hq has never seen.
    shop.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000) \
         INSERT INTO order_items SELECT printf('%08x-0000-4000-8000-%012x', i, i), i % 400 + 1, \
         i % 4 + 1, 1 + i % 3, 9.5 FROM n",
    );
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.spawn_slowed_copy("shop");
    wait_for(
        "shop's copy to make progress",
        Duration::from_secs(60),
        || {
            let shop = f.provider_status("shop")?;
            (shop["applied"].as_u64()? >= 5000).then_some(())
        },
    );
    f.kill9();
    f.resume_initial_sync("shop");
    f.start();
    f.expect_in(
        "hq",
        "SELECT count(*) FROM order_items WHERE id::text LIKE '%-0000-4000-8000-%'",
        "60000",
    );
    verify_passes(&f);
    assert_eq!(f.stop(), Some(0));
}

#[test]
fn conflicting_updates_in_postgres_and_sqlite_converge_per_field() {
    let (mut f, _odbc, shop) = sqlite_synced_and_stopped();
    // While the fleet is down both sides change order 7: different fields
    // (both survive) and the same field (the later commit wins, everywhere).
    f.pg.psql(
        "hq",
        "UPDATE orders SET total = 5.25, status = 'hq-first' WHERE order_id = 7",
    );
    std::thread::sleep(Duration::from_millis(50));
    shop.sql("UPDATE orders SET customer_id = 42, status = 'sqlite-later' WHERE order_id = 7");
    f.start();
    f.expect_in(
        "hq",
        "SELECT total || ' ' || customer_id || ' ' || status FROM orders WHERE order_id = 7",
        "5.25 42 sqlite-later",
    );
    f.expect_text("SQLite to converge", "5.25|42|sqlite-later", || {
        shop.sql("SELECT total, customer_id, status FROM orders WHERE order_id = 7")
    });
    verify_passes(&f);
}

#[test]
fn a_row_moved_to_a_new_key_in_sqlite_moves_everywhere() {
    let (mut f, _odbc, shop) = sqlite_synced_and_stopped();
    f.start();
    // The journal holds one update with the old and the new image: the old
    // document must go, in the store and in hq.
    shop.sql("UPDATE stores SET store_id = 900 WHERE store_id = 3");
    f.expect_in(
        "hq",
        "SELECT string_agg(store_id::text, ',' ORDER BY store_id) FROM stores WHERE store_id IN (3, 900)",
        "900",
    );
    verify_passes(&f);
}

#[test]
fn a_restarted_copy_over_a_journal_that_is_only_behind_keeps_its_deletes() {
    let (mut f, _odbc, shop) = sqlite_synced_and_stopped();
    // A delete waits in the journal while the fleet is down; a copy shows
    // no deletes, so the stream must still read it after the copy.
    shop.sql("DELETE FROM order_items WHERE order_id = 5");
    shop.sql("DELETE FROM orders WHERE order_id = 5");
    ok(&f.connector(&["initial-sync", "--provider", "shop", "--restart"]));
    f.start();
    f.expect_in("hq", "SELECT count(*) FROM orders WHERE order_id = 5", "0");
    verify_passes(&f);
}

/// Waits until status shows shop's journal read and pruned to its last row
/// (the worker is up and polling).
fn journal_read_and_pruned(f: &Fleet) {
    wait_for(
        "the journal read and pruned",
        Duration::from_secs(60),
        || {
            let out = f.connector(&["status"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("journal \"connector_journal\": 1 rows kept")
                .then_some(())
        },
    );
}

/// Waits until shop stops on a journal that started its numbering over.
fn reports_a_journal_that_started_over(f: &Fleet) {
    wait_for(
        "shop to report the journal that started over",
        Duration::from_secs(60),
        || {
            let shop = f.provider_status("shop")?;
            shop["last_error"]
                .as_str()?
                .contains("started its numbering over")
                .then_some(())
        },
    );
}

#[test]
fn sqlite_counter_changes_made_while_stopped_count_once_after_a_restarted_copy() {
    let (mut f, _odbc, shop) = sqlite_synced_and_stopped();
    let (id, qty) = f.first_inventory();
    let want = (qty - 8).to_string();
    // Two sales in SQLite while the fleet is down: the repeated copy shows
    // both, and the journal (kept: it is only behind) brings them again.
    for n in [5, 3] {
        shop.sql(&format!(
            "UPDATE inventory SET quantity = quantity - {n} WHERE id = '{id}'"
        ));
    }
    ok(&f.connector(&["initial-sync", "--provider", "shop", "--restart"]));
    f.start();
    f.expect_in(
        "hq",
        &format!("SELECT quantity FROM inventory WHERE id = '{id}'"),
        &want,
    );
    verify_passes(&f);
    f.expect_text("SQLite's own count", &want, || {
        shop.sql(&format!("SELECT quantity FROM inventory WHERE id = '{id}'"))
    });
}

#[test]
fn a_journal_set_up_again_is_told_even_once_its_numbers_passed_the_old_ones() {
    let (mut f, _odbc, shop) = sqlite_synced_and_stopped();
    f.start();
    journal_read_and_pruned(&f);
    assert_eq!(f.stop(), Some(0));
    let read: i64 = shop
        .sql("SELECT max(seq) FROM connector_journal")
        .parse()
        .unwrap();
    shop.sql("DROP TABLE connector_journal");
    ok(&f.connector(&["setup", "--provider", "shop"]));
    // Busy while the fleet is down: the new journal's numbers pass the old.
    while shop
        .sql("SELECT coalesce(max(seq), 0) FROM connector_journal")
        .parse::<i64>()
        .unwrap()
        <= read
    {
        shop.sql("UPDATE order_items SET quantity = quantity");
    }
    f.start();
    reports_a_journal_that_started_over(&f);
    recovered_by_a_restarted_copy(&mut f, &shop);
}

/// The advised fix for a journal that started over, from a stopped-with-
/// the-diagnosis fleet: copy everything again; the journal is read anew.
fn recovered_by_a_restarted_copy(f: &mut Fleet, shop: &SqliteDb) {
    assert_eq!(f.stop(), Some(0));
    ok(&f.connector(&["initial-sync", "--provider", "shop", "--restart"]));
    f.start();
    shop.sql("UPDATE orders SET status = 'streamed' WHERE order_id = 4");
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 4",
        "streamed",
    );
    verify_passes(f);
}

#[test]
fn a_journal_set_up_again_stops_the_provider_until_a_restarted_copy() {
    let (mut f, _odbc, shop) = sqlite_synced_and_stopped();
    // The poller reads the fan-out's journal rows (our own writes) and
    // prunes all but the last; status shows it once the worker is up.
    f.start();
    journal_read_and_pruned(&f);
    assert_eq!(f.stop(), Some(0));
    // The journal is dropped and set up again while the fleet is down: its
    // numbers start over, far below what the store has read.
    shop.sql("DROP TABLE connector_journal");
    ok(&f.connector(&["setup", "--provider", "shop"]));
    shop.sql("UPDATE orders SET status = 'after-the-reset' WHERE order_id = 3");
    f.start();
    reports_a_journal_that_started_over(&f);
    recovered_by_a_restarted_copy(&mut f, &shop);
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 3",
        "after-the-reset",
    );
}

#[test]
fn a_copy_without_a_journal_is_refused_until_setup() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    shop.sql("INSERT INTO stores VALUES (91, 'a', 'x', NULL)");
    // Copied without a journal, the changes made until setup ran were
    // behind the copy and before the journal's first number: never read.
    let out = failed(&f.connector(&["initial-sync", "--provider", "shop"]));
    assert!(
        out.contains("run `connector setup --provider shop` before the first copy"),
        "{out}"
    );
    ok(&f.connector(&["setup", "--provider", "shop"]));
    ok(&f.connector(&["initial-sync", "--provider", "shop"]));
    f.start();
    f.expect_in("hq", "SELECT name FROM stores WHERE store_id = 91", "a");
    shop.sql("UPDATE stores SET name = 'b' WHERE store_id = 91");
    f.expect_in("hq", "SELECT name FROM stores WHERE store_id = 91", "b");
}

#[test]
fn a_journal_set_up_again_before_the_stream_read_a_row_is_told() {
    let mut f = Fleet::new("0.001");
    let odbc = OdbcConfig::new(None);
    let shop = sqlite_shop(&mut f, &odbc);
    ok(&f.connector(&["setup", "--provider", "shop"]));
    // Rows journaled before shop's copy: the stream is to start after them.
    shop.sql(
        "INSERT INTO stores VALUES (91, 'a', 'x', NULL);
         INSERT INTO stores VALUES (92, 'b', 'x', NULL);",
    );
    ok(&f.connector(&["initial-sync", "--provider", "shop"]));
    // Set up again before the stream read anything: numbering starts over.
    shop.sql("DROP TABLE connector_journal");
    ok(&f.connector(&["setup", "--provider", "shop"]));
    f.start();
    reports_a_journal_that_started_over(&f);
    // A row journaled now would sit below the copy's position, unread.
    shop.sql("INSERT INTO stores VALUES (93, 'c', 'x', NULL)");
    recovered_by_a_restarted_copy(&mut f, &shop);
    f.expect_in("hq", "SELECT name FROM stores WHERE store_id = 93", "c");
}

#[test]
fn a_change_journaled_before_a_copy_and_committed_after_it_wins() {
    let (mut f, _odbc, shop) = sqlite_synced_and_stopped();
    // Journaled and committed while the worker is down, so the copy below
    // writes rather than finding the store holding what shop showed last.
    shop.sql("UPDATE orders SET status = 'copied' WHERE order_id = 1");
    // The trigger fires (and journals its time) now; the commit comes after
    // the copy read the row in its committed state.
    let held = shop.open_transaction("UPDATE orders SET status = 'held' WHERE order_id = 1");
    std::thread::sleep(Duration::from_millis(50));
    ok(&f.connector(&[
        "initial-sync",
        "--provider",
        "shop",
        "--collection",
        "orders",
        "--restart",
    ]));
    held.commit();
    assert_eq!(
        shop.sql("SELECT status FROM orders WHERE order_id = 1"),
        "held"
    );
    f.start();
    f.expect_in("hq", "SELECT status FROM orders WHERE order_id = 1", "held");
    f.expect_text("SQLite to keep its commit", "held", || {
        shop.sql("SELECT status FROM orders WHERE order_id = 1")
    });
    verify_passes(&f);
}

/// Live DB2: runs only when asked (`cargo test --features postgres,odbc
/// --test odbc_e2e -- --ignored live_db2`) with `IBMCLOUD_CONNECTION_STRING`
/// pointing at a DB2 11.5 database the test may create tables in. No DB2
/// server can run on the machines this project is built on.
#[test]
#[ignore = "needs a DB2 server: set IBMCLOUD_CONNECTION_STRING and run with --ignored"]
fn live_db2_round_trip() {
    let conn = std::env::var("IBMCLOUD_CONNECTION_STRING")
        .expect("IBMCLOUD_CONNECTION_STRING: an ODBC string for a DB2 database");
    let odbc = OdbcConfig::new(Some(&db2_driver()));
    for (k, v) in odbc.env() {
        // Before the first ODBC call of this process; this test runs alone.
        std::env::set_var(k, v);
    }
    let db2 = connector_odbc::conn::OdbcConn::parse(&conn)
        .unwrap()
        .connect("DB2")
        .unwrap();
    let exec = |sql: &str| {
        let _ = db2.execute(sql, (), None);
    };
    for t in fleet::SYNCED
        .iter()
        .chain(["devices", "connector_journal"].iter())
    {
        exec(&format!("DROP TABLE \"{t}\""));
    }
    let schema = std::fs::read_to_string(repo().join("scripts/retail/schema.db2.sql")).unwrap();
    for stmt in schema.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let sql: String = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if !sql.trim().is_empty() {
            db2.execute(&sql, (), None)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    exec("CREATE TABLE \"devices\" (\"id\" INTEGER, \"serial_no\" VARCHAR(100) NOT NULL PRIMARY KEY, \"name\" VARCHAR(100))");
    let count = |sql: &str| {
        connector_odbc::catalog::query_text(&db2, sql, &[], connector_core::Stage::Verify, "test")
            .unwrap()
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default()
    };

    let mut f = Fleet::new("0.001");
    f.extra_env.extend(odbc.env());
    f.extra_env.extend([
        ("CONNECTOR_PROVIDERS".into(), "hq=postgres".into()),
        ("DITTO_SYNC_IBMCLOUD".into(), "true".into()),
        ("IBMCLOUD_CONNECTION_STRING".into(), conn.clone()),
    ]);
    ok(&f.connector(&["test-connection"]));
    ok(&f.connector(&["setup", "--provider", "ibmcloud"]));
    f.start();
    let want =
        f.pg.query("hq", "SELECT count(*) FROM order_items")
            .unwrap();
    f.expect_text("order_items copied to DB2", &want, || {
        count("SELECT COUNT(*) FROM \"order_items\"")
    });
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'to-db2' WHERE order_id = 1",
    );
    f.expect_text("an update from hq", "to-db2", || {
        count("SELECT \"status\" FROM \"orders\" WHERE \"order_id\" = 1")
    });
    exec("UPDATE \"orders\" SET \"status\" = 'from-db2' WHERE \"order_id\" = 2");
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 2",
        "from-db2",
    );
    verify_passes(&f);
    assert_eq!(f.stop(), Some(0));
}
