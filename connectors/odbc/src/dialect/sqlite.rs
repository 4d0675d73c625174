//! SQLite (through the SQLite ODBC driver): `pragma_table_info`, `json_object`
//! in the triggers, `INSERT … ON CONFLICT DO UPDATE` (SQLite ≥ 3.24).

use connector_core::ColumnType;

use super::{non_key, values_rows, Dialect, KeyCheck, TriggerSpec};
use crate::catalog::{Column, TableInfo};

pub struct Sqlite;

/// `json_object` takes at most 127 arguments in SQLite before 3.48
/// (`SQLITE_MAX_FUNCTION_ARG`; Debian 12 has 3.40): a trigger naming 64
/// columns or more was refused, and setup with it.
const PAIRS_PER_CALL: usize = 63;

/// One JSON object of `key, value` pairs, [`PAIRS_PER_CALL`] to a
/// `json_object` call: each further call's text, without its braces, is
/// joined to the first's (`json_insert` would read a column's name as a
/// path, and `json_patch` drops nulls). A value never ends in `}` (the
/// image's values are text, numbers or null), so `rtrim` takes only the
/// brace.
fn spliced_object(pairs: &[String]) -> String {
    let calls: Vec<String> = pairs
        .chunks(PAIRS_PER_CALL)
        .map(|chunk| format!("json_object({})", chunk.join(", ")))
        .collect();
    match calls.as_slice() {
        [one] => one.clone(),
        _ => format!(
            "'{{' || {} || '}}'",
            calls
                .iter()
                .map(|c| format!("rtrim(ltrim({c}, '{{'), '}}')"))
                .collect::<Vec<_>>()
                .join(" || ',' || ")
        ),
    }
}

impl Dialect for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite"
    }

    fn qualified(&self, _schema: Option<&str>, table: &str) -> String {
        self.quote(table)
    }

    fn columns_query(&self, _schema: Option<&str>, table: &str) -> (String, Vec<String>) {
        (
            "SELECT name, type FROM pragma_table_info(?) ORDER BY cid".into(),
            vec![table.into()],
        )
    }

    fn create_journal(&self, journal: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {journal} (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
             tbl TEXT NOT NULL, op TEXT NOT NULL, new_image TEXT, old_image TEXT, changed_ms INTEGER NOT NULL)"
        )]
    }

    /// A table of more than [`PAIRS_PER_CALL`] columns gets its image
    /// from several `json_object` calls spliced into one object (see there).
    fn create_triggers(&self, spec: &TriggerSpec<'_>) -> Vec<String> {
        let image =
            |row: &str| spliced_object(&spec.pair_list(self, row, |k, v| format!("{k}, {v}")));
        let mut out = Vec::new();
        for (name, event, _, insert) in spec.events(self, "NEW", "OLD", image) {
            out.push(format!("DROP TRIGGER IF EXISTS {name}"));
            out.push(format!(
                "CREATE TRIGGER {name} AFTER {event} ON {} FOR EACH ROW BEGIN {insert}; END",
                spec.table.qualified(self)
            ));
        }
        out
    }

    /// `json_object` refuses a BLOB ("JSON cannot hold BLOB values"), and
    /// a trigger that fails fails the application's own write. Any column
    /// may hold one (SQLite's types are per value): a BLOB enters the image
    /// as PostgreSQL writes a `bytea` as text, `\x` and lowercase hex.
    fn image_value(&self, _column: &Column, expr: String) -> String {
        blob_as_text(&expr)
    }

    fn read_value(&self, _column: &Column, expr: String) -> String {
        blob_as_text(&expr)
    }

    /// `INSERT OR REPLACE`, `REPLACE` and `UPDATE OR REPLACE` delete a
    /// row clashing on a unique index without its delete trigger unless
    /// the application's connection sets `recursive_triggers` (SQLite's
    /// "ON CONFLICT" documentation): named by setup. (A clash on the id
    /// itself is journaled by the new row's insert, of the same document.)
    fn unjournaled_replace_query(
        &self,
        table: &TableInfo,
        key: &[String],
    ) -> Option<(String, Vec<String>)> {
        let mut key: Vec<String> = key.to_vec();
        key.sort();
        Some((
            "SELECT l.name FROM pragma_index_list(?) AS l WHERE l.\"unique\" = 1 \
             AND (SELECT group_concat(name, ',') FROM (SELECT i.name FROM pragma_index_info(l.name) AS i ORDER BY i.name)) <> ?"
                .into(),
            vec![table.name.clone(), key.join(",")],
        ))
    }

    fn now_ms(&self) -> &'static str {
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    }

    fn upsert(&self, table: &TableInfo, columns: &[String], key: &[String], rows: usize) -> String {
        on_conflict(self, table, columns, key, rows)
    }

    /// A UUID key column compares as text in SQLite: `'ABCD-…'` (as .NET
    /// writes GUIDs) is not the store's `'abcd-…'`, and an update from
    /// elsewhere inserted a second row while a delete matched nothing.
    /// With a unique index on the key `COLLATE NOCASE` the upsert's
    /// conflict and the delete match either case (the row keeps its own).
    fn key_check(&self, table: &TableInfo, key: &[String]) -> Option<KeyCheck> {
        if !key.iter().any(|k| is_uuid(table, k)) {
            return None;
        }
        // Named after the key: an index of another key is another name.
        let name = format!("{}_{}_nocase", table.name, key.join("_"));
        let terms = key_terms(self, table, key);
        Some(KeyCheck {
            create: Some(format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({terms})",
                self.quote(&name),
                table.qualified(self),
            )),
            conflicts: Some((
                format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY {terms} HAVING count(*) > 1)",
                    table.qualified(self)
                ),
                Vec::new(),
            )),
            passes: (
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?".into(),
                vec![name],
            ),
        })
    }

    fn key_check_failed(&self) -> &'static str {
        "the table's UUID id is matched as exact text: a row stored upper case gets a second row \
         and keeps its deletes; run `connector setup` (it adds a case-blind unique index)"
    }

    /// A UUID key matched whatever its case, once setup made the index.
    fn key_match(&self, table: &TableInfo, column: &str) -> String {
        let nocase = if table.key_checked && is_uuid(table, column) {
            " COLLATE NOCASE"
        } else {
            ""
        };
        format!(
            "{} = {}{nocase}",
            self.quote(column),
            self.marker(table, column)
        )
    }

    /// The SQLite ODBC driver prepares the statement again for every row of
    /// an array (compiling its triggers each time): many rows per statement
    /// instead, within SQLite's 32,766 parameters.
    fn rows_per_statement(&self, columns: usize) -> usize {
        (30_000 / columns.max(1)).clamp(1, 500)
    }

    fn version_query(&self) -> Option<&'static str> {
        Some("SELECT sqlite_version()")
    }

    /// SQLite before 3.32 allows 999 parameters per statement (32,766
    /// since); too many is "too many SQL variables", a permanent error.
    fn max_parameters(&self, version: &str) -> usize {
        let n: Vec<u32> = version
            .trim()
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        match n[..] {
            [3, minor, ..] if minor < 32 => 999,
            [major, ..] if major < 3 => 999,
            _ => 32_766,
        }
    }
}

fn is_uuid(table: &TableInfo, column: &str) -> bool {
    table
        .column(column)
        .is_some_and(|c| c.ty == ColumnType::Uuid)
}

/// The key's columns as an index or conflict target names them: a UUID
/// one `COLLATE NOCASE`.
fn key_terms(d: &dyn Dialect, table: &TableInfo, key: &[String]) -> String {
    key.iter()
        .map(|k| {
            if is_uuid(table, k) {
                format!("{} COLLATE NOCASE", d.quote(k))
            } else {
                d.quote(k)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A BLOB value as `\x` and lowercase hex; any other value as it is.
fn blob_as_text(expr: &str) -> String {
    format!("CASE WHEN typeof({expr}) = 'blob' THEN '\\x' || lower(hex({expr})) ELSE {expr} END")
}

/// `INSERT … ON CONFLICT (key) DO UPDATE SET c = excluded.c` (SQLite and
/// PostgreSQL share it).
pub(super) fn on_conflict(
    d: &dyn Dialect,
    table: &TableInfo,
    columns: &[String],
    key: &[String],
    rows: usize,
) -> String {
    let cols = columns
        .iter()
        .map(|c| d.quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let values = values_rows(d, table, columns, rows);
    let keys = if table.key_checked {
        key_terms(d, table, key)
    } else {
        key.iter()
            .map(|c| d.quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let updates: Vec<String> = non_key(columns, key)
        .map(|c| format!("{0} = excluded.{0}", d.quote(c)))
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "INSERT INTO {} ({cols}) VALUES {values} ON CONFLICT ({keys}) {action}",
        table.qualified(d)
    )
}
