//! PostgreSQL end to end: hq ↔ store ↔ shop through the real `connector`
//! binary, against a private PostgreSQL cluster started by the test.
#![cfg(feature = "postgres")]

mod fleet;

use std::time::Duration;

use fleet::{failed, free_port, http_get, ok, wait_for, Fleet};

#[test]
fn hq_and_shop_stay_in_sync_both_ways() {
    let mut f = Fleet::new("0.002");
    let http = format!("127.0.0.1:{}", free_port());
    f.extra_env
        .push(("CONNECTOR_HTTP_ADDR".into(), http.clone()));
    ok(&f.connector(&["test-connection"]));
    let dry = ok(&f.connector(&["setup", "--provider", "shop", "--dry-run"]));
    assert!(
        dry.contains("CREATE PUBLICATION")
            && dry.contains("needs: a role with REPLICATION")
            && dry.contains("pg_replication_origin_session_setup(text)"),
        "{dry}"
    );
    let first = ok(&f.connector(&["setup", "--provider", "shop"]));
    assert!(
        first.contains("pg_create_logical_replication_slot"),
        "{first}"
    );
    let again = ok(&f.connector(&["setup", "--provider", "shop"]));
    assert!(
        again.contains("nothing to do")
            && !again.contains("CREATE PUBLICATION")
            && !again.contains("pg_create"),
        "setup is idempotent: {again}"
    );
    let out = ok(&f.connector(&["initial-sync", "--provider", "hq"]));
    assert!(out.contains("initial sync done"), "{out}");
    f.start();
    f.wait_in_sync();
    // A copy beside the running stream of the same provider is refused.
    let beside = f.connector(&["initial-sync", "--provider", "hq", "--restart"]);
    let said = String::from_utf8_lossy(&beside.stderr);
    assert!(
        !beside.status.success()
            && said.contains("provider hq is streamed (or copied) by another process"),
        "{said}"
    );
    assert_eq!(
        f.pg.count("shop", "product_embeddings"),
        0,
        "sync: false collections stay home"
    );
    assert!(
        f.pg.count("shop", "customers") < f.pg.count("hq", "customers"),
        "the filter keeps deleted customers home"
    );

    // hq → shop: insert, update, delete
    f.pg.psql(
        "hq",
        "INSERT INTO orders VALUES (900001, 1, 1, '2024-05-01 10:00:00+02', 'new', 10.50)",
    );
    f.pg.psql("hq", "UPDATE orders SET status = 'paid' WHERE order_id = 1");
    f.pg.psql("hq", "DELETE FROM orders WHERE order_id = 2");
    f.expect_both(
        "SELECT status || ' ' || total || ' ' || order_date FROM orders WHERE order_id = 900001",
        "new 10.50 2024-05-01 08:00:00+00",
    );
    f.expect_both("SELECT status FROM orders WHERE order_id = 1", "paid");
    f.expect_both("SELECT count(*) FROM orders WHERE order_id = 2", "0");

    // shop → hq, including a composite id and a jsonb value
    f.pg.psql("shop", "INSERT INTO store_order_numbers VALUES (3, 17, date_trunc('milliseconds', now()), 'first'), (3, 18, date_trunc('milliseconds', now()), 'second')");
    f.pg.psql("shop", "UPDATE products SET attributes = '{\"color\": \"teal\", \"tags\": [1, 2]}' WHERE product_id = 1");
    f.pg.psql(
        "shop",
        "UPDATE store_order_numbers SET note = 'changed' WHERE store_id = 3 AND order_no = 17",
    );
    f.pg.psql(
        "shop",
        "DELETE FROM store_order_numbers WHERE store_id = 3 AND order_no = 18",
    );
    f.expect_both(
        "SELECT string_agg(order_no || note, ',') FROM store_order_numbers",
        "17changed",
    );
    f.expect_both(
        "SELECT attributes->>'color' FROM products WHERE product_id = 1",
        "teal",
    );
    let doc = f.connector(&[
        "query",
        "store_order_numbers",
        r#"{"store_id":3,"order_no":17}"#,
    ]);
    let doc = ok(&doc);
    assert!(doc.contains("\"note\": \"changed\""), "{doc}");

    // counters: both databases sell at the same time
    let (id, before) = f.first_inventory();
    f.pg.psql(
        "hq",
        &format!("UPDATE inventory SET quantity = quantity - 1 WHERE id = '{id}'"),
    );
    f.pg.psql(
        "shop",
        &format!("UPDATE inventory SET quantity = quantity - 2 WHERE id = '{id}'"),
    );
    // both sales count
    f.expect_both(
        &format!("SELECT quantity FROM inventory WHERE id = '{id}'"),
        &(before - 3).to_string(),
    );

    f.wait_in_sync();
    ok(&f.verify());
    // /metrics and /health of the running worker
    let (code, metrics) = http_get(&http, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    for name in [
        "connector_events_received_total{provider=\"hq\"}",
        "connector_events_applied_total{provider=\"shop\"}",
        "connector_echoes_dropped_total",
        "connector_sink_writes_total{provider=\"shop\"}",
        "connector_source_lag_seconds{provider=\"hq\"}",
        "connector_provider_health{provider=\"hq\",task=\"source\"} 0",
        "connector_provider_health{provider=\"shop\",task=\"sink\"} 0",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("connector_fanout_lag_seconds{")
                && l.contains("source=\"hq\"")
                && l.contains("sink=\"shop\"")),
        "fan-out lag hq → shop missing from /metrics:\n{metrics}"
    );
    let (code, health) = http_get(&http, "/health").expect("/health answers");
    assert_eq!(code, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "green");
    assert_eq!(health["providers"]["hq"]["status"], "green");
    // status tells whether a process streams and writes each provider.
    assert_eq!(
        f.provider_status("hq").unwrap()["running"],
        serde_json::json!({"source": true, "sink": true})
    );
    assert_eq!(f.stop(), Some(0), "SIGTERM exits 0");
    let status = f.status();
    let hq = &status["providers"][0];
    assert_eq!(
        hq["running"],
        serde_json::json!({"source": false, "sink": false})
    );
    assert!(
        hq["position"].as_str().unwrap().contains('/'),
        "an LSN is saved: {hq}"
    );
    assert_eq!(hq["details"]["slot"], "connector_hq");
}

#[test]
fn concurrent_conflicts_converge_per_field_and_by_commit_time() {
    // Both databases change the same rows while the worker is stopped: it
    // sees the changes "at the same time" when it comes back.
    let mut f = Fleet::synced_and_stopped("0.001");
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'shipped' WHERE order_id = 3",
    );
    f.pg.psql("shop", "UPDATE orders SET total = 99.99 WHERE order_id = 3");
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'hq-wins?' WHERE order_id = 4",
    );
    std::thread::sleep(Duration::from_millis(20));
    f.pg.psql(
        "shop",
        "UPDATE orders SET status = 'shop-later' WHERE order_id = 4",
    );
    // Not merged yet: `verify` tells, naming the documents.
    let differ = f.verify();
    let said = String::from_utf8_lossy(&differ.stdout);
    assert_eq!(differ.status.code(), Some(1), "{said}");
    for id in ["3", "4"] {
        assert!(
            said.contains("DIFFERENT")
                && said
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{id}:"))),
            "verify names order {id}: {said}"
        );
    }
    f.start();
    f.expect_both(
        "SELECT status || ' ' || total FROM orders WHERE order_id = 3",
        "shipped 99.99",
    );
    f.expect_both("SELECT status FROM orders WHERE order_id = 4", "shop-later");
    let doc = String::from_utf8_lossy(&f.connector(&["query", "orders", "4"]).stdout).into_owned();
    assert!(doc.contains("shop-later"), "{doc}");
    f.wait_in_sync();
    // The one field both changed is told: what was kept, what was lost.
    // (Order 3's two fields merged; nothing was lost there.)
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&f.connector(&["conflicts", "--json"]))).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert_eq!(
        (
            &c["collection"],
            &c["id"],
            &c["field"],
            &c["kept_from"],
            &c["kept"],
            &c["lost_from"],
            &c["lost"]
        ),
        (
            &serde_json::json!("orders"),
            &serde_json::json!("4"),
            &serde_json::json!("status"),
            &serde_json::json!("shop"),
            &serde_json::json!("shop-later"),
            &serde_json::json!("hq"),
            &serde_json::json!("hq-wins?")
        ),
        "{c}"
    );
    let status = f.status();
    let hq = status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hq")
        .unwrap();
    assert_eq!(hq["conflicts_lost_7d"], serde_json::json!(1), "{hq}");
    let text = ok(&f.connector(&["conflicts"]));
    assert!(
        text.contains("shop \"shop-later\"") && text.contains("hq \"hq-wins?\""),
        "{text}"
    );
}

#[test]
fn decimals_beyond_a_float_arrive_exactly_and_settle() {
    let mut f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(
            db,
            "ALTER TABLE orders ALTER COLUMN total TYPE numeric(40,6)",
        );
    }
    // Copied: 24 significant digits, and one with trailing zeros.
    f.pg.psql(
        "hq",
        "UPDATE orders SET total = 123456789012345678.901234 WHERE order_id = 1;
         UPDATE orders SET total = 98765432109876543210.500000 WHERE order_id = 2",
    );
    f.start();
    f.wait_in_sync();
    let totals = "SELECT total::text FROM orders WHERE order_id IN (1, 2) ORDER BY order_id";
    f.expect_in(
        "shop",
        &totals.replace("IN (1, 2)", "= 1"),
        "123456789012345678.901234",
    );
    f.expect_in(
        "shop",
        &totals.replace("IN (1, 2)", "= 2"),
        "98765432109876543210.500000",
    );
    // Streamed, from shop.
    f.pg.psql(
        "shop",
        "UPDATE orders SET total = 12345678901234567.25 WHERE order_id = 3",
    );
    f.expect_in(
        "hq",
        "SELECT total::text FROM orders WHERE order_id = 3",
        "12345678901234567.250000",
    );
    // Each database's spelling of the value is the same document value: no
    // write goes back and forth once it arrived.
    std::thread::sleep(Duration::from_secs(2));
    let before = (writes(&f, "hq"), writes(&f, "shop"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        before,
        (writes(&f, "hq"), writes(&f, "shop")),
        "the totals keep being rewritten"
    );
    let doc = String::from_utf8_lossy(&f.connector(&["query", "orders", "1"]).stdout).into_owned();
    assert!(doc.contains("123456789012345678.901234"), "{doc}");
    let verified = f.verify();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

#[test]
fn a_target_with_foreign_keys_gets_parents_first_and_children_deleted_first() {
    let mut f = Fleet::new("0.002");
    // shop has the foreign keys hq lacks: hq may write a child before its
    // parent, shop may not.
    f.pg.psql(
        "shop",
        // (Not orders → customers: the mapping keeps deleted customers out.)
        "ALTER TABLE orders ADD FOREIGN KEY (store_id) REFERENCES stores;
         ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders;
         ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products;
         ALTER TABLE products ADD FOREIGN KEY (category_id) REFERENCES categories;",
    );
    f.start();
    f.wait_in_sync();
    f.hq_inserts_children_first();
    f.expect_in(
        "shop",
        "SELECT count(*) FROM order_items WHERE order_id = 900001",
        "2",
    );
    f.hq_deletes_the_parent_first();
    f.expect_in(
        "shop",
        "SELECT count(*) FROM orders WHERE order_id = 900001",
        "0",
    );
    f.expect_in(
        "shop",
        "SELECT count(*) FROM order_items WHERE order_id = 900001",
        "0",
    );
    // A row whose parent exists nowhere is still refused, alone.
    f.pg.psql(
        "hq",
        "INSERT INTO order_items VALUES (gen_random_uuid(), 999999, 1, 1, 1);
         UPDATE orders SET status = 'after the orphan' WHERE order_id = 1;",
    );
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 1",
        "after the orphan",
    );
    let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rejected: Vec<&serde_json::Value> = list.as_array().unwrap().iter().collect();
    assert_eq!(rejected.len(), 1, "{out}");
    assert!(
        rejected[0]["reason"].as_str().unwrap().contains("23503")
            && rejected[0]["collection"] == "order_items"
            && rejected[0]["stage"] == "sink-waiting",
        "{out}"
    );
    let status = ok(&f.connector(&["status"]));
    assert!(
        status.contains("shop: 1 refused write(s) wait for rows they reference"),
        "{status}"
    );
    // Clearing the dead letters leaves it: it lands by itself.
    let out = ok(&f.connector(&["dead-letters", "discard", "--all"]));
    assert!(
        out.contains("kept 1 write(s) waiting for rows they reference"),
        "{out}"
    );
    // Its parent, committed later in another transaction (hq has no such
    // key): the waiting item is tried again by itself and lands.
    f.pg.psql(
        "hq",
        "INSERT INTO orders VALUES (999999, 1, 1, now(), 'parent after child', 1);",
    );
    f.expect_in(
        "shop",
        "SELECT count(*) FROM order_items WHERE order_id = 999999",
        "1",
    );
    f.no_dead_letters();
}

#[test]
fn a_deferred_foreign_key_refusal_waits_and_the_sink_goes_on() {
    let mut f = Fleet::new("0.001");
    // As Django makes them: checked at COMMIT, where the whole batch failed
    // again after each row had passed alone, and the sink stopped.
    f.pg.psql(
        "shop",
        "ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders DEFERRABLE INITIALLY DEFERRED",
    );
    f.start();
    f.wait_in_sync();
    f.pg.psql(
        "hq",
        "INSERT INTO order_items VALUES (gen_random_uuid(), 999998, 1, 1, 1);
         UPDATE orders SET status = 'beside the orphan' WHERE order_id = 1;",
    );
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 1",
        "beside the orphan",
    );
    let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["stage"], "sink-waiting", "{out}");
    f.pg.psql(
        "hq",
        "INSERT INTO orders VALUES (999998, 1, 1, now(), 'late parent', 1);",
    );
    f.expect_in(
        "shop",
        "SELECT count(*) FROM order_items WHERE order_id = 999998",
        "1",
    );
}

#[test]
fn a_copy_takes_parents_first_whatever_the_mapping_lists_first() {
    let mut f = Fleet::new("0.002");
    for db in ["hq", "shop"] {
        f.pg.psql(
            db,
            "ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders",
        );
    }
    // The mapping lists order_items first; batches far smaller than a table.
    let path = f.dir.path().join("mappings/retail.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let (start, end) = (
        yaml.find("  order_items:").unwrap(),
        yaml.find("  store_order_numbers:").unwrap(),
    );
    let items = &yaml[start..end];
    let reordered = yaml.replacen(items, "", 1).replacen(
        "collections:\n",
        &format!("collections:\n{items}"),
        1,
    );
    assert!(reordered.find("order_items").unwrap() < reordered.find("  orders:").unwrap());
    std::fs::write(&path, reordered).unwrap();
    f.extra_env
        .push(("DITTO_CLOUD_SYNC_BATCH_SIZE".into(), "100".into()));
    let out = ok(&f.connector(&["initial-sync", "--provider", "hq"]));
    assert!(
        out.find("hq/orders:").unwrap() < out.find("hq/order_items:").unwrap(),
        "{out}"
    );
    f.start();
    f.wait_in_sync();
    f.no_dead_letters();
}

#[test]
fn a_row_soft_deleted_out_of_the_filter_keeps_its_change_in_its_database() {
    // customers syncs only `deleted: false`.
    let mut f = Fleet::new("0.001");
    f.start();
    f.wait_in_sync();
    f.pg.psql(
        "hq",
        "UPDATE customers SET deleted = true, email = 'closed@example.com' WHERE customer_id = 1",
    );
    // Once hq's update is read (it is left out), shop edits both customers.
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'marker' WHERE order_id = 1",
    );
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 1",
        "marker",
    );
    f.pg.psql(
        "shop",
        "UPDATE customers SET name = 'edited in shop' WHERE customer_id IN (1, 2)",
    );
    f.expect_in(
        "hq",
        "SELECT name FROM customers WHERE customer_id = 2",
        "edited in shop",
    );
    // hq's row left the filter there: not written back over.
    assert_eq!(
        f.pg.query(
            "hq",
            "SELECT deleted || ' ' || email || ' ' || (name = 'edited in shop') FROM customers WHERE customer_id = 1"
        )
        .as_deref(),
        Some("true closed@example.com false"),
    );
    let verified = f.verify();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // Back in the filter in hq: synced again.
    f.pg.psql(
        "hq",
        "UPDATE customers SET deleted = false, email = 'open@example.com' WHERE customer_id = 1",
    );
    f.expect_in(
        "shop",
        "SELECT email FROM customers WHERE customer_id = 1",
        "open@example.com",
    );
}

#[test]
fn a_table_out_of_the_publication_stops_its_provider_and_a_renamed_one_goes_on() {
    let mut f = Fleet::synced_and_stopped("0.001");
    // As after DROP TABLE + CREATE TABLE: the table left the publication.
    f.pg.psql("hq", "ALTER PUBLICATION connector_hq DROP TABLE stores");
    f.start();
    let stopped_with = |f: &Fleet, words: &str| {
        let words = words.to_string();
        wait_for(
            &format!("hq to stop with `{words}`"),
            Duration::from_secs(60),
            || {
                let hq = f.provider_status("hq")?;
                hq["last_error"].as_str()?.contains(&words).then_some(())
            },
        );
    };
    stopped_with(&f, "public.stores not in publication connector_hq");
    assert_eq!(f.stop(), Some(0));
    ok(&f.connector(&["setup", "--provider", "hq"]));
    f.start();
    f.pg.psql(
        "hq",
        "UPDATE stores SET city = 'published' WHERE store_id = 1",
    );
    f.expect_in(
        "shop",
        "SELECT city FROM stores WHERE store_id = 1",
        "published",
    );
    // A mapped table renamed under the running stream, with no change in
    // this session before (no Relation message seen yet): known by its oid,
    // its changes go on to its collection (before, dropped as an unmapped
    // table's while the slot moved past them).
    let id = |n: usize| {
        f.pg.query(
            "hq",
            &format!("SELECT id FROM categories ORDER BY id OFFSET {n} LIMIT 1"),
        )
        .unwrap()
    };
    let (first, second) = (id(0), id(1));
    f.pg.psql(
        "hq",
        &format!(
            "ALTER TABLE categories RENAME TO kinds;
             UPDATE kinds SET name = 'renamed' WHERE id = '{first}';"
        ),
    );
    f.expect_in(
        "shop",
        &format!("SELECT name FROM categories WHERE id = '{first}'"),
        "renamed",
    );
    assert_eq!(f.stop(), Some(0));
    // Renamed again while stopped, with a change on each side; the mapping
    // follows the last name. The stream resumes before the rename, where
    // the table still has its old name (stopping there, as first done,
    // left no way on but a fresh copy).
    f.pg.psql(
        "hq",
        &format!(
            "UPDATE kinds SET name = 'before' WHERE id = '{first}';
             ALTER TABLE kinds RENAME TO sorts;
             UPDATE sorts SET name = 'after' WHERE id = '{second}';"
        ),
    );
    f.edit_retail_mapping(
        "  categories:\n    id: { mode: match_ids }\n",
        "  categories:\n    id: { mode: match_ids }\n    providers:\n      hq: {table: sorts}\n",
    );
    f.start();
    f.expect_in(
        "shop",
        &format!("SELECT string_agg(name, ',' ORDER BY id) FROM categories WHERE id IN ('{first}', '{second}')"),
        "before,after",
    );
    // A mapped table leaving the publication while hq streams: caught at
    // the next heartbeat (before, only at the next start, green meanwhile
    // while the slot moved past its changes).
    f.pg.psql("hq", "ALTER PUBLICATION connector_hq DROP TABLE orders");
    stopped_with(&f, "public.orders not in publication connector_hq");
}

#[test]
fn an_id_column_renamed_under_the_stream_stops_the_provider() {
    let mut f = Fleet::new("0.001");
    f.start();
    f.wait_in_sync();
    // Every change of the table would be a dead letter (no id): stopped
    // before the change, with what to do.
    f.pg.psql(
        "hq",
        "ALTER TABLE stores RENAME COLUMN store_id TO sid;
         UPDATE stores SET city = 'after' WHERE sid = 1;",
    );
    wait_for("hq to stop", Duration::from_secs(60), || {
        let hq = f.provider_status("hq")?;
        hq["last_error"]
            .as_str()?
            .contains("id column `store_id` of mapped table public.stores is gone")
            .then_some(())
    });
    f.no_dead_letters();
    // The mapping follows; the stream resumes before the rename, where the
    // table still has its old column, and goes on (no stop for ever there).
    assert_eq!(f.stop(), Some(0));
    f.edit_retail_mapping(
        "    id: { mode: single_field, field: store_id }\n",
        "    id: { mode: single_field, field: store_id }\n    providers:\n      hq: {columns: {store_id: sid}}\n",
    );
    f.start();
    f.expect_in(
        "shop",
        "SELECT city FROM stores WHERE store_id = 1",
        "after",
    );
}

#[test]
fn a_mapped_table_replaced_under_the_stream_stops_the_provider() {
    let mut f = Fleet::new("0.001");
    f.start();
    f.wait_in_sync();
    // A migration that swaps the table: the new one is not published, its
    // changes would never come (and the old one streams on renamed).
    f.pg.psql(
        "hq",
        "ALTER TABLE stores RENAME TO stores_old;
         CREATE TABLE stores (LIKE stores_old INCLUDING ALL);
         INSERT INTO stores SELECT * FROM stores_old;",
    );
    wait_for("hq to stop", Duration::from_secs(60), || {
        let hq = f.provider_status("hq")?;
        hq["last_error"]
            .as_str()?
            .contains("\"stores\" is not the table mapped under that name")
            .then_some(())
    });
}

#[test]
fn a_rename_onto_a_column_the_table_has_is_refused_before_anything_moves() {
    let f = Fleet::new("0.001");
    // shop's `name` column would hold the document's `city`: its own `city`
    // column then lands in the same field, one overwriting the other.
    f.edit_retail_mapping(
        "    id: { mode: single_field, field: store_id }\n",
        "    id: { mode: single_field, field: store_id }\n    providers:\n      shop: {columns: {city: name}}\n",
    );
    let out = f.connector(&["setup", "--provider", "shop"]);
    let text = failed(&out);
    assert!(
        text.contains(
            "columns `name` and `city` of table stores both become the document field `city`"
        ),
        "{text}"
    );
    // hq's table is not renamed: it sets up.
    ok(&f.connector(&["setup", "--provider", "hq"]));
}

#[test]
fn verify_changes_nothing_in_the_databases_it_reads() {
    let f = Fleet::new("0.001");
    // Nothing set up yet: verify reads hq's rows (none in the store).
    let v = f.verify();
    let out = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(!v.status.success(), "{out}");
    assert!(out.contains("orders"), "{out}");
    for db in ["hq", "shop"] {
        let made =
            f.pg.query(
                db,
                "SELECT (SELECT count(*) FROM pg_replication_slots)
                      + (SELECT count(*) FROM pg_publication)",
            )
            .unwrap();
        // Before, verify made hq's slot: WAL kept for a fleet never run.
        assert_eq!(made, "0", "verify made a slot or publication in {db}");
    }
}

#[test]
fn a_server_whose_wal_ends_before_the_stores_position_stops_the_provider() {
    let mut f = Fleet::synced_and_stopped("0.001");
    // As after a restore, or a failover to a standby that lagged: the
    // store has merged up to an LSN the server's WAL has not reached, and
    // the server's next commits would take LSNs below it.
    let out = std::process::Command::new("sqlite3")
        .arg(f.dir.path().join("store.db"))
        .arg("UPDATE positions SET position = 'FF/0' WHERE provider = 'hq'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.start();
    wait_for(
        "hq to stop with the diagnosis",
        Duration::from_secs(60),
        || {
            let hq = f.provider_status("hq")?;
            hq["last_error"]
                .as_str()?
                .contains("on a server whose WAL ends at")
                .then_some(())
        },
    );
}

#[test]
fn a_delete_reaches_a_table_with_a_not_null_domain_column() {
    let mut f = Fleet::new("0.001");
    // shop's devices have a column of a NOT NULL domain (hq's lack it).
    f.pg.psql(
        "shop",
        "CREATE DOMAIN label AS text NOT NULL;
         ALTER TABLE devices ADD COLUMN tag label DEFAULT 'none';",
    );
    f.start();
    f.wait_in_sync();
    f.hq_adds_a_scanner();
    f.pg.psql("hq", "DELETE FROM devices WHERE serial_no = 'd-1'");
    f.expect_in(
        "shop",
        "SELECT count(*) FROM devices WHERE serial_no = 'd-1'",
        "0",
    );
    f.no_dead_letters();
}

#[test]
fn a_partitioned_table_is_copied_and_streamed_under_its_own_name() {
    let mut f = Fleet::new("0.001");
    f.partitioned_devices("hq");
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES ('SN-copied', 'copied')",
    );
    f.start();
    f.expect_in(
        "shop",
        "SELECT name FROM devices WHERE serial_no = 'SN-copied'",
        "copied",
    );
    // Rows land in both partitions; the stream names the parent.
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES ('SN-1', 'a'), ('SN-2', 'b'), ('SN-3', 'c'), ('SN-4', 'd')",
    );
    f.expect_in(
        "shop",
        "SELECT string_agg(name, ',' ORDER BY name) FROM devices WHERE serial_no LIKE 'SN-_'",
        "a,b,c,d",
    );
}

#[test]
fn a_row_a_validation_trigger_refuses_is_a_dead_letter_and_the_rest_goes_on() {
    let mut f = Fleet::new("0.001");
    f.shop_refuses_bad_statuses();
    f.start();
    f.wait_in_sync();
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'bad' WHERE order_id = 1;
         UPDATE orders SET status = 'good' WHERE order_id = 2;",
    );
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 2",
        "good",
    );
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'later' WHERE order_id = 3",
    );
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 3",
        "later",
    );
    let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
    assert!(
        out.contains("status bad refused") && out.contains("P0001"),
        "{out}"
    );
}

#[test]
fn a_bulk_change_whose_every_row_a_trigger_refuses_does_not_stall_the_sink() {
    let mut f = Fleet::new("0.001");
    f.shop_refuses_bad_statuses();
    f.extra_env.extend([
        (
            "CONNECTOR_SHOP_OPTIONS".into(),
            "heartbeat_ms=1000,refused_batch_wait_s=3".into(),
        ),
        // A window of the log no larger than the bulk change: no later
        // change shares its batch (else the batch is not refused whole).
        ("DITTO_CLOUD_SYNC_BATCH_SIZE".into(), "5".into()),
    ]);
    f.start();
    f.wait_in_sync();
    // A bulk change filling a batch, every row refused: taken for a table
    // refusing writes for 3 s, then each row is a dead letter.
    f.pg.psql("hq", "UPDATE orders SET status = 'bad' WHERE order_id <= 5");
    std::thread::sleep(Duration::from_secs(1));
    f.pg.psql(
        "hq",
        "UPDATE stores SET city = 'after the bulk' WHERE store_id = 1",
    );
    f.expect_in(
        "shop",
        "SELECT city FROM stores WHERE store_id = 1",
        "after the bulk",
    );
    let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
    assert_eq!(out.matches("status bad refused").count(), 5, "{out}");
}

#[test]
fn generated_and_always_identity_columns_are_left_to_the_database() {
    let mut f = Fleet::new("0.001");
    f.generated_total_in_both();
    f.pg.psql(
        "shop",
        "DROP TABLE devices;
         CREATE TABLE devices (id int GENERATED ALWAYS AS IDENTITY, serial_no text PRIMARY KEY, name text)",
    );
    f.start();
    f.wait_in_sync();
    f.pg.psql("hq", "UPDATE orders SET total = 21 WHERE order_id = 1");
    f.expect_in(
        "shop",
        "SELECT total || ' ' || total_x2 FROM orders WHERE order_id = 1",
        "21.00 42.00",
    );
    f.pg.psql(
        "hq",
        "INSERT INTO devices (id, serial_no, name) VALUES (77, 'SN-77', 'x')",
    );
    f.expect_in(
        "shop",
        "SELECT id FROM devices WHERE serial_no = 'SN-77'",
        "77",
    );
    f.no_dead_letters();
}

/// Sum of inserts, updates and deletes PostgreSQL counted in a database.
/// Rows written in `db` since the first call: a row trigger on every table
/// bumps a sequence, counted at once (`pg_stat_user_tables` may show an
/// idle session's write up to 10 s later, inside a quiet window).
fn writes(f: &Fleet, db: &str) -> i64 {
    f.pg.psql(
        db,
        "CREATE SEQUENCE IF NOT EXISTS test_writes;
         CREATE OR REPLACE FUNCTION test_count_write() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
           BEGIN PERFORM nextval('test_writes'); RETURN NULL; END $$;
         DO $$ DECLARE t regclass; BEGIN
           FOR t IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition LOOP
             EXECUTE format('CREATE OR REPLACE TRIGGER test_count_write AFTER INSERT OR UPDATE OR DELETE ON %s
                             FOR EACH ROW EXECUTE FUNCTION test_count_write()', t);
           END LOOP; END $$;",
    );
    f.pg.query(
        db,
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_writes",
    )
    .unwrap()
    .parse()
    .unwrap()
}

/// shop's role may not use replication origins: its echoes are recognised
/// by recorded intents; hq's (superuser) by origin tags.
fn shop_without_origins(f: &mut Fleet) {
    f.pg.psql(
        "shop",
        "CREATE ROLE syncer LOGIN REPLICATION;
         GRANT CREATE ON DATABASE shop TO syncer;
         DO $$ DECLARE t record; BEGIN
           FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
             EXECUTE format('ALTER TABLE public.%I OWNER TO syncer', t.tablename);
           END LOOP;
         END $$;",
    );
    let shop_url = f.pg.url("shop").replacen("postgres@", "syncer@", 1);
    assert!(shop_url.contains("syncer@"), "{shop_url}");
    f.extra_env
        .push(("CONNECTOR_SHOP_CONNECTION_STRING".into(), shop_url));
}

#[test]
fn no_echo_loop_after_a_burst() {
    let mut f = Fleet::new("0.001");
    shop_without_origins(&mut f);
    f.start();
    f.wait_in_sync();
    for i in 0..50 {
        f.pg.psql(
            "hq",
            &format!(
                "UPDATE orders SET total = total + 1 WHERE order_id = {}",
                1 + i % 10
            ),
        );
        f.pg.psql(
            "shop",
            &format!(
                "UPDATE customers SET name = 'burst {i}' WHERE customer_id = {}",
                1 + i % 10
            ),
        );
    }
    f.wait_in_sync();
    // Quiet now: the write counters of both databases and the store's sink
    // counts must stop growing.
    std::thread::sleep(Duration::from_secs(3));
    let first = (
        writes(&f, "hq"),
        writes(&f, "shop"),
        f.status()["providers"].clone(),
    );
    std::thread::sleep(Duration::from_secs(4));
    let second = (
        writes(&f, "hq"),
        writes(&f, "shop"),
        f.status()["providers"].clone(),
    );
    assert_eq!(first.0, second.0, "hq keeps receiving writes: an echo loop");
    assert_eq!(
        first.1, second.1,
        "shop keeps receiving writes: an echo loop"
    );
    for i in 0..2 {
        assert_eq!(first.2[i]["sink_writes"], second.2[i]["sink_writes"]);
    }
    let echoes: i64 = second
        .2
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["echoes_dropped"].as_i64().unwrap())
        .sum();
    assert!(
        echoes >= 100,
        "our own writes came back and were recognised: {echoes}"
    );
    let logs = f.logs();
    let tagged = |p: &str| {
        let quoted = format!("\"{p}\"");
        logs.lines()
            .any(|l| l.contains("sink writes carry replication origin") && l.contains(&quoted))
    };
    assert!(tagged("hq"), "hq's sink tags its writes:\n{logs}");
    assert!(!tagged("shop"), "shop's role may not tag:\n{logs}");
    assert!(
        logs.contains("sink writes are not tagged with a replication origin"),
        "{logs}"
    );
}

#[test]
fn no_echo_loop_when_one_table_has_a_column_the_other_lacks() {
    let mut f = Fleet::new("0.001");
    // shop's devices table has a `note` that hq's lacks. hq's echoes are
    // known by origin tags, shop's by recorded intents: both paths.
    f.pg.psql("shop", "ALTER TABLE devices ADD COLUMN note text");
    shop_without_origins(&mut f);
    f.start();
    f.wait_in_sync();
    f.hq_adds_a_scanner();
    f.pg.psql(
        "shop",
        "UPDATE devices SET note = 'dented', name = 'old scanner' WHERE serial_no = 'd-1'",
    );
    f.expect_in(
        "hq",
        "SELECT name FROM devices WHERE serial_no = 'd-1'",
        "old scanner",
    );
    f.wait_in_sync();
    std::thread::sleep(Duration::from_secs(3));
    let first = (writes(&f, "hq"), writes(&f, "shop"));
    std::thread::sleep(Duration::from_secs(4));
    let second = (writes(&f, "hq"), writes(&f, "shop"));
    assert_eq!(first, second, "writes keep coming: an echo loop");
    f.expect_in(
        "shop",
        "SELECT note FROM devices WHERE serial_no = 'd-1'",
        "dented",
    );
    // In sync on the columns both have: `note` (hq lacks it) is no
    // difference for verify.
    let v = f.verify();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // Nor shop's NULL `note` of a device hq adds (its document has no
    // `note`, while d-1's has).
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES ('d-2', 'printer')",
    );
    f.expect_in(
        "shop",
        "SELECT name FROM devices WHERE serial_no = 'd-2'",
        "printer",
    );
    f.wait_in_sync();
    let v = f.verify();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn no_echo_loop_when_the_targets_trigger_stamps_our_writes() {
    let mut f = Fleet::new("0.001");
    // Both tables have `touched_at`; shop's trigger stamps it on every
    // write, ours too, so our write always comes back changed.
    f.pg.psql(
        "hq",
        "ALTER TABLE devices ADD COLUMN touched_at timestamptz",
    );
    f.pg.psql(
        "shop",
        "ALTER TABLE devices ADD COLUMN touched_at timestamptz;
         CREATE SEQUENCE stamps;
         CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN NEW.touched_at := clock_timestamp(); PERFORM nextval('stamps'); RETURN NEW; END $$;
         CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON devices
           FOR EACH ROW EXECUTE FUNCTION stamp();",
    );
    f.start();
    f.wait_in_sync();
    f.hq_adds_a_scanner();
    f.pg.psql("hq", "UPDATE devices SET name = 'old scanner'");
    f.expect_in(
        "shop",
        "SELECT name FROM devices WHERE serial_no = 'd-1'",
        "old scanner",
    );
    let stamps = || f.pg.query("shop", "SELECT last_value FROM stamps").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let first = stamps();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(first, stamps(), "shop keeps being written: an echo loop");
    assert!(
        // (A few per change: an echo may meet a write still in flight.)
        first.parse::<i64>().unwrap() <= 10,
        "{first} writes for 2 changes"
    );
    // hq keeps its own value; shop keeps its trigger's.
    f.expect_in(
        "hq",
        "SELECT touched_at IS NULL FROM devices WHERE serial_no = 'd-1'",
        "t",
    );
}

#[test]
fn a_target_triggers_change_of_another_row_in_our_write_is_merged() {
    let mut f = Fleet::new("0.001");
    // shop marks an order when a line is added to it: the UPDATE runs in
    // our sink's transaction and carries its replication origin.
    f.pg.psql(
        "shop",
        "CREATE FUNCTION mark_order() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN UPDATE orders SET status = 'has lines' WHERE order_id = NEW.order_id; RETURN NEW; END $$;
         CREATE TRIGGER mark_order AFTER INSERT ON order_items
           FOR EACH ROW EXECUTE FUNCTION mark_order();",
    );
    f.start();
    f.wait_in_sync();
    f.pg.psql(
        "hq",
        "INSERT INTO orders VALUES (900002, 1, 1, now(), 'new', 1.00)",
    );
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 900002",
        "new",
    );
    f.pg.psql(
        "hq",
        "INSERT INTO order_items VALUES (gen_random_uuid(), 900002, 1, 1, 1.00)",
    );
    // The trigger's change is shop's own: it reaches hq, and shop keeps it
    // (taken as an echo, the sink wrote `new` back over it).
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 900002",
        "has lines",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        f.pg.query("shop", "SELECT status FROM orders WHERE order_id = 900002")
            .as_deref(),
        Some("has lines"),
        "shop's own change written over"
    );
}

#[test]
fn kill_9_during_streaming_loses_and_duplicates_nothing() {
    let mut f = Fleet::new("0.001");
    f.start();
    f.wait_in_sync();
    for round in 0..3 {
        for i in 0..40 {
            let id = 800_000 + round * 100 + i;
            f.pg.psql("hq", &format!("INSERT INTO orders VALUES ({id}, 1, 1, date_trunc('milliseconds', now()), 'new', {i})"));
            f.pg.psql(
                "shop",
                &format!(
                    "UPDATE customers SET email = 'r{round}-{i}@x' WHERE customer_id = {}",
                    1 + i
                ),
            );
            if i == 20 {
                f.kill9();
            }
        }
        f.start();
    }
    f.wait_in_sync();
    let out = f.verify();
    assert!(
        out.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(f.pg.count("shop", "orders WHERE order_id >= 800000"), 120);
}

#[test]
fn kill_9_during_initial_sync_resumes_from_the_last_chunk() {
    let mut f = Fleet::new("0.05");
    f.spawn_slowed_copy("hq");
    let store = f.dir.path().join("store.db");
    // wait until some progress is saved, then kill
    wait_for("initial-sync progress", Duration::from_secs(60), || {
        let out = f.connector(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (store.exists() && v["providers"][0]["applied"].as_u64()? > 5000).then_some(())
    });
    f.kill9();
    f.resume_initial_sync("hq");
    f.start();
    f.wait_in_sync();
    verified_and_no_order_lost(&f);
}

#[test]
fn a_copy_killed_midway_resumes_under_run_even_with_initial_sync_off() {
    let mut f = Fleet::new("0.05");
    f.spawn_slowed_copy("hq");
    wait_for("initial-sync progress", Duration::from_secs(60), || {
        (f.progress_rows("hq") > 5000).then_some(())
    });
    f.kill9();
    let (done, begun, _) = connector_store::Store::open(f.dir.path().join("store.db"))
        .and_then(|s| s.initial_sync_progress("hq"))
        .unwrap();
    assert!(done < begun, "the copy had finished before the kill");
    // Initial sync turned off: a copy begun and not finished still
    // resumes, or the stream would start past the rows it did not copy.
    f.extra_env
        .push(("CONNECTOR_INITIAL_SYNC".into(), "never".into()));
    f.start();
    f.wait_in_sync();
    verified_and_no_order_lost(&f);
}

fn verified_and_no_order_lost(f: &Fleet) {
    let v = f.verify();
    assert!(
        v.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&v.stdout)
    );
    let orders = f.connector(&["query", "orders", "--limit", "1000000"]);
    let docs: serde_json::Value = serde_json::from_slice(&orders.stdout).unwrap();
    assert_eq!(
        docs.as_array().unwrap().len() as i64,
        f.pg.count("hq", "orders"),
        "no order missing or doubled"
    );
}

#[test]
fn a_connection_string_with_several_hosts_streams_from_the_one_up() {
    let mut f = Fleet::new("0.001");
    // An HA list whose first host is down (port 1 refuses).
    f.extra_env.push((
        "CONNECTOR_HQ_CONNECTION_STRING".into(),
        format!(
            "host=127.0.0.1,127.0.0.1 port=1,{} user=postgres dbname=hq",
            f.pg.port
        ),
    ));
    f.start();
    f.wait_in_sync();
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'from hq' WHERE order_id = 3",
    );
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 3",
        "from hq",
    );
    f.pg.psql(
        "shop",
        "UPDATE orders SET status = 'from shop' WHERE order_id = 4",
    );
    f.expect_in(
        "hq",
        "SELECT status FROM orders WHERE order_id = 4",
        "from shop",
    );
}

#[test]
fn a_to_iso_string_field_goes_back_into_its_millis_column_as_millis() {
    let mut f = Fleet::new("0.001");
    std::fs::write(
        f.dir.path().join("mappings/test.yaml"),
        "collections:\n  devices:\n    id: {mode: single_field, field: serial_no}\n    transforms:\n      - to_iso_string: seen_ms\n",
    )
    .unwrap();
    f.pg.psql("hq", "ALTER TABLE devices ADD COLUMN seen_ms bigint");
    f.pg.psql("shop", "ALTER TABLE devices ADD COLUMN seen_ms timestamptz");
    f.start();
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name, seen_ms) VALUES ('d-9', 'scanner', 1709634030123)",
    );
    f.expect_in(
        "shop",
        "SELECT seen_ms FROM devices WHERE serial_no = 'd-9'",
        "2024-03-05 10:20:30.123+00",
    );
    // shop's change makes hq's sink write the whole document back, the
    // ISO text with it (before, bigint refused it: a dead letter).
    f.pg.psql(
        "shop",
        "UPDATE devices SET name = 'old scanner' WHERE serial_no = 'd-9'",
    );
    f.expect_in(
        "hq",
        "SELECT name || ' ' || seen_ms FROM devices WHERE serial_no = 'd-9'",
        "old scanner 1709634030123",
    );
}

#[test]
fn a_char_n_key_is_one_document_whether_copied_or_streamed() {
    let mut f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(db, "CREATE TABLE codes (code char(5) PRIMARY KEY, n int)");
    }
    f.pg.psql("hq", "INSERT INTO codes VALUES ('ab', 0)");
    std::fs::write(
        f.dir.path().join("mappings/codes.yaml"),
        "collections:\n  codes:\n    id: {mode: single_field, field: code}\n",
    )
    .unwrap();
    f.start();
    f.expect_in("shop", "SELECT n FROM codes WHERE code = 'ab'", "0");
    // Streamed, the key keeps its padding: before, the copy's `::text`
    // stripped it and this update made a second document.
    f.pg.psql("hq", "UPDATE codes SET n = 1");
    f.expect_in("shop", "SELECT n FROM codes WHERE code = 'ab'", "1");
    f.wait_in_sync();
    let docs = ok(&f.connector(&["query", "codes"]));
    assert_eq!(docs.matches("\"code\"").count(), 1, "{docs}");
}

#[test]
fn a_second_process_for_a_provider_waits_instead_of_writing_it_too() {
    let mut f = Fleet::new("0.001");
    f.start();
    f.wait_in_sync();
    // Every provider in one process, and shop again in its own.
    let log = f.dir.path().join("second.log");
    /// Killed however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _second = Killed(
        f.command_with(&["run", "--provider", "shop"], &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(
                std::fs::File::create(&log).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    wait_for("the second process waits", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("another process streams or copies shop")
            && text.contains("another process writes shop"))
        .then_some(())
    });
    f.pg.psql("hq", "UPDATE orders SET status = 'once' WHERE order_id = 2");
    f.expect_in(
        "shop",
        "SELECT status FROM orders WHERE order_id = 2",
        "once",
    );
}

#[test]
fn an_update_beside_a_key_stored_out_of_line_stays_an_update() {
    let mut f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(
            db,
            "CREATE TABLE long_keys (k text PRIMARY KEY, n int);
             ALTER TABLE long_keys ALTER COLUMN k SET STORAGE EXTERNAL;",
        );
    }
    std::fs::write(
        f.dir.path().join("mappings/long_keys.yaml"),
        "collections:\n  long_keys:\n    id: {mode: single_field, field: k}\n",
    )
    .unwrap();
    f.start();
    f.pg.psql("hq", "INSERT INTO long_keys VALUES (repeat('k', 2500), 0)");
    f.expect_in("shop", "SELECT n FROM long_keys", "0");
    // The key, out of line and left alone, comes as unchanged TOAST.
    f.pg.psql("hq", "UPDATE long_keys SET n = 1");
    f.expect_in(
        "shop",
        "SELECT count(*) || ' ' || max(n) FROM long_keys",
        "1 1",
    );
    f.no_dead_letters();
}

#[test]
fn a_counter_in_a_domain_column_counts() {
    let mut f = Fleet::new("0.001");
    // A domain over a domain over int: the stream's Relation message names
    // the domain; read as text, the counter was refused on every change
    // (and the copy, one level deep, read it as text too).
    f.pg.psql(
        "hq",
        "CREATE DOMAIN base_qty AS int CHECK (VALUE >= -1000000);
         CREATE DOMAIN qty AS base_qty;
         ALTER TABLE inventory ALTER COLUMN quantity TYPE qty;",
    );
    f.start();
    f.wait_in_sync();
    let (id, before) = f.first_inventory();
    f.pg.psql(
        "hq",
        &format!("UPDATE inventory SET quantity = quantity - 2 WHERE id = '{id}'"),
    );
    f.expect_in(
        "shop",
        &format!("SELECT quantity FROM inventory WHERE id = '{id}'"),
        &(before - 2).to_string(),
    );
    f.no_dead_letters();
}

#[test]
fn a_table_keyed_by_a_generated_column_is_refused_by_name() {
    let f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(
            db,
            "CREATE TABLE coded (id int NOT NULL, code int GENERATED ALWAYS AS (id * 2) STORED PRIMARY KEY)",
        );
    }
    f.pg.psql("hq", "INSERT INTO coded (id) SELECT generate_series(1, 10)");
    std::fs::write(
        f.dir.path().join("mappings/coded.yaml"),
        "collections:\n  coded:\n    id: {mode: single_field, field: id}\n",
    )
    .unwrap();
    let out = failed(&f.connector(&["initial-sync", "--provider", "hq", "--collection", "coded"]));
    assert!(
        out.contains("the primary key's column `code` is a generated column"),
        "{out}"
    );
}

#[test]
fn survives_a_postgres_restart_and_dead_letters_a_bad_row() {
    let mut f = Fleet::new("0.001");
    f.start();
    f.wait_in_sync();
    f.pg.restart();
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES (NULL, 'no serial')",
    );
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES ('SN-1', 'good')",
    );
    f.pg.psql("hq", "INSERT INTO orders VALUES (700001, 1, 1, date_trunc('milliseconds', now()), 'after-restart', 1)");
    f.expect_both(
        "SELECT status FROM orders WHERE order_id = 700001",
        "after-restart",
    );
    f.expect_both("SELECT string_agg(serial_no, ',') FROM devices", "SN-1");
    let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
    let list: serde_json::Value =
        serde_json::from_str(out.lines().collect::<Vec<_>>().join("\n").as_str()).unwrap();
    let dl = &list[0];
    assert_eq!(dl["collection"], "devices");
    assert_eq!(dl["field"], "serial_no");
    assert!(dl["reason"].as_str().unwrap().contains("null"));
    assert_eq!(dl["record"]["row"]["name"], "no serial");
    // verify cannot compare the row, and says so.
    let out = ok(&f.connector(&["verify", "--collection", "devices"]));
    assert!(
        out.contains("note: hq / devices: 1 row(s) the mapping rejects"),
        "{out}"
    );
    assert_eq!(f.stop(), Some(0));
}

#[test]
fn a_row_the_target_rejects_is_dead_lettered_and_retried_once_fixed() {
    let mut f = Fleet::new("0.001");
    // shop's column is too narrow for four of hq's eight city names
    f.pg.psql(
        "shop",
        "ALTER TABLE stores ALTER COLUMN city TYPE varchar(4)",
    );
    f.start();
    f.expect_both(
        "SELECT count(*) FROM orders",
        &f.pg.count("hq", "orders").to_string(),
    );
    wait_for("4 stores in shop", Duration::from_secs(60), || {
        (f.pg.count("shop", "stores") == 4).then_some(())
    });
    let out = ok(&f.connector(&["dead-letters", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rejected: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["provider"] == "shop")
        .collect();
    assert_eq!(rejected.len(), 4, "{out}");
    assert!(rejected
        .iter()
        .all(|d| d["stage"] == "sink" && d["collection"] == "stores"));
    assert!(
        rejected[0]["reason"].as_str().unwrap().contains("too long"),
        "{out}"
    );
    // fixed in shop; retry puts them back on the log for shop's sink
    f.pg.psql("shop", "ALTER TABLE stores ALTER COLUMN city TYPE text");
    let out = ok(&f.connector(&["dead-letters", "retry", "--all"]));
    assert!(out.contains("4 retried"), "{out}");
    f.expect_both("SELECT count(*) FROM stores", "8");
    f.wait_in_sync();
}

#[test]
fn truncate_propagates_only_where_the_mapping_opts_in() {
    let mut f = Fleet::new("0.001");
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES ('A', 'a'), ('B', 'b')",
    );
    f.start();
    f.expect_both("SELECT count(*) FROM devices", "2");
    f.wait_in_sync();
    let orders = f.pg.count("hq", "orders");
    f.pg.psql("hq", "TRUNCATE devices");
    f.pg.psql("hq", "TRUNCATE orders");
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES ('C', 'after')",
    );
    f.expect_both("SELECT string_agg(serial_no, ',') FROM devices", "C");
    // orders does not opt in: logged and skipped, shop keeps its rows
    wait_for(
        "the skipped TRUNCATE to be logged",
        Duration::from_secs(30),
        || f.logs().contains("TRUNCATE skipped").then_some(()),
    );
    assert_eq!(f.pg.count("shop", "orders"), orders);
    let log = f.logs();
    let skipped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TRUNCATE skipped"))
        .collect();
    assert!(
        !skipped.is_empty() && skipped.iter().all(|l| l.contains("orders")),
        "{skipped:?}"
    );
}

/// A synced fleet, stopped; hq's slot disappears and hq changes order 5
/// (`during-the-gap`) meanwhile: gone from the server's WAL stream.
fn hq_slot_lost_with_a_change_in_the_gap() -> Fleet {
    let f = Fleet::synced_and_stopped("0.001");
    f.pg.psql("hq", "SELECT pg_drop_replication_slot('connector_hq')");
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'during-the-gap' WHERE order_id = 5",
    );
    f
}

/// After a recovery from [`hq_slot_lost_with_a_change_in_the_gap`]: the
/// change made in the gap is everywhere, and hq streams again.
fn gap_filled_and_streaming_again(f: &Fleet) {
    f.expect_both(
        "SELECT status FROM orders WHERE order_id = 5",
        "during-the-gap",
    );
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'streamed-again' WHERE order_id = 6",
    );
    f.expect_both(
        "SELECT status FROM orders WHERE order_id = 6",
        "streamed-again",
    );
}

#[test]
fn a_lost_slot_stops_the_provider_or_is_re_snapshotted_by_policy() {
    let mut f = hq_slot_lost_with_a_change_in_the_gap();
    // Policy stop (the default): hq stops with the diagnosis, shop goes on.
    let http = format!("127.0.0.1:{}", free_port());
    f.extra_env
        .push(("CONNECTOR_HTTP_ADDR".into(), http.clone()));
    f.start();
    wait_for(
        "hq to report the lost slot",
        Duration::from_secs(60),
        || {
            let hq = f.provider_status("hq")?;
            let said = hq["last_error"].as_str()?;
            // Stopped, not retrying: `status` says so.
            (said.contains("does not exist") && said.contains("STOPPED")).then_some(())
        },
    );
    // /health: 503, hq red with the reason, shop green.
    wait_for("/health to show hq red", Duration::from_secs(30), || {
        let (code, body) = http_get(&http, "/health")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 503
            && v["status"] == "red"
            && v["providers"]["hq"]["status"] == "red"
            && v["providers"]["shop"]["status"] == "green"
            && v["providers"]["hq"]["tasks"]["source"]["detail"]
                .as_str()?
                .contains("does not exist"))
        .then_some(())
    });
    let (_, metrics) = http_get(&http, "/metrics").expect("/metrics answers");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("connector_errors_total{") && l.contains("provider=\"hq\"")),
        "{metrics}"
    );
    f.extra_env.retain(|(k, _)| k != "CONNECTOR_HTTP_ADDR");
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(
        f.pg.query("shop", "SELECT status FROM orders WHERE order_id = 5")
            .as_deref(),
        Some("during-the-gap")
    );
    f.pg.psql("shop", "UPDATE orders SET total = 1.00 WHERE order_id = 6");
    wait_for(
        "shop's own stream to go on",
        Duration::from_secs(60),
        || {
            let out = f.connector(&["query", "orders", "6"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("\"total\": 1")
                .then_some(())
        },
    );
    assert_eq!(f.stop(), Some(0));
    // Policy resnapshot: a new slot, a full copy, and the gap is filled.
    f.extra_env.push((
        "CONNECTOR_HQ_OPTIONS".into(),
        "heartbeat_ms=1000,on_slot_lost=resnapshot".into(),
    ));
    f.start();
    f.expect_both(
        "SELECT status FROM orders WHERE order_id = 5",
        "during-the-gap",
    );
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'after-the-copy' WHERE order_id = 7",
    );
    f.expect_both(
        "SELECT status FROM orders WHERE order_id = 7",
        "after-the-copy",
    );
    f.wait_in_sync();
}

#[test]
fn a_lost_slot_is_recovered_by_the_advised_restarted_copy() {
    let mut f = hq_slot_lost_with_a_change_in_the_gap();
    f.start();
    let advice = wait_for(
        "hq to report the lost slot",
        Duration::from_secs(60),
        || {
            f.provider_status("hq")?["last_error"]
                .as_str()
                .filter(|e| e.contains("does not exist"))
                .map(str::to_string)
        },
    );
    assert_eq!(f.stop(), Some(0));
    assert!(
        advice.contains("initial-sync --provider hq --restart"),
        "{advice}"
    );
    // What the error advises: the copy creates the slot and the stream
    // starts at it.
    ok(&f.connector(&["initial-sync", "--provider", "hq", "--restart"]));
    f.start();
    gap_filled_and_streaming_again(&f);
}

#[test]
fn a_lost_slot_made_again_by_setup_is_recovered_by_a_restarted_copy() {
    let mut f = hq_slot_lost_with_a_change_in_the_gap();
    // The older advice: setup first (a new slot, past the store's
    // position), then the copy, which then streams from that slot.
    ok(&f.connector(&["setup", "--provider", "hq"]));
    ok(&f.connector(&["initial-sync", "--provider", "hq", "--restart"]));
    f.start();
    gap_filled_and_streaming_again(&f);
}

#[test]
fn a_counter_change_made_while_stopped_counts_once_after_a_restarted_copy() {
    let mut f = Fleet::synced_and_stopped("0.001");
    let (id, before) = f.first_inventory();
    // While the fleet is down hq sells 5, then 3; the repeated copy shows
    // both, and the stream (from where the store stopped) brings the same
    // sales again.
    for n in [5, 3] {
        f.pg.psql(
            "hq",
            &format!("UPDATE inventory SET quantity = quantity - {n} WHERE id = '{id}'"),
        );
    }
    ok(&f.connector(&["initial-sync", "--provider", "hq", "--restart"]));
    f.start();
    f.wait_in_sync();
    f.expect_both(
        &format!("SELECT quantity FROM inventory WHERE id = '{id}'"),
        &(before - 8).to_string(),
    );
}

#[test]
fn a_commit_after_the_slot_is_created_and_before_the_copy_starts_wins() {
    let mut f = Fleet::new("0.001");
    // The first start creates the slot, then waits 2 s before it opens the
    // copy's transaction; hq commits a change inside that window: it is
    // streamed, not copied, and must not lose to the older copied row.
    f.start_with_first_copy_paused("2000");
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'after-slot' WHERE order_id = 1",
    );
    f.wait_in_sync();
    f.expect_both("SELECT status FROM orders WHERE order_id = 1", "after-slot");
}

#[test]
fn a_commit_a_repeated_copy_saw_in_progress_wins_though_stamped_before_it() {
    let mut f = Fleet::synced_and_stopped("0.001");
    // A change the store has not streamed yet, so the copy below writes
    // (rather than finding the store holding what hq showed last).
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'copied' WHERE order_id = 1",
    );
    // A synchronous standby that never answers holds hq's next commit:
    // PostgreSQL has stamped it, but no snapshot sees it until the wait ends.
    let standby = |names: &str| {
        f.pg.psql(
            "postgres",
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'"),
        );
        f.pg.psql("postgres", "SELECT pg_reload_conf()");
    };
    standby("nobody");
    let mut held = f.pg.psql_spawn(
        "hq",
        "SET synchronous_commit = on; UPDATE orders SET status = 'held' WHERE order_id = 1",
    );
    wait_for(
        "the commit to wait for the standby",
        Duration::from_secs(30),
        || {
            (f.pg
                .query(
                    "hq",
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                )
                .as_deref()
                == Some("1"))
            .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(50));
    // The copy repeated from a fresh snapshot (the slot exists): it shows
    // `copied`, stamped later than the held commit.
    ok(&f.connector(&[
        "initial-sync",
        "--provider",
        "hq",
        "--collection",
        "orders",
        "--restart",
    ]));
    standby("");
    assert!(held.wait().unwrap().success());
    assert_eq!(
        f.pg.query("hq", "SELECT status FROM orders WHERE order_id = 1")
            .as_deref(),
        Some("held")
    );
    // Streamed now, the commit must win over the copy everywhere.
    f.start();
    f.wait_in_sync();
    f.expect_both("SELECT status FROM orders WHERE order_id = 1", "held");
}

#[test]
fn a_commit_the_new_slot_waited_for_wins_over_an_earlier_write_elsewhere() {
    let mut f = Fleet::synced_and_stopped("0.001");
    f.pg.psql("hq", "CREATE TABLE release (id int)");
    // hq's slot is lost while the worker is down; the next start makes a new
    // one (policy resnapshot) and copies hq through its exported snapshot.
    f.pg.psql("hq", "SELECT pg_drop_replication_slot('connector_hq')");
    f.extra_env.push((
        "CONNECTOR_HQ_OPTIONS".into(),
        "heartbeat_ms=1000,on_slot_lost=resnapshot".into(),
    ));
    // A transaction running in hq, which CREATE_REPLICATION_SLOT waits for.
    let mut open = f.pg.psql_spawn(
        "hq",
        "BEGIN;
         UPDATE orders SET status = 'hq-later' WHERE order_id = 1;
         DO $$ BEGIN
           WHILE NOT EXISTS (SELECT 1 FROM release) LOOP PERFORM pg_sleep(0.02); END LOOP;
         END $$;
         COMMIT;",
    );
    wait_for("hq's transaction to run", Duration::from_secs(30), || {
        (f.pg
            .query(
                "hq",
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
            )
            .as_deref()
            == Some("1"))
        .then_some(())
    });
    f.start();
    f.wait_for_hq_slot();
    // While the slot waits, shop commits a change of the same field, then
    // hq's transaction commits: hq's is the later commit, and the copy
    // (the new slot's snapshot) shows it.
    f.pg.psql(
        "shop",
        "UPDATE orders SET status = 'shop-earlier' WHERE order_id = 1",
    );
    std::thread::sleep(Duration::from_millis(20));
    f.pg.psql("hq", "INSERT INTO release VALUES (1)");
    assert!(open.wait().unwrap().success());
    f.wait_in_sync();
    f.expect_both("SELECT status FROM orders WHERE order_id = 1", "hq-later");
}

#[test]
fn sigterm_during_the_first_copy_stops_cleanly_and_the_next_start_resumes() {
    let mut f = Fleet::new("0.01");
    // The first start holds the copy 3 s after creating hq's slot: SIGTERM
    // arrives while it copies.
    f.start_with_first_copy_paused("3000");
    assert_eq!(f.stop(), Some(0), "{}", f.logs());
    assert!(
        f.logs().contains("stopped during the first copy"),
        "{}",
        f.logs()
    );
    f.start();
    f.wait_in_sync();
    assert!(f.verify().status.success());
}

#[test]
fn a_toasted_value_survives_a_primary_key_change() {
    let mut f = Fleet::new("0.001");
    f.start();
    f.wait_in_sync();
    // ~9.6 KB of text: stored out of line (TOAST).
    let big = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 300) i)";
    // Store 1 under the default replica identity (the old image is the key
    // only), store 2 under REPLICA IDENTITY FULL.
    for (store, moved_to, identity) in [(1, 999, "DEFAULT"), (2, 998, "FULL")] {
        f.pg.psql(
            "hq",
            &format!("ALTER TABLE stores REPLICA IDENTITY {identity}"),
        );
        f.pg.psql(
            "hq",
            &format!("UPDATE stores SET city = {big} WHERE store_id = {store}"),
        );
        f.expect_both(
            &format!("SELECT length(city) FROM stores WHERE store_id = {store}"),
            "9600",
        );
        // The new key's row: PostgreSQL sends `city` as unchanged TOAST.
        f.pg.psql(
            "hq",
            &format!("UPDATE stores SET store_id = {moved_to} WHERE store_id = {store}"),
        );
        f.expect_both(
            &format!(
                "SELECT string_agg(store_id || ':' || coalesce(length(city), 0), ',') FROM stores \
                 WHERE store_id IN ({store}, {moved_to})"
            ),
            &format!("{moved_to}:9600"),
        );
        f.expect_both(
            &format!("SELECT md5(city) = md5({big}) FROM stores WHERE store_id = {moved_to}"),
            "t",
        );
    }
}

#[test]
fn a_change_of_a_document_id_that_is_not_the_primary_key_moves_the_document() {
    let mut f = Fleet::new("0.001");
    // devices: the primary key is `id`, the document id `serial_no`; setup
    // gives the table REPLICA IDENTITY FULL for the old image.
    f.pg.psql(
        "hq",
        "INSERT INTO devices (serial_no, name) VALUES ('d-1', 'scanner')",
    );
    f.start();
    f.wait_in_sync();
    f.expect_in(
        "shop",
        "SELECT name FROM devices WHERE serial_no = 'd-1'",
        "scanner",
    );
    f.pg.psql(
        "hq",
        "UPDATE devices SET serial_no = 'd-2' WHERE serial_no = 'd-1'",
    );
    f.expect_in(
        "shop",
        "SELECT string_agg(serial_no || ':' || name, ',') FROM devices",
        "d-2:scanner",
    );
    f.wait_in_sync();
}

#[test]
fn a_quiet_slot_advances_on_heartbeats_and_status_shows_its_wal_limit() {
    let mut f = Fleet::new("0.001");
    f.pg.psql(
        "postgres",
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'",
    );
    f.pg.psql("postgres", "SELECT pg_reload_conf()");
    f.start();
    f.wait_in_sync();
    // WAL from another database: nothing for hq's slot to stream, yet the
    // slot must not hold it back.
    f.pg.psql(
        "postgres",
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g",
    );
    let after = f.pg.query("hq", "SELECT pg_current_wal_lsn()").unwrap();
    wait_for(
        "hq's quiet slot to confirm past the other database's WAL",
        Duration::from_secs(60),
        || {
            (f.pg
                .query(
                    "hq",
                    &format!(
                        "SELECT confirmed_flush_lsn >= '{after}' FROM pg_replication_slots \
                         WHERE slot_name = 'connector_hq'"
                    ),
                )
                .as_deref()
                == Some("t"))
            .then_some(())
        },
    );
    wait_for(
        "status to show the slot's WAL limit",
        Duration::from_secs(60),
        || {
            let out = f.connector(&["status"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("slot connector_hq:")
                && text.contains("before max_slot_wal_keep_size invalidates it")
                && !text.contains("WARNING"))
            .then_some(())
        },
    );
}

#[test]
fn a_first_copy_of_one_collection_leaves_the_others_for_run_to_copy() {
    let mut f = Fleet::new("0.001");
    // On a fresh store: the slot and the stream's start come from this copy.
    let out = ok(&f.connector(&["initial-sync", "--provider", "hq", "--collection", "orders"]));
    assert!(out.contains("1 collection(s)"), "{out}");
    f.start();
    f.wait_in_sync();
    for t in ["stores", "order_items", "inventory"] {
        let want =
            f.pg.query("hq", &format!("SELECT count(*) FROM {t}"))
                .unwrap();
        f.expect_in("shop", &format!("SELECT count(*) FROM {t}"), &want);
    }
}

#[test]
fn run_started_beside_an_initial_sync_waits_for_it_then_streams() {
    let mut f = Fleet::new("0.001");
    // The copy holds hq's lock, and pauses 3 s after creating the slot.
    let copy = f
        .command_with(
            &["initial-sync", "--provider", "hq"],
            &[("CONNECTOR_TEST_PAUSE_AFTER_SLOT_MS", "3000")],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    f.wait_for_hq_slot();
    f.start();
    wait_for("run to wait for hq's lock", Duration::from_secs(30), || {
        f.logs()
            .contains("waiting: another process streams or copies hq")
            .then_some(())
    });
    let copied = copy.wait_with_output().unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    f.wait_in_sync();
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'after-wait' WHERE order_id = 1",
    );
    f.expect_both("SELECT status FROM orders WHERE order_id = 1", "after-wait");
}

#[test]
fn systemd_hears_ready_before_the_first_copy_then_watchdog_pings_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut f = Fleet::new("0.001");
    f.extra_env.extend([
        ("NOTIFY_SOCKET".into(), path.display().to_string()),
        ("WATCHDOG_USEC".into(), "400000".into()),
    ]);
    f.start_with_first_copy_paused("2000");
    let mut heard: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    wait_for("STATUS=syncing", Duration::from_secs(60), || {
        if let Ok(n) = sock.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        heard.iter().any(|m| m == "STATUS=syncing").then_some(())
    });
    let at = |what: &str| heard.iter().position(|m| m.starts_with(what));
    let (ready, copying, syncing) = (
        at("READY=1").expect("READY"),
        at("STATUS=copying existing rows of hq").expect("the copy's status"),
        at("STATUS=syncing").unwrap(),
    );
    assert!(ready < copying && copying < syncing, "{heard:?}");
    assert!(
        heard[ready..syncing]
            .iter()
            .filter(|m| *m == "WATCHDOG=1")
            .count()
            >= 2,
        "the watchdog is fed during the copy: {heard:?}"
    );
    assert_eq!(f.stop(), Some(0));
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        stopping |= &buf[..n] == b"STOPPING=1";
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
}

#[test]
fn a_provider_added_after_the_log_was_compacted_is_backfilled() {
    let mut f = Fleet::new("0.001");
    // First only hq is configured: its sink passes every entry and the log
    // is compacted away.
    f.extra_env.extend([
        ("CONNECTOR_PROVIDERS".into(), "hq=postgres".into()),
        ("CONNECTOR_COMPACT_EVERY_MS".into(), "200".into()),
    ]);
    f.start();
    let log_rows = |f: &Fleet| {
        let out = std::process::Command::new("sqlite3")
            .arg(f.dir.path().join("store.db"))
            .arg("SELECT count(*) FROM change_log")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    f.pg.psql(
        "hq",
        "UPDATE orders SET status = 'before-shop' WHERE order_id = 1",
    );
    wait_for(
        "the query to show the change",
        Duration::from_secs(60),
        || {
            let out = f.connector(&["query", "orders", "1"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("before-shop")
                .then_some(())
        },
    );
    wait_for(
        "the change log to be compacted",
        Duration::from_secs(60),
        || (log_rows(&f) == "0").then_some(()),
    );
    assert_eq!(f.stop(), Some(0));
    // shop joins: its sink finds the entries gone and compares every document.
    f.extra_env.retain(|(k, _)| k != "CONNECTOR_PROVIDERS");
    f.start();
    f.wait_in_sync();
    f.expect_both(
        "SELECT status FROM orders WHERE order_id = 1",
        "before-shop",
    );
    assert!(
        f.logs().contains("missed compacted change-log entries"),
        "{}",
        f.logs()
    );
}

/// Connects hq and shop through `hq` and `shop`, starts the fleet, and
/// sees an update in each database arrive in the other.
fn sync_over(f: &mut Fleet, hq: String, shop: String, tag: &str) {
    f.extra_env.extend([
        ("CONNECTOR_HQ_CONNECTION_STRING".into(), hq),
        ("CONNECTOR_SHOP_CONNECTION_STRING".into(), shop),
    ]);
    ok(&f.connector(&["test-connection"]));
    f.start();
    f.wait_in_sync();
    f.pg.psql(
        "hq",
        &format!("UPDATE orders SET status = '{tag}' WHERE order_id = 1"),
    );
    f.pg.psql(
        "shop",
        &format!("UPDATE orders SET status = 'back-{tag}' WHERE order_id = 2"),
    );
    f.expect_both("SELECT status FROM orders WHERE order_id = 1", tag);
    f.expect_both(
        "SELECT status FROM orders WHERE order_id = 2",
        &format!("back-{tag}"),
    );
}

/// Of the connector's TLS sessions that `filter` selects (SQL over
/// `pg_stat_activity a` and `pg_stat_ssl s`), how many also meet `meets`,
/// and how many there are.
fn tls_sessions(f: &Fleet, filter: &str, meets: &str) -> (u32, u32) {
    let counts =
        f.pg.query(
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE {meets}) || '/' || count(*) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name LIKE 'connector%' AND {filter}"
            ),
        )
        .unwrap();
    let (yes, all) = counts.split_once('/').unwrap();
    (yes.parse().unwrap(), all.parse().unwrap())
}

/// `test-connection` with hq at `hq`: it must fail; returns what it said.
fn refused(f: &Fleet, hq: String) -> String {
    let mut env = f.env();
    env.push(("CONNECTOR_PROVIDERS".into(), "hq=postgres".into()));
    env.push(("CONNECTOR_HQ_CONNECTION_STRING".into(), hq));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connector"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(f.dir.path())
        .envs(env)
        .arg("test-connection")
        .output()
        .unwrap();
    failed(&out)
}

#[test]
fn tls_with_verify_full_both_ways_and_clear_refusals() {
    let mut f = Fleet::new("0.001");
    let (ca, other_ca) = f.pg.enable_tls();
    let port = f.pg.port;
    let url = |db: &str, mode: &str, root: &std::path::Path| {
        format!(
            "postgres://postgres@localhost:{port}/{db}?sslmode={mode}&sslrootcert={}",
            root.display()
        )
    };
    let (hq, shop) = (
        url("hq", "verify-full", &ca),
        url("shop", "verify-full", &ca),
    );
    sync_over(&mut f, hq, shop, "over-tls");
    // Every session of the connector, replication included, is encrypted
    // (plain TCP is refused by pg_hba anyway).
    let (encrypted, all) = tls_sessions(&f, "true", "s.ssl");
    assert!(all >= 4 && encrypted == all, "{encrypted}/{all}");
    assert_eq!(f.stop(), Some(0));

    // Refusals say why.
    let plain = refused(&f, url("hq", "disable", &ca));
    assert!(
        plain.contains("cannot connect to PostgreSQL") && plain.contains("no encryption"),
        "{plain}"
    );
    let wrong_ca = refused(&f, url("hq", "verify-full", &other_ca));
    assert!(
        wrong_ca.contains("cannot connect to PostgreSQL")
            && wrong_ca.to_lowercase().contains("certificate"),
        "{wrong_ca}"
    );
}

#[test]
fn tls_client_certificates_authenticate_every_session() {
    let mut f = Fleet::new("0.001");
    let (ca, cert, key) = f.pg.enable_tls_with_client_certs();
    let port = f.pg.port;
    let url = |db: &str, with_cert: bool| {
        let mut url = format!(
            "postgres://postgres@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        if with_cert {
            url += &format!("&sslcert={}&sslkey={}", cert.display(), key.display());
        }
        url
    };
    sync_over(&mut f, url("hq", true), url("shop", true), "by-cert");
    // The replication sessions authenticated by certificate too.
    let (by_cert, all) = tls_sessions(
        &f,
        "a.backend_type = 'walsender'",
        "s.client_dn = '/CN=postgres'",
    );
    assert!(all >= 2 && by_cert == all, "{by_cert}/{all}");
    assert_eq!(f.stop(), Some(0));

    // Without the certificate the server refuses, and the error says why.
    let text = refused(&f, url("hq", false));
    assert!(
        text.contains("cannot connect to PostgreSQL") && text.contains("certificate"),
        "{text}"
    );
}

#[test]
fn a_transaction_larger_than_a_batch_is_merged_whole_from_disk() {
    let mut f = Fleet::new("0.002");
    f.extra_env
        .push(("DITTO_CLOUD_SYNC_BATCH_SIZE".into(), "20".into()));
    f.start();
    f.wait_in_sync();
    let (id, qty) = f.first_inventory();
    let sum = |db: &str| -> i64 {
        f.pg.query(db, "SELECT sum(quantity) FROM inventory")
            .unwrap()
            .parse()
            .unwrap()
    };
    let (total, items) = (sum("hq"), f.pg.count("hq", "inventory"));
    assert!(f.pg.count("hq", "orders") > 100 && items > 10);
    // One hq transaction of several hundred changes, 20 to a batch: every
    // order, every inventory counter (with before images), new rows.
    f.pg.psql(
        "hq",
        "BEGIN;
         UPDATE orders SET status = 'bulk';
         UPDATE inventory SET quantity = quantity - 1;
         INSERT INTO devices (serial_no, name) SELECT 'bulk-' || g, 'bulk' FROM generate_series(1, 50) g;
         COMMIT;",
    );
    // Meanwhile shop sells two of the first item: both count.
    f.pg.psql(
        "shop",
        &format!("UPDATE inventory SET quantity = quantity - 2 WHERE id = '{id}'"),
    );
    f.expect_both(
        &format!("SELECT quantity FROM inventory WHERE id = '{id}'"),
        &(qty - 3).to_string(),
    );
    f.expect_both(
        "SELECT sum(quantity) FROM inventory",
        &(total - items - 2).to_string(),
    );
    f.expect_in(
        "shop",
        "SELECT count(*) FROM orders WHERE status <> 'bulk'",
        "0",
    );
    f.expect_in(
        "shop",
        "SELECT count(*) FROM devices WHERE name = 'bulk'",
        "50",
    );
    assert!(
        f.logs().contains("holding it on disk until its commit"),
        "the transaction was not spilled: {}",
        f.logs()
    );
    let verified = f.verify();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    f.no_dead_letters();
}

#[test]
fn an_id_update_under_a_replica_identity_of_another_index_moves_the_document() {
    let mut f = Fleet::new("0.001");
    for db in ["hq", "shop"] {
        f.pg.psql(
            db,
            "CREATE TABLE tickets (id int PRIMARY KEY, code text NOT NULL UNIQUE, note text);
             ALTER TABLE tickets REPLICA IDENTITY USING INDEX tickets_code_key;",
        );
    }
    f.pg.psql(
        "hq",
        "INSERT INTO tickets SELECT g, 'c' || g, 'first' FROM generate_series(1, 5) g",
    );
    std::fs::write(
        f.dir.path().join("mappings/tickets.yaml"),
        "collections:\n  tickets:\n    id: {mode: single_field, field: id}\n",
    )
    .unwrap();
    f.start();
    f.wait_in_sync();
    f.expect_in("shop", "SELECT count(*) FROM tickets", "5");
    // An update of the id alone: PostgreSQL sends the old key only when the
    // replica identity's columns (code) change.
    f.pg.psql("hq", "UPDATE tickets SET id = 100 WHERE id = 1");
    f.expect_in(
        "shop",
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM tickets",
        "2,3,4,5,100",
    );
    f.no_dead_letters();
}
