//! The SQL each dialect writes for the retail schema. The DB2 statements
//! are written out from IBM's Db2 11.5 SQL reference (CREATE TRIGGER with
//! REFERENCING … FOR EACH ROW, JSON_OBJECT with KEY … VALUE, MERGE INTO …
//! USING (VALUES …), identity columns, FETCH FIRST, SYSCAT.COLUMNS) and
//! compared word for word.

use super::*;
use crate::catalog::Column;
use crate::snapshot::after_condition;
use serde_json::json;

fn col(name: &str, sql_type: &str, d: &dyn Dialect) -> Column {
    Column {
        name: name.into(),
        ty: d.column_type(sql_type),
        sql_type: sql_type.into(),
    }
}

/// `orders` as SYSCAT.COLUMNS describes it (through `columns_query`).
fn db2_orders() -> TableInfo {
    let d = &Db2;
    TableInfo {
        schema: Some("RETAIL".into()),
        name: "orders".into(),
        columns: vec![
            col("order_id", "BIGINT", d),
            col("customer_id", "INTEGER", d),
            col("order_date", "TIMESTAMP", d),
            col("status", "VARCHAR(20)", d),
            col("total", "DECIMAL(12,2)", d),
        ],
        key_checked: false,
    }
}

fn db2_store_order_numbers() -> TableInfo {
    let d = &Db2;
    TableInfo {
        schema: None,
        name: "store_order_numbers".into(),
        columns: vec![
            col("store_id", "INTEGER", d),
            col("order_no", "INTEGER", d),
            col("note", "VARCHAR(200)", d),
        ],
        key_checked: false,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn db2_reads_the_catalog_from_syscat_columns() {
    let (sql, params) = Db2.columns_query(Some("RETAIL"), "orders");
    assert_eq!(
        sql,
        "SELECT COLNAME, CASE WHEN LOWER(COALESCE(REMARKS, '')) = 'json' THEN 'JSON ' || TYPENAME || '(' || LENGTH || ')' WHEN TYPENAME = 'DECIMAL' THEN 'DECIMAL(' || LENGTH || ',' || SCALE || ')' \
         WHEN TYPENAME IN ('VARCHAR', 'CHARACTER', 'VARGRAPHIC', 'GRAPHIC', 'CLOB') THEN TYPENAME || '(' || LENGTH || ')' \
         ELSE TYPENAME END FROM SYSCAT.COLUMNS WHERE TABSCHEMA = ? AND TABNAME = ? \
         AND NOT (TYPENAME IN ('BLOB', 'BINARY', 'VARBINARY', 'DBCLOB', 'XML', 'LONG VARGRAPHIC') \
         OR (CODEPAGE = 0 AND TYPENAME IN ('CHARACTER', 'VARCHAR', 'LONG VARCHAR'))) \
         AND NOT (GENERATED = 'A' AND IDENTITY = 'N') ORDER BY COLNO"
    );
    assert_eq!(params, strings(&["RETAIL", "orders"]));
    let (sql, params) = Db2.columns_query(None, "orders");
    assert!(sql.contains("WHERE TABSCHEMA = CURRENT SCHEMA AND TABNAME = ?"));
    assert_eq!(params, strings(&["orders"]));
    let t = db2_orders();
    let types: Vec<ColumnType> = t.columns.iter().map(|c| c.ty).collect();
    assert_eq!(
        types,
        [
            ColumnType::Integer,
            ColumnType::Integer,
            ColumnType::TimestampTz,
            ColumnType::Text,
            ColumnType::Decimal
        ]
    );
    assert_eq!(Db2.column_type("BOOLEAN"), ColumnType::Bool);
    assert_eq!(Db2.column_type("JSON CLOB(1048576)"), ColumnType::Json);
    assert_eq!(Db2.column_type("CLOB(1048576)"), ColumnType::Text);
    assert_eq!(Db2.column_type("DATE"), ColumnType::Date);
}

#[test]
fn db2_leaves_out_and_names_what_json_object_cannot_carry() {
    // IBM: JSON_OBJECT refuses GRAPHIC, VARGRAPHIC, DBCLOB, BINARY, CHAR
    // and VARCHAR FOR BIT DATA and XML (42815), and reads other binary
    // strings (VARBINARY, BLOB) as BSON without FORMAT JSON.
    let (sql, params) = Db2
        .uncarried_columns_query(Some("RETAIL"), "orders")
        .unwrap();
    assert_eq!(
        sql,
        "SELECT COLNAME, CASE WHEN CODEPAGE = 0 AND TYPENAME IN ('CHARACTER', 'VARCHAR', 'LONG VARCHAR') \
         THEN TYPENAME || ' FOR BIT DATA' ELSE TYPENAME END FROM SYSCAT.COLUMNS \
         WHERE TABSCHEMA = ? AND TABNAME = ? AND (TYPENAME IN ('BLOB', 'BINARY', 'VARBINARY', 'DBCLOB', 'XML', 'LONG VARGRAPHIC') \
         OR (CODEPAGE = 0 AND TYPENAME IN ('CHARACTER', 'VARCHAR', 'LONG VARCHAR'))) ORDER BY COLNO"
    );
    assert_eq!(params, strings(&["RETAIL", "orders"]));
    assert!(Sqlite.uncarried_columns_query(None, "orders").is_none());
    // A graphic string goes in as a character string.
    let col = |sql_type: &str| Column {
        name: "NOTE".into(),
        ty: Db2.column_type(sql_type),
        sql_type: sql_type.into(),
    };
    assert_eq!(
        Db2.image_value(&col("VARGRAPHIC(40)"), "N.\"NOTE\"".into()),
        "VARCHAR(N.\"NOTE\")"
    );
    assert_eq!(
        Db2.image_value(&col("VARCHAR(40)"), "N.\"NOTE\"".into()),
        "N.\"NOTE\""
    );
    // DECFLOAT as text (JSON_OBJECT refuses NaN), TIME as the copy's form.
    assert_eq!(
        Db2.image_value(&col("DECFLOAT"), "N.\"NOTE\"".into()),
        "VARCHAR(N.\"NOTE\")"
    );
    assert_eq!(
        Db2.image_value(&col("TIME"), "N.\"NOTE\"".into()),
        "CHAR(N.\"NOTE\", JIS)"
    );
}

#[test]
fn db2_journal_is_a_table_with_an_ordered_identity() {
    assert_eq!(
        Db2.create_journal("\"RETAIL\".\"connector_journal\""),
        strings(&["CREATE TABLE \"RETAIL\".\"connector_journal\" (seq BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY \
             (START WITH 1 INCREMENT BY 1 CACHE 50 ORDER), \
             tbl VARCHAR(128) NOT NULL, op CHAR(1) NOT NULL, new_image CLOB(1G), old_image CLOB(1G), \
             changed_ms BIGINT NOT NULL, PRIMARY KEY (seq))"])
    );
}

#[test]
fn db2_triggers_reference_new_and_old_rows_and_write_json_images() {
    let t = db2_orders();
    let got = Db2.create_triggers(&TriggerSpec {
        table: &t,
        journal: "\"RETAIL\".\"connector_journal\"",
        journal_name: "connector_journal",
        name: "connector_journal_orders",
    });
    let image = |r: &str| {
        format!(
            "JSON_OBJECT(KEY 'order_id' VALUE {r}.\"order_id\", KEY 'customer_id' VALUE {r}.\"customer_id\", \
             KEY 'order_date' VALUE {r}.\"order_date\", KEY 'status' VALUE {r}.\"status\", \
             KEY 'total' VALUE {r}.\"total\" NULL ON NULL RETURNING CLOB(1G) FORMAT JSON)"
        )
    };
    let now =
        "(BIGINT(DAYS(CURRENT TIMESTAMP - CURRENT TIMEZONE) - DAYS('1970-01-01')) * 86400000 \
         + BIGINT(MIDNIGHT_SECONDS(CURRENT TIMESTAMP - CURRENT TIMEZONE)) * 1000 \
         + MICROSECOND(CURRENT TIMESTAMP - CURRENT TIMEZONE) / 1000)";
    let head = "INSERT INTO \"RETAIL\".\"connector_journal\" (tbl, op, new_image, old_image, changed_ms) VALUES ('orders'";
    assert_eq!(
        got,
        vec![
            format!(
                "CREATE OR REPLACE TRIGGER \"connector_journal_orders_ins\" AFTER INSERT ON \"RETAIL\".\"orders\" \
                 REFERENCING NEW AS N FOR EACH ROW {head}, 'I', {}, NULL, {now})",
                image("N")
            ),
            format!(
                "CREATE OR REPLACE TRIGGER \"connector_journal_orders_upd\" AFTER UPDATE ON \"RETAIL\".\"orders\" \
                 REFERENCING NEW AS N OLD AS O FOR EACH ROW {head}, 'U', {}, {}, {now})",
                image("N"),
                image("O")
            ),
            format!(
                "CREATE OR REPLACE TRIGGER \"connector_journal_orders_del\" AFTER DELETE ON \"RETAIL\".\"orders\" \
                 REFERENCING OLD AS O FOR EACH ROW {head}, 'D', NULL, {}, {now})",
                image("O")
            ),
        ]
    );
}

/// `products` as SYSCAT.COLUMNS describes it: `attributes` is a CLOB(1M)
/// commented `json`, `category_id` a CHAR(36).
fn db2_products() -> TableInfo {
    let d = &Db2;
    TableInfo {
        schema: Some("RETAIL".into()),
        name: "products".into(),
        columns: vec![
            col("product_id", "INTEGER", d),
            col("category_id", "CHARACTER(36)", d),
            col("name", "VARCHAR(200)", d),
            col("price", "DECIMAL(10,2)", d),
            col("attributes", "JSON CLOB(1048576)", d),
        ],
        key_checked: false,
    }
}

#[test]
fn db2_writes_json_text_into_its_storage_type() {
    let t = db2_products();
    assert_eq!(t.column("attributes").map(|c| c.ty), Some(ColumnType::Json));
    let cols = strings(&["attributes", "category_id", "product_id"]);
    assert_eq!(
        Db2.upsert(&t, &cols, &strings(&["product_id"]), 1),
        "MERGE INTO \"RETAIL\".\"products\" AS T USING (VALUES (CAST(? AS CLOB(1048576)), \
         CAST(? AS CHARACTER(36)), CAST(? AS INTEGER))) AS S (\"attributes\", \"category_id\", \"product_id\") \
         ON T.\"product_id\" = S.\"product_id\" \
         WHEN MATCHED THEN UPDATE SET \"attributes\" = S.\"attributes\", \"category_id\" = S.\"category_id\" \
         WHEN NOT MATCHED THEN INSERT (\"attributes\", \"category_id\", \"product_id\") \
         VALUES (S.\"attributes\", S.\"category_id\", S.\"product_id\")"
    );
    assert_eq!(
        Db2.param_text(ColumnType::Json, &json!({"b": 1, "a": [true]})),
        Some("{\"a\":[true],\"b\":1}".into())
    );
}

#[test]
fn db2_upserts_with_merge_and_casts_every_parameter() {
    let t = db2_orders();
    let cols = strings(&["customer_id", "order_id", "status", "total"]);
    assert_eq!(
        Db2.upsert(&t, &cols, &strings(&["order_id"]), 1),
        "MERGE INTO \"RETAIL\".\"orders\" AS T USING (VALUES (CAST(? AS INTEGER), CAST(? AS BIGINT), \
         CAST(? AS VARCHAR(20)), CAST(? AS DECIMAL(12,2)))) AS S (\"customer_id\", \"order_id\", \"status\", \"total\") \
         ON T.\"order_id\" = S.\"order_id\" \
         WHEN MATCHED THEN UPDATE SET \"customer_id\" = S.\"customer_id\", \"status\" = S.\"status\", \"total\" = S.\"total\" \
         WHEN NOT MATCHED THEN INSERT (\"customer_id\", \"order_id\", \"status\", \"total\") \
         VALUES (S.\"customer_id\", S.\"order_id\", S.\"status\", S.\"total\")"
    );
    let k = db2_store_order_numbers();
    let key = strings(&["store_id", "order_no"]);
    assert_eq!(
        Db2.upsert(&k, &strings(&["order_no", "store_id"]), &key, 1),
        "MERGE INTO \"store_order_numbers\" AS T USING (VALUES (CAST(? AS INTEGER), CAST(? AS INTEGER))) \
         AS S (\"order_no\", \"store_id\") ON T.\"store_id\" = S.\"store_id\" AND T.\"order_no\" = S.\"order_no\" \
         WHEN NOT MATCHED THEN INSERT (\"order_no\", \"store_id\") VALUES (S.\"order_no\", S.\"store_id\")"
    );
    assert_eq!(
        Db2.delete(&k, &key, 1),
        "DELETE FROM \"store_order_numbers\" WHERE \"store_id\" = CAST(? AS INTEGER) AND \"order_no\" = CAST(? AS INTEGER)"
    );
}

#[test]
fn db2_pages_with_fetch_first_and_a_spelled_out_keyset_condition() {
    let k = db2_store_order_numbers();
    let key = strings(&["store_id", "order_no"]);
    let (cond, params) = after_condition(&Db2, &k, &key, &[Some("3".into()), Some("17".into())]);
    assert_eq!(
        cond,
        "(\"store_id\" > CAST(? AS INTEGER)) OR (\"store_id\" = CAST(? AS INTEGER) AND \"order_no\" > CAST(? AS INTEGER))"
    );
    assert_eq!(
        params,
        vec![Some("3".into()), Some("3".into()), Some("17".into())]
    );
    assert_eq!(
        Db2.limit("SELECT seq FROM j WHERE seq > ? ORDER BY seq", 500),
        "SELECT seq FROM j WHERE seq > ? ORDER BY seq FETCH FIRST 500 ROWS ONLY"
    );
}

#[test]
fn db2_reads_its_clock_from_sysdummy1_the_others_without_a_table() {
    assert_eq!(
        Db2.clock_query(),
        format!("SELECT {} FROM SYSIBM.SYSDUMMY1", Db2.now_ms())
    );
    assert_eq!(Sqlite.clock_query(), format!("SELECT {}", Sqlite.now_ms()));
}

#[test]
fn sqlite_matches_a_uuid_key_whatever_its_case_once_setup_made_the_index() {
    let mut t = TableInfo {
        schema: None,
        name: "categories".into(),
        columns: vec![col("id", "UUID", &Sqlite), col("name", "TEXT", &Sqlite)],
        key_checked: false,
    };
    let (cols, key) = (strings(&["id", "name"]), strings(&["id"]));
    let index = Sqlite.key_check(&t, &key).unwrap();
    assert_eq!(
        index.create.as_deref(),
        Some("CREATE UNIQUE INDEX IF NOT EXISTS \"categories_id_nocase\" ON \"categories\" (\"id\" COLLATE NOCASE)")
    );
    // Until the index is there, the exact key as before.
    assert!(Sqlite
        .upsert(&t, &cols, &key, 1)
        .contains("ON CONFLICT (\"id\") DO UPDATE"));
    t.key_checked = true;
    assert!(Sqlite
        .upsert(&t, &cols, &key, 1)
        .contains("ON CONFLICT (\"id\" COLLATE NOCASE) DO UPDATE"));
    assert_eq!(
        Sqlite.delete(&t, &key, 1),
        "DELETE FROM \"categories\" WHERE \"id\" = ? COLLATE NOCASE"
    );
    // A text key, or another database, needs nothing.
    t.columns[0] = col("id", "TEXT", &Sqlite);
    assert!(Sqlite.key_check(&t, &key).is_none());
    assert!(Postgres.key_check(&t, &key).is_none());
}

#[test]
fn every_session_waits_for_a_lock_a_minute_at_most() {
    // DB2 LUW: SET CURRENT LOCK TIMEOUT (its default LOCKTIMEOUT is -1,
    // for ever); PostgreSQL's lock_timeout; InnoDB's lock wait timeout.
    assert_eq!(
        Db2.session_setup(),
        strings(&["SET CURRENT LOCK TIMEOUT 60"])
    );
    assert!(Postgres
        .session_setup()
        .contains(&"SET lock_timeout = '60s'".to_string()));
    assert!(MariaDb
        .session_setup()
        .contains(&"SET SESSION innodb_lock_wait_timeout = 60".to_string()));
}

#[test]
fn parameters_take_each_databases_forms() {
    let ts = json!("2024-05-01T08:00:00.5Z");
    assert_eq!(
        Db2.param_text(ColumnType::TimestampTz, &ts).as_deref(),
        Some("2024-05-01 08:00:00.500000")
    );
    assert_eq!(
        Db2.param_text(ColumnType::Bool, &json!(true)).as_deref(),
        Some("1")
    );
    assert_eq!(
        Postgres
            .param_text(ColumnType::Bool, &json!(false))
            .as_deref(),
        Some("false")
    );
    assert_eq!(
        Sqlite
            .param_text(ColumnType::Json, &json!({"b": 1, "a": [true]}))
            .as_deref(),
        Some("{\"a\":[true],\"b\":1}")
    );
    assert_eq!(MariaDb.param_text(ColumnType::Text, &json!(null)), None);
    // A list into a PostgreSQL array column: its input form.
    assert_eq!(
        Postgres
            .param_text(
                ColumnType::Array,
                &json!(["a", "b \"c\" \\", null, 7, [true, {"k": 1}]])
            )
            .as_deref(),
        Some(r#"{"a","b \"c\" \\",NULL,"7",{"true","{\"k\":1}"}}"#)
    );
    for other in [ColumnType::Json, ColumnType::Text] {
        assert_eq!(
            Postgres.param_text(other, &json!(["a"])).as_deref(),
            Some(r#"["a"]"#)
        );
    }
    assert_eq!(Postgres.column_type("text[]"), ColumnType::Array);
    // A PostgreSQL `timestamp` written into a MariaDB DATETIME comes back
    // in the same form (before, with a `Z` the store's value lacked: every
    // such write echoed as a change).
    let from_pg =
        connector_core::column_type::text_to_json(ColumnType::Timestamp, "2024-01-02 03:04:05.25");
    let bound = MariaDb
        .param_text(ColumnType::TimestampTz, &from_pg)
        .unwrap();
    assert_eq!(
        connector_core::column_type::normalize(ColumnType::TimestampTz, json!(bound)),
        from_pg
    );
    // DB2's DECFLOAT holds 34 digits: exact.
    assert_eq!(Db2.column_type("DECFLOAT"), ColumnType::Decimal);
}

#[test]
fn the_other_dialects_upsert_their_own_way() {
    let t = TableInfo {
        schema: None,
        name: "orders".into(),
        columns: vec![
            col("order_id", "bigint", &Sqlite),
            col("status", "text", &Sqlite),
        ],
        key_checked: false,
    };
    let cols = strings(&["order_id", "status"]);
    let key = strings(&["order_id"]);
    assert_eq!(
        Sqlite.upsert(&t, &cols, &key, 1),
        "INSERT INTO \"orders\" (\"order_id\", \"status\") VALUES (?, ?) ON CONFLICT (\"order_id\") \
         DO UPDATE SET \"status\" = excluded.\"status\""
    );
    assert_eq!(
        MariaDb.upsert(&t, &cols, &key, 1),
        "INSERT INTO `orders` (`order_id`, `status`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `status` = VALUES(`status`)"
    );
    assert_eq!(
        MariaDb.upsert(&t, &key, &key, 1),
        "INSERT INTO `orders` (`order_id`) VALUES (?) ON DUPLICATE KEY UPDATE `order_id` = `order_id`"
    );
    // With a NOT NULL key that is not AUTO_INCREMENT (the check passed),
    // a clash on another unique index is refused, not written over.
    let mut checked = t.clone();
    checked.key_checked = true;
    assert_eq!(
        MariaDb.upsert(&checked, &cols, &key, 1),
        "INSERT INTO `orders` (`order_id`, `status`) VALUES (?, ?) ON DUPLICATE KEY UPDATE \
         `order_id` = IF(`order_id` <=> VALUES(`order_id`), `order_id`, NULL), `status` = VALUES(`status`)"
    );
    let (sql, params) = MariaDb.key_check(&t, &key).unwrap().passes;
    assert!(
        sql.contains("is_nullable = 'YES' OR extra LIKE '%auto_increment%'"),
        "{sql}"
    );
    assert_eq!(params, strings(&["orders", "order_id"]));
    assert_eq!(
        Sqlite.upsert(&t, &cols, &key, 2),
        "INSERT INTO \"orders\" (\"order_id\", \"status\") VALUES (?, ?), (?, ?) ON CONFLICT (\"order_id\") \
         DO UPDATE SET \"status\" = excluded.\"status\""
    );
    assert_eq!(
        Sqlite.delete(&t, &key, 2),
        "DELETE FROM \"orders\" WHERE (\"order_id\" = ?) OR (\"order_id\" = ?)"
    );
    assert_eq!(Sqlite.rows_per_statement(5), 500);
    assert_eq!(MariaDb.rows_per_statement(5), 1);
    assert_eq!(MariaDb.column_type("tinyint(1)"), ColumnType::Bool);
    assert_eq!(MariaDb.column_type("datetime(6)"), ColumnType::TimestampTz);
    assert_eq!(
        Postgres.column_type("timestamp without time zone"),
        ColumnType::Timestamp
    );
    assert_eq!(
        Postgres.column_type("timestamp with time zone"),
        ColumnType::TimestampTz
    );
}

#[test]
fn dialects_are_detected_from_driver_and_dbms_names() {
    for (name, want) in [
        ("IBM DB2 ODBC DRIVER", DialectKind::Db2),
        ("DB2/LINUXX8664", DialectKind::Db2),
        ("PostgreSQL Unicode", DialectKind::Postgres),
        ("SQLite3", DialectKind::Sqlite),
        ("MariaDB Unicode", DialectKind::MariaDb),
        ("MySQL ODBC 8.0 Driver", DialectKind::MariaDb),
    ] {
        assert_eq!(DialectKind::detect(name), Some(want), "{name}");
    }
    assert_eq!(DialectKind::detect("Oracle 19"), None);
    assert!("informix".parse::<DialectKind>().is_err());
}

#[test]
fn sqlite_before_3_32_takes_999_parameters_a_statement() {
    use super::sqlite::Sqlite;
    assert_eq!(Sqlite.max_parameters("3.26.0"), 999);
    assert_eq!(Sqlite.max_parameters("3.40.1"), 32_766);
    assert_eq!(Sqlite.max_parameters("3.32.0"), 32_766);
}
