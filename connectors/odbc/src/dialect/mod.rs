//! Everything that differs between the SQL of the databases the ODBC
//! provider speaks to, behind one trait. No SQL outside this module knows
//! which database it runs on.
//!
//! The change journal is the same everywhere: one table (default
//! `connector_journal`) with an ever-increasing `seq`, the table name, the
//! operation (`I`, `U`, `D`), the new and old row images as JSON text and the
//! change time in milliseconds since the Unix epoch (UTC), filled by AFTER
//! INSERT / UPDATE / DELETE row triggers on every mapped table.

mod db2;
mod mariadb;
mod postgres;
mod sqlite;

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use connector_core::column_type::{utc_naive_text, ColumnType};
use connector_core::value::canonical_json;

use crate::catalog::{Column, TableInfo};

pub use db2::Db2;
pub use mariadb::MariaDb;
pub use postgres::Postgres;
pub use sqlite::Sqlite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialectKind {
    Db2,
    Postgres,
    Sqlite,
    MariaDb,
}

impl DialectKind {
    pub fn dialect(self) -> &'static dyn Dialect {
        match self {
            DialectKind::Db2 => &Db2,
            DialectKind::Postgres => &Postgres,
            DialectKind::Sqlite => &Sqlite,
            DialectKind::MariaDb => &MariaDb,
        }
    }

    /// From a driver name, a DSN or the DBMS name the driver reports
    /// (`DB2/LINUXX8664`, `PostgreSQL`, `SQLite`, `MariaDB`, `MySQL`).
    pub fn detect(name: &str) -> Option<DialectKind> {
        let n = name.to_ascii_lowercase();
        if n.contains("db2") {
            Some(DialectKind::Db2)
        } else if n.contains("postgres") || n.contains("psql") {
            Some(DialectKind::Postgres)
        } else if n.contains("sqlite") {
            Some(DialectKind::Sqlite)
        } else if n.contains("mariadb") || n.contains("mysql") {
            Some(DialectKind::MariaDb)
        } else {
            None
        }
    }
}

impl FromStr for DialectKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "db2" => Ok(DialectKind::Db2),
            "postgres" | "postgresql" => Ok(DialectKind::Postgres),
            "sqlite" | "sqlite3" => Ok(DialectKind::Sqlite),
            "mariadb" | "mysql" => Ok(DialectKind::MariaDb),
            _ => Err(format!(
                "unknown ODBC dialect `{s}` (expected db2, postgres, sqlite or mariadb)"
            )),
        }
    }
}

impl fmt::Display for DialectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dialect().name())
    }
}

/// See [`Dialect::key_check`].
pub struct KeyCheck {
    /// DDL `setup` runs for it, if any.
    pub create: Option<String>,
    /// Rows that would make `create` fail (setup then names them and
    /// leaves it out): one row, one count.
    pub conflicts: Option<(String, Vec<String>)>,
    /// Whether the check passes: one row, one count, 0 when it does not.
    pub passes: (String, Vec<String>),
}

/// The journal's triggers for one table.
pub struct TriggerSpec<'a> {
    pub table: &'a TableInfo,
    /// The journal table, qualified and quoted.
    pub journal: &'a str,
    /// The journal table's own name (for names derived from it).
    pub journal_name: &'a str,
    /// Trigger name stem (`connector_<table>`); `_ins`, `_upd`, `_del` follow.
    pub name: &'a str,
}

impl TriggerSpec<'_> {
    /// `(suffix, event, operation code)` of the three row triggers.
    pub const EVENTS: [(&'static str, &'static str, &'static str); 3] = [
        ("ins", "INSERT", "I"),
        ("upd", "UPDATE", "U"),
        ("del", "DELETE", "D"),
    ];

    /// The journal's column list, in the order of the trigger's VALUES.
    pub const COLUMNS: &'static str = "tbl, op, new_image, old_image, changed_ms";

    /// The row image's `f(key literal, row.column)` pairs, comma-separated.
    pub fn pairs(&self, d: &dyn Dialect, row: &str, f: impl Fn(&str, &str) -> String) -> String {
        self.pair_list(d, row, f).join(", ")
    }

    /// The row image's `f(key literal, row.column)` pairs.
    pub fn pair_list(
        &self,
        d: &dyn Dialect,
        row: &str,
        f: impl Fn(&str, &str) -> String,
    ) -> Vec<String> {
        self.table
            .columns
            .iter()
            .map(|c| {
                let value = d.image_value(c, format!("{row}.{}", d.quote(&c.name)));
                f(&literal(&c.name), &value)
            })
            .collect()
    }

    /// Per event: the quoted trigger name, the event, the operation code and
    /// the journal INSERT, with images built by `image(new)` / `image(old)`.
    pub fn events(
        &self,
        d: &dyn Dialect,
        new: &str,
        old: &str,
        image: impl Fn(&str) -> String,
    ) -> Vec<(String, &'static str, &'static str, String)> {
        Self::EVENTS
            .iter()
            .map(|(suffix, event, op)| {
                let n = if *op == "D" {
                    "NULL".into()
                } else {
                    image(new)
                };
                let o = if *op == "I" {
                    "NULL".into()
                } else {
                    image(old)
                };
                let insert = format!(
                    "INSERT INTO {} ({}) VALUES ({}, '{op}', {n}, {o}, {})",
                    self.journal,
                    Self::COLUMNS,
                    literal(&self.table.name),
                    d.now_ms()
                );
                (
                    d.quote(&format!("{}_{suffix}", self.name)),
                    *event,
                    *op,
                    insert,
                )
            })
            .collect()
    }
}

pub trait Dialect: Send + Sync {
    /// The product name, as in messages ("DB2", "SQLite", …).
    fn name(&self) -> &'static str;

    /// Quotes an identifier, so a name from YAML can never inject SQL.
    fn quote(&self, ident: &str) -> String {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }

    fn qualified(&self, schema: Option<&str>, table: &str) -> String {
        match schema {
            Some(s) => format!("{}.{}", self.quote(s), self.quote(table)),
            None => self.quote(table),
        }
    }

    /// Statements run on every new connection (time zone, strict modes).
    fn session_setup(&self) -> Vec<String> {
        Vec::new()
    }

    /// A query with one row per column of `table`, in column order: the
    /// column name and its SQL type as text. `?` parameters are the values.
    fn columns_query(&self, schema: Option<&str>, table: &str) -> (String, Vec<String>);

    /// A query of the schema an unqualified name is created in, where
    /// triggers must name the journal with it (their names resolve when
    /// they fire, under the writing application's settings).
    fn current_schema_query(&self) -> Option<&'static str> {
        None
    }

    /// A check of the id's columns a sink makes when it opens, where the
    /// dialect's writes depend on it ([`TableInfo::key_checked`]): SQLite
    /// compares a UUID key as exact text while the store lower-cases UUIDs
    /// (a column declared `UUID` holding upper-case text, as .NET writes
    /// GUIDs), and needs a case-blind unique index, which setup makes;
    /// MariaDB's upsert guard needs a NOT NULL key without AUTO_INCREMENT.
    /// `None`: nothing to check.
    fn key_check(&self, _table: &TableInfo, _key: &[String]) -> Option<KeyCheck> {
        None
    }

    /// What a sink warns when [`Dialect::key_check`] does not pass.
    fn key_check_failed(&self) -> &'static str {
        "the table's id failed the dialect's check"
    }

    /// Whether the rows a foreign key action changes (`ON DELETE CASCADE`)
    /// fire their table's triggers; where not, setup journals them from
    /// the referred table's ([`crate::fk_actions`]).
    fn fk_actions_fire_triggers(&self) -> bool {
        true
    }

    /// A query naming the unique indexes of `table` other than its id's
    /// (one row, its name, each) where a row another row replaces for
    /// clashing on one is deleted without a delete trigger, so unjournaled;
    /// `None` where the database fires the trigger.
    fn unjournaled_replace_query(
        &self,
        _table: &TableInfo,
        _key: &[String],
    ) -> Option<(String, Vec<String>)> {
        None
    }

    /// A query naming (name, type) the columns of `table` that
    /// `columns_query` leaves out because the journal cannot carry them;
    /// `None` where none are.
    fn uncarried_columns_query(
        &self,
        _schema: Option<&str>,
        _table: &str,
    ) -> Option<(String, Vec<String>)> {
        None
    }

    /// The logical type of a column from the type text `columns_query` gave.
    fn column_type(&self, sql_type: &str) -> ColumnType {
        generic_column_type(sql_type)
    }

    /// Privileges `setup` needs beyond CREATE TABLE and CREATE TRIGGER
    /// (", CREATE FUNCTION" where triggers call a function), for its notes.
    fn setup_privileges(&self) -> &'static str {
        ""
    }

    /// DDL creating the journal table (run only when it does not exist).
    fn create_journal(&self, journal: &str) -> Vec<String>;

    /// Statements that bring a journal an earlier version made up to date
    /// (run by every setup where the journal exists).
    fn upgrade_journal(&self, _journal: &str) -> Vec<String> {
        Vec::new()
    }

    /// DDL (re)creating the three row triggers of a table; running it again
    /// replaces them, so a changed column list is picked up.
    fn create_triggers(&self, spec: &TriggerSpec<'_>) -> Vec<String>;

    /// The expression a trigger's row image takes for `column`'s value
    /// `expr` (`NEW.col`): as it is, unless the database renders the type in
    /// a form the decoder cannot read as it means it.
    fn image_value(&self, _column: &Column, expr: String) -> String {
        expr
    }

    /// A column's value as the copy selects it (`expr`: the quoted column):
    /// the same form the trigger's image gives ([`Dialect::image_value`]).
    fn read_value(&self, _column: &Column, expr: String) -> String {
        expr
    }

    /// An expression for the current time in milliseconds since the Unix
    /// epoch, UTC (an integer).
    fn now_ms(&self) -> &'static str;

    /// A query of one row and one column: [`Dialect::now_ms`].
    fn clock_query(&self) -> String {
        format!("SELECT {}", self.now_ms())
    }

    /// `sql` limited to `n` rows.
    fn limit(&self, sql: &str, n: usize) -> String {
        format!("{sql} LIMIT {n}")
    }

    /// Insert-or-update of `rows` rows of `columns` (key columns included)
    /// matching on `key`: one `?` per column in `columns` order, row after row.
    fn upsert(&self, table: &TableInfo, columns: &[String], key: &[String], rows: usize) -> String;

    /// How many rows one statement should carry. 1 (the default): one row
    /// per statement, executed with array parameters. More: for drivers that
    /// prepare the statement again for every array row (the SQLite ODBC
    /// driver), several rows in one statement's VALUES list instead.
    fn rows_per_statement(&self, _columns: usize) -> usize {
        1
    }

    /// A query of the database's version, where the number of parameters a
    /// statement may carry depends on it ([`Dialect::max_parameters`]).
    fn version_query(&self) -> Option<&'static str> {
        None
    }

    /// Parameters one statement may carry, for the version the
    /// [`Dialect::version_query`] returned.
    fn max_parameters(&self, _version: &str) -> usize {
        usize::MAX
    }

    /// The parameter marker for a value of `column` (with a cast where the
    /// database cannot infer a text parameter's type).
    fn placeholder(&self, _column: &Column) -> String {
        "?".into()
    }

    /// One key column's condition in a delete: `k = ?`.
    fn key_match(&self, table: &TableInfo, column: &str) -> String {
        format!("{} = {}", self.quote(column), self.marker(table, column))
    }

    /// Delete of `rows` rows by key, one `?` per key column, row after row.
    fn delete(&self, table: &TableInfo, key: &[String], rows: usize) -> String {
        let one = key
            .iter()
            .map(|k| self.key_match(table, k))
            .collect::<Vec<_>>()
            .join(" AND ");
        let cond = if rows == 1 {
            one
        } else {
            vec![format!("({one})"); rows].join(" OR ")
        };
        format!(
            "DELETE FROM {} WHERE {cond}",
            self.qualified(table.schema.as_deref(), &table.name)
        )
    }

    /// The placeholder of a column of `table` by name.
    fn marker(&self, table: &TableInfo, column: &str) -> String {
        table
            .column(column)
            .map(|c| self.placeholder(c))
            .unwrap_or_else(|| "?".into())
    }

    /// A JSON value as the text bound to a `?` of a column of type `ty`
    /// (`None` is SQL NULL).
    fn param_text(&self, ty: ColumnType, v: &Value) -> Option<String> {
        generic_param_text(ty, v, true)
    }
}

/// Type names common to every SQL database.
pub fn generic_column_type(sql_type: &str) -> ColumnType {
    let t = sql_type.trim().to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or("");
    match base {
        "bool" | "boolean" => ColumnType::Bool,
        "int" | "int2" | "int4" | "int8" | "integer" | "smallint" | "bigint" | "mediumint"
        | "tinyint" | "serial" | "bigserial" => ColumnType::Integer,
        // DB2's DECFLOAT(34) holds 34 digits (money): exact, not a double.
        "numeric" | "decimal" | "dec" | "number" | "decfloat" => ColumnType::Decimal,
        "real" | "float" | "float4" | "float8" | "double" => ColumnType::Float,
        "json" | "jsonb" => ColumnType::Json,
        "timestamptz" | "datetime" => ColumnType::TimestampTz,
        "timestamp" if t.contains("with time zone") => ColumnType::TimestampTz,
        // A TIMESTAMP column of a database without zones holds UTC.
        "timestamp" => ColumnType::TimestampTz,
        "date" => ColumnType::Date,
        "uuid" | "uniqueidentifier" => ColumnType::Uuid,
        _ => ColumnType::Text,
    }
}

/// The usual parameter text: booleans as `1`/`0` (or `true`/`false`),
/// timestamps as UTC `YYYY-MM-DD HH:MM:SS.ffffff`, JSON as canonical JSON
/// text, numbers and strings as they are.
pub fn generic_param_text(ty: ColumnType, v: &Value, bool_as_int: bool) -> Option<String> {
    match v {
        Value::Null => None,
        _ if ty == ColumnType::Json => Some(canonical_json(v)),
        Value::Bool(b) => Some(match (bool_as_int, b) {
            (true, true) => "1".into(),
            (true, false) => "0".into(),
            (false, b) => b.to_string(),
        }),
        Value::String(s) if ty == ColumnType::TimestampTz => {
            Some(utc_naive_text(s).unwrap_or_else(|| s.clone()))
        }
        // A timestamp (`to_iso_string` of this column) back as its millis.
        Value::String(s) if ty == ColumnType::Integer => Some(
            connector_core::mapping::transform::iso_to_millis(s)
                .map_or_else(|| s.clone(), |ms| ms.to_string()),
        ),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => Some(canonical_json(v)),
    }
}

/// `(m, m), (m, m)`: `rows` rows of the columns' parameter markers.
pub fn values_rows(d: &dyn Dialect, table: &TableInfo, columns: &[String], rows: usize) -> String {
    let one = columns
        .iter()
        .map(|c| d.marker(table, c))
        .collect::<Vec<_>>()
        .join(", ");
    vec![format!("({one})"); rows].join(", ")
}

/// `'text'` with quotes doubled (journal table names inside triggers).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The `UPDATE SET` list shared by the upserts: every non-key column.
pub fn non_key<'a>(columns: &'a [String], key: &'a [String]) -> impl Iterator<Item = &'a String> {
    columns.iter().filter(move |c| !key.contains(c))
}

#[cfg(test)]
mod tests;
