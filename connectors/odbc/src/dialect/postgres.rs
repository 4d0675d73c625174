//! PostgreSQL (through psqlODBC): the catalog's `format_type`, one plpgsql
//! trigger function writing `row_to_json` images, `ON CONFLICT` upserts with
//! every parameter cast to its column's type (psqlODBC sends text).

use connector_core::column_type::pg_base_type;
use connector_core::ColumnType;

use super::sqlite::on_conflict;
use super::{generic_column_type, Dialect, TriggerSpec};
use crate::catalog::{Column, TableInfo};

pub struct Postgres;

/// The trigger function's own settings while it builds an image: the
/// application's session may run with other styles (`IntervalStyle =
/// postgres_verbose` gave `@ 3 hours`; `extra_float_digits = 0` cut a
/// float to 15 digits), and the image must read as the copy and the
/// native provider read the same value.
const IMAGE_STYLES: &str = "SET IntervalStyle = 'iso_8601' SET extra_float_digits = 3 \
     SET DateStyle = 'ISO, YMD' SET TimeZone = 'UTC'";

impl Dialect for Postgres {
    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    fn session_setup(&self) -> Vec<String> {
        vec![
            "SET TimeZone = 'UTC'".into(),
            "SET DateStyle = 'ISO'".into(),
            "SET extra_float_digits = 3".into(),
            // The native provider's forms (`P1DT2H`), so the copy, the
            // journal and the stream of another PostgreSQL agree.
            "SET IntervalStyle = 'iso_8601'".into(),
            // A lock held for ever ends the wait (55P03, retried).
            "SET lock_timeout = '60s'".into(),
        ]
    }

    fn columns_query(&self, schema: Option<&str>, table: &str) -> (String, Vec<String>) {
        let sql = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ? AND c.relname = ? AND c.relkind IN ('r', 'p') \
               AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum";
        (
            sql.into(),
            vec![schema.unwrap_or("public").into(), table.into()],
        )
    }

    fn column_type(&self, sql_type: &str) -> ColumnType {
        if sql_type.ends_with("[]") {
            ColumnType::Array
        } else if sql_type.starts_with("timestamp") && !sql_type.contains("with time zone") {
            ColumnType::Timestamp
        } else {
            generic_column_type(sql_type)
        }
    }

    fn create_journal(&self, journal: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {journal} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
             tbl text NOT NULL, op char(1) NOT NULL, new_image text, old_image text, changed_ms bigint NOT NULL)"
        )]
    }

    /// One function for every table: it names no column, so a migration
    /// that drops or renames one never breaks the application's writes.
    /// `row_to_json` embeds a json/jsonb value as JSON where the copy reads
    /// its text (a jsonb string `"42"` came through as the number 42): the
    /// trigger passes the names of those columns after the table's
    /// (`TG_ARGV[1:]`), and the image carries their text instead, staying
    /// in `json` (a jsonb cast would refuse a json value jsonb cannot hold,
    /// failing the application's write). The journal is named with its
    /// schema: PL/pgSQL resolves names when the trigger fires, under the
    /// application's `search_path`.
    fn create_triggers(&self, spec: &TriggerSpec<'_>) -> Vec<String> {
        let function = self.qualified(
            spec.table.schema.as_deref(),
            &format!("{}_row", spec.journal_name),
        );
        let truncate = self.qualified(
            spec.table.schema.as_deref(),
            &format!("{}_truncate", spec.journal_name),
        );
        let image = |row: &str| {
            format!(
                "CASE WHEN TG_NARGS > 1 THEN (SELECT json_object_agg(j.key, \
                 CASE WHEN j.key = ANY (TG_ARGV[1:]) AND json_typeof(j.value) <> 'null' \
                 THEN to_json(j.value::text) ELSE j.value END) \
                 FROM json_each(row_to_json({row})) AS j)::text \
                 ELSE row_to_json({row})::text END"
            )
        };
        let mut args = vec![super::literal(&spec.table.name)];
        args.extend(
            spec.table
                .columns
                .iter()
                .filter(|c| matches!(c.sql_type.as_str(), "json" | "jsonb"))
                .map(|c| super::literal(&c.name)),
        );
        vec![
            format!(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql {styles} AS $fn$ BEGIN \
                 INSERT INTO {journal} ({cols}) VALUES (TG_ARGV[0], left(TG_OP, 1), \
                 CASE WHEN TG_OP <> 'DELETE' THEN {new} END, \
                 CASE WHEN TG_OP <> 'INSERT' THEN {old} END, {now}); \
                 RETURN NULL; END $fn$",
                journal = spec.journal,
                cols = TriggerSpec::COLUMNS,
                now = self.now_ms(),
                new = image("NEW"),
                old = image("OLD"),
                styles = IMAGE_STYLES,
            ),
            // The mapped table's name as the trigger's argument, not
            // TG_TABLE_NAME: a partitioned table's rows fire the trigger
            // under their partition's name, which no mapping knows.
            format!(
                "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} \
                 FOR EACH ROW EXECUTE FUNCTION {function}({})",
                self.quote(spec.name),
                spec.table.qualified(self),
                args.join(", ")
            ),
            // TRUNCATE fires no row trigger: one statement row, `T`.
            format!(
                "CREATE OR REPLACE FUNCTION {truncate}() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN \
                 INSERT INTO {journal} ({cols}) VALUES (TG_ARGV[0], 'T', NULL, NULL, {now}); \
                 RETURN NULL; END $fn$",
                journal = spec.journal,
                cols = TriggerSpec::COLUMNS,
                now = self.now_ms(),
            ),
            format!(
                "CREATE OR REPLACE TRIGGER {} AFTER TRUNCATE ON {} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {truncate}({})",
                self.quote(&format!("{}_truncate", spec.name)),
                spec.table.qualified(self),
                super::literal(&spec.table.name)
            ),
        ]
    }

    fn current_schema_query(&self) -> Option<&'static str> {
        Some("SELECT current_schema()")
    }

    fn setup_privileges(&self) -> &'static str {
        ", CREATE FUNCTION"
    }

    fn now_ms(&self) -> &'static str {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    }

    /// bytea as its text (`\x0a0b`, as the journal's `row_to_json` has it),
    /// an array as a JSON list (as the journal has it too):
    /// psqlODBC hands the raw column to a text buffer without the `\x`, and
    /// `0a0b` written back into a bytea is four ASCII bytes.
    fn read_value(&self, column: &Column, expr: String) -> String {
        if pg_base_type(&column.sql_type) == "bytea" {
            format!("CAST({expr} AS text)")
        } else if column.ty == ColumnType::Array {
            // A list, as the journal's `row_to_json` gives it.
            format!("CAST(to_json({expr}) AS text)")
        } else if matches!(
            column.ty,
            ColumnType::Timestamp | ColumnType::TimestampTz | ColumnType::Date
        ) {
            // As text: psqlODBC turns `infinity` into 9999-12-31 23:59:59
            // where the journal and the native provider say `infinity`.
            format!("CAST({expr} AS text)")
        } else {
            expr
        }
    }

    fn placeholder(&self, column: &Column) -> String {
        format!("CAST(? AS {})", pg_base_type(&column.sql_type))
    }

    fn upsert(&self, table: &TableInfo, columns: &[String], key: &[String], rows: usize) -> String {
        on_conflict(self, table, columns, key, rows)
    }

    /// A list (how the journal's `to_json` gives an array column) goes into
    /// an array column as its input form: `CAST('["a"]' AS text[])` is
    /// refused. Elsewhere (a text column) it stays JSON text.
    fn param_text(&self, ty: ColumnType, v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Array(items) if ty == ColumnType::Array => {
                let mut out = String::new();
                array_literal(items, &mut out);
                Some(out)
            }
            _ => super::generic_param_text(ty, v, false),
        }
    }
}

/// PostgreSQL's array input form: `{1,NULL,"a \"b\"",{2,3}}`; every
/// non-NULL scalar is quoted (the input function reads it by the element
/// type), objects as their JSON text.
fn array_literal(items: &[serde_json::Value], out: &mut String) {
    use serde_json::Value;
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => array_literal(inner, out),
            other => {
                let text = match other {
                    Value::String(s) => s.clone(),
                    Value::Object(_) => connector_core::value::canonical_json(other),
                    scalar => scalar.to_string(),
                };
                out.push('"');
                for ch in text.chars() {
                    if ch == '"' || ch == '\\' {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
}
