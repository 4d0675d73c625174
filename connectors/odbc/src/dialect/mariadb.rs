//! MariaDB (through MariaDB Connector/ODBC): backtick identifiers,
//! `information_schema` (a `JSON` column is `LONGTEXT` with a `json_valid`
//! check, `BOOLEAN` is `tinyint(1)`), `JSON_OBJECT` in the triggers,
//! `ON DUPLICATE KEY UPDATE`. Sessions run in UTC and in strict mode, so a
//! value too long for its column is an error, not a silent truncation.
//! Generated columns (VIRTUAL, STORED) are the database's own: not synced
//! (an upsert naming one is refused), as for PostgreSQL.

use connector_core::ColumnType;

use super::{generic_column_type, non_key, values_rows, Dialect, KeyCheck, TriggerSpec};
use crate::catalog::{Column, TableInfo};

pub struct MariaDb;

impl Dialect for MariaDb {
    fn name(&self) -> &'static str {
        "MariaDB"
    }

    fn quote(&self, ident: &str) -> String {
        format!("`{}`", ident.replace('`', "``"))
    }

    fn session_setup(&self) -> Vec<String> {
        vec![
            "SET time_zone = '+00:00'".into(),
            // NO_BACKSLASH_ESCAPES: our literals double quotes only, as
            // standard SQL; a `\` in a name stays itself (the triggers
            // setup creates keep the mode).
            "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_BACKSLASH_ESCAPES'".into(),
            // (The server's default, 50 s, may have been raised.)
            "SET SESSION innodb_lock_wait_timeout = 60".into(),
        ]
    }

    fn key_check(&self, table: &TableInfo, key: &[String]) -> Option<KeyCheck> {
        let (cond, mut params) = match &table.schema {
            Some(s) => ("table_schema = ?", vec![s.clone()]),
            None => ("table_schema = DATABASE()", vec![]),
        };
        params.push(table.name.clone());
        params.extend(key.iter().cloned());
        let marks = vec!["?"; key.len()].join(", ");
        Some(KeyCheck {
            create: None,
            conflicts: None,
            passes: (
                format!(
                    "SELECT count(*) = 0 FROM information_schema.columns WHERE {cond} AND table_name = ? \
                     AND column_name IN ({marks}) AND (is_nullable = 'YES' OR extra LIKE '%auto_increment%')"
                ),
                params,
            ),
        })
    }

    fn key_check_failed(&self) -> &'static str {
        "the id is nullable or AUTO_INCREMENT: ON DUPLICATE KEY fires on any unique index, so a row \
         clashing with another row on some other unique column updates that row"
    }

    fn columns_query(&self, schema: Option<&str>, table: &str) -> (String, Vec<String>) {
        let (cond, mut params) = match schema {
            Some(s) => ("c.table_schema = ?", vec![s.to_string()]),
            None => ("c.table_schema = DATABASE()", vec![]),
        };
        params.push(table.into());
        (
            format!(
                "SELECT c.column_name, CASE WHEN EXISTS (SELECT 1 FROM information_schema.check_constraints k \
                 WHERE k.constraint_schema = c.table_schema AND k.table_name = c.table_name \
                 AND k.constraint_name = c.column_name AND k.check_clause LIKE '%json_valid%') \
                 THEN 'json' ELSE c.column_type END \
                 FROM information_schema.columns c WHERE {cond} AND c.table_name = ? \
                 AND c.extra NOT LIKE '%GENERATED%' \
                 ORDER BY c.ordinal_position"
            ),
            params,
        )
    }

    fn column_type(&self, sql_type: &str) -> ColumnType {
        let t = sql_type.to_ascii_lowercase();
        if t == "tinyint(1)" {
            ColumnType::Bool
        } else if is_binary(&t) {
            ColumnType::Binary
        } else if t.starts_with("bit") {
            ColumnType::Integer
        } else {
            generic_column_type(sql_type)
        }
    }

    /// InnoDB's cascades fire no trigger.
    fn fk_actions_fire_triggers(&self) -> bool {
        false
    }

    /// In utf8mb4 whatever the database's default (latin1 upstream before
    /// 11.6): the triggers run in strict mode, and an image holding a
    /// character the journal cannot store failed the application's write.
    fn create_journal(&self, journal: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {journal} (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 tbl VARCHAR(128) NOT NULL, op CHAR(1) NOT NULL, new_image LONGTEXT, old_image LONGTEXT, \
                 changed_ms BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
        ]
    }

    /// A journal made before it was utf8mb4 is converted.
    fn upgrade_journal(&self, journal: &str) -> Vec<String> {
        vec![format!(
            "ALTER TABLE {journal} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )]
    }

    fn create_triggers(&self, spec: &TriggerSpec<'_>) -> Vec<String> {
        let image = |row: &str| {
            format!(
                "JSON_OBJECT({})",
                spec.pairs(self, row, |k, v| format!("{k}, {v}"))
            )
        };
        spec.events(self, "NEW", "OLD", image)
            .into_iter()
            .map(|(name, event, _, insert)| {
                // A trigger lives in its table's database, named there
                // (unqualified, it is made in the session's default
                // database: refused for a table elsewhere, 1435).
                let name = match &spec.table.schema {
                    Some(schema) => format!("{}.{name}", self.quote(schema)),
                    None => name,
                };
                format!(
                    "CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {} FOR EACH ROW {insert}",
                    spec.table.qualified(self)
                )
            })
            .collect()
    }

    /// A `TIMESTAMP` can render in the writing session's time zone, with no
    /// offset, and would be read as UTC (the application's session need not
    /// be in UTC; seen in the e2e test, though not on every run). Its epoch
    /// value (`UNIX_TIMESTAMP` of a TIMESTAMP column is zone-free) added to
    /// the epoch as a DATETIME is the UTC wall time, whatever the session.
    fn image_value(&self, column: &Column, expr: String) -> String {
        let t = column.sql_type.to_ascii_lowercase();
        if let Some(read) = bytes_or_bits(&t, &expr) {
            return read;
        }
        if t.starts_with("timestamp") {
            // A zero date ('0000-00-00 00:00:00') has no epoch value (NULL,
            // or 0 on older servers): it goes in as it is, as the copy reads it.
            format!(
                "CASE WHEN COALESCE(UNIX_TIMESTAMP({expr}), 0) = 0 THEN {expr} \
                 ELSE TIMESTAMP('1970-01-01') + INTERVAL CAST(UNIX_TIMESTAMP({expr}) * 1000000 AS SIGNED) MICROSECOND END"
            )
        } else {
            expr
        }
    }

    fn read_value(&self, column: &Column, expr: String) -> String {
        bytes_or_bits(&column.sql_type.to_ascii_lowercase(), &expr).unwrap_or(expr)
    }

    /// Bytes are bound as hex (`\x…` text without its prefix); bits as a
    /// number (the text `1` is the byte 0x31 to a BIT column: too long
    /// for BIT(1)).
    fn placeholder(&self, column: &Column) -> String {
        if column.ty == ColumnType::Binary {
            "UNHEX(?)".into()
        } else if column.sql_type.to_ascii_lowercase().starts_with("bit") {
            "CAST(? AS UNSIGNED)".into()
        } else {
            "?".into()
        }
    }

    fn param_text(&self, ty: ColumnType, v: &serde_json::Value) -> Option<String> {
        match (ty, v) {
            (ColumnType::Binary, serde_json::Value::String(s)) => {
                Some(match s.strip_prefix("\\x") {
                    Some(hex) => hex.to_string(),
                    // Text into a binary column: its bytes.
                    None => s.bytes().map(|b| format!("{b:02x}")).collect(),
                })
            }
            _ => super::generic_param_text(ty, v, true),
        }
    }

    fn now_ms(&self) -> &'static str {
        // SYSDATE, not NOW: in a trigger NOW() is the time the statement
        // began, so a row a long UPDATE reached a minute later would carry
        // a time older than changes made elsewhere meanwhile, and lose.
        "CAST(UNIX_TIMESTAMP(SYSDATE(3)) * 1000 AS SIGNED)"
    }

    fn upsert(&self, table: &TableInfo, columns: &[String], key: &[String], rows: usize) -> String {
        let cols = columns
            .iter()
            .map(|c| self.quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let values = values_rows(self, table, columns, rows);
        // ON DUPLICATE KEY fires on any unique index: a row clashing with
        // another row on some other unique column would update that row.
        // Its key is set NULL first, which a NOT NULL key refuses in
        // strict mode (1048, the row's own fault: a dead letter), as
        // PostgreSQL and SQLite refuse the clash; a row found by its own
        // key keeps it. (Assignments run left to right.) Only where the
        // key check passed: a nullable key would take the NULL, and an
        // AUTO_INCREMENT one turns it into 0 without an error.
        let mut updates: Vec<String> = if table.key_checked {
            key.iter()
                .map(|c| format!("{0} = IF({0} <=> VALUES({0}), {0}, NULL)", self.quote(c)))
                .collect()
        } else {
            Vec::new()
        };
        updates.extend(non_key(columns, key).map(|c| format!("{0} = VALUES({0})", self.quote(c))));
        if updates.is_empty() {
            updates = key
                .iter()
                .map(|c| format!("{0} = {0}", self.quote(c)))
                .collect();
        }
        format!(
            "INSERT INTO {} ({cols}) VALUES {values} ON DUPLICATE KEY UPDATE {}",
            table.qualified(self),
            updates.join(", ")
        )
    }
}

/// A binary column's type (`blob`, `varbinary(16)`, `binary(4)`, …).
fn is_binary(t: &str) -> bool {
    t.contains("blob") || t.starts_with("binary") || t.starts_with("varbinary")
}

/// How the image and the copy read bytes and bits, alike: `JSON_OBJECT`
/// put a BLOB's bytes in as characters and a BIT's raw byte unquoted (not
/// JSON); bytes go as PostgreSQL's `\x…` text, bits as their number.
fn bytes_or_bits(t: &str, expr: &str) -> Option<String> {
    if is_binary(t) {
        Some(format!("CONCAT('\\x', LOWER(HEX({expr})))"))
    } else if t.starts_with("bit") {
        Some(format!("({expr} + 0)"))
    } else {
        None
    }
}
