//! IBM DB2 for Linux, UNIX and Windows 11.5 (through the IBM DB2 ODBC/CLI
//! driver): `SYSCAT.COLUMNS`, an identity column for the journal's sequence,
//! `REFERENCING NEW AS N OLD AS O FOR EACH ROW` triggers writing
//! `JSON_OBJECT` images, `MERGE INTO … USING (VALUES …)` upserts with every
//! parameter cast to its column's type, `FETCH FIRST n ROWS ONLY`.
//!
//! DB2 has no JSON column type: a column whose comment is `json` (`COMMENT
//! ON COLUMN t.c IS 'json'`) holds JSON text and is read and written as JSON.
//!
//! Identifiers are quoted exactly as the mapping writes them: a table that
//! was created unquoted is upper case in DB2 (`STORES`), and the mapping's
//! per-provider names say so.
//!
//! The journal's identity uses `CACHE 50 ORDER`: without `ORDER` members of
//! a pureScale cluster hand out values out of order; with `NO CACHE` (as
//! first written) every journaled row cost a catalog update and a forced
//! log write inside the application's transaction. Cached values lost on a
//! restart are gaps, as are transactions that commit out of order or roll
//! back: the poller reads them until they expire ([`crate::journal`]).
//! Generated expression columns (and ROW CHANGE TIMESTAMP ones) are the
//! database's own and not synced; identity columns are.

use connector_core::ColumnType;

use super::{generic_column_type, non_key, values_rows, Dialect, TriggerSpec};
use crate::catalog::{Column, TableInfo};

pub struct Db2;

/// The columns whose values DB2's `JSON_OBJECT` cannot carry.
const UNCARRIED: &str =
    "TYPENAME IN ('BLOB', 'BINARY', 'VARBINARY', 'DBCLOB', 'XML', 'LONG VARGRAPHIC') \
     OR (CODEPAGE = 0 AND TYPENAME IN ('CHARACTER', 'VARCHAR', 'LONG VARCHAR'))";

/// `SYSCAT.COLUMNS`' condition for one table, and its parameters.
fn where_table(schema: Option<&str>, table: &str) -> (String, Vec<String>) {
    let (cond, mut params) = match schema {
        Some(s) => ("TABSCHEMA = ?", vec![s.to_string()]),
        None => ("TABSCHEMA = CURRENT SCHEMA", vec![]),
    };
    params.push(table.into());
    (format!("{cond} AND TABNAME = ?"), params)
}

impl Dialect for Db2 {
    fn name(&self) -> &'static str {
        "DB2"
    }

    /// DB2's lock waits last for ever by default (LOCKTIMEOUT -1): a
    /// session of ours waits 60 s at most (SQL0911N reason 68, retried).
    fn session_setup(&self) -> Vec<String> {
        vec!["SET CURRENT LOCK TIMEOUT 60".into()]
    }

    /// Columns of a type `JSON_OBJECT` refuses (SQLSTATE 42815: binary
    /// strings, FOR BIT DATA, DBCLOB, XML) or reads as BSON (VARBINARY,
    /// BLOB: an application's write of ordinary bytes then fails in our
    /// trigger) are left out of the catalog: not journaled, copied or
    /// written; setup names them ([`Dialect::uncarried_columns_query`]).
    fn columns_query(&self, schema: Option<&str>, table: &str) -> (String, Vec<String>) {
        let (cond, params) = where_table(schema, table);
        (
            format!(
                "SELECT COLNAME, CASE \
                 WHEN LOWER(COALESCE(REMARKS, '')) = 'json' THEN 'JSON ' || TYPENAME || '(' || LENGTH || ')' \
                 WHEN TYPENAME = 'DECIMAL' THEN 'DECIMAL(' || LENGTH || ',' || SCALE || ')' \
                 WHEN TYPENAME IN ('VARCHAR', 'CHARACTER', 'VARGRAPHIC', 'GRAPHIC', 'CLOB') \
                 THEN TYPENAME || '(' || LENGTH || ')' \
                 ELSE TYPENAME END \
                 FROM SYSCAT.COLUMNS WHERE {cond} AND NOT ({UNCARRIED}) \
                 AND NOT (GENERATED = 'A' AND IDENTITY = 'N') ORDER BY COLNO"
            ),
            params,
        )
    }

    fn uncarried_columns_query(
        &self,
        schema: Option<&str>,
        table: &str,
    ) -> Option<(String, Vec<String>)> {
        let (cond, params) = where_table(schema, table);
        Some((
            format!(
                "SELECT COLNAME, CASE WHEN CODEPAGE = 0 AND TYPENAME IN ('CHARACTER', 'VARCHAR', 'LONG VARCHAR') \
                 THEN TYPENAME || ' FOR BIT DATA' ELSE TYPENAME END \
                 FROM SYSCAT.COLUMNS WHERE {cond} AND ({UNCARRIED}) ORDER BY COLNO"
            ),
            params,
        ))
    }

    /// A graphic string enters `JSON_OBJECT` as a character string (42815
    /// otherwise; a Unicode database converts it without loss).
    /// GRAPHIC as VARCHAR (refused by `JSON_OBJECT`), DECFLOAT as its
    /// text (`JSON_OBJECT` refuses NaN and Infinity with 22023, failing the
    /// application's write), TIME in the `hh:mm:ss` form the copy reads
    /// (the image's ISO form is `hh.mm.ss`).
    fn image_value(&self, column: &Column, expr: String) -> String {
        let t = column.sql_type.as_str();
        if t.starts_with("GRAPHIC") || t.starts_with("VARGRAPHIC") || t.starts_with("DECFLOAT") {
            format!("VARCHAR({expr})")
        } else if t == "TIME" {
            format!("CHAR({expr}, JIS)")
        } else {
            expr
        }
    }

    fn column_type(&self, sql_type: &str) -> ColumnType {
        match sql_type {
            // DB2 has no JSON type: `JSON <type>` is JSON text in a column
            // commented `json`; timestamps hold UTC (see the module docs).
            t if t.starts_with("JSON ") => ColumnType::Json,
            t if t.starts_with("TIMESTAMP") => ColumnType::TimestampTz,
            t => generic_column_type(t),
        }
    }

    fn create_journal(&self, journal: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE {journal} (seq BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY \
             (START WITH 1 INCREMENT BY 1 CACHE 50 ORDER), \
             tbl VARCHAR(128) NOT NULL, op CHAR(1) NOT NULL, new_image CLOB(1G), old_image CLOB(1G), \
             changed_ms BIGINT NOT NULL, PRIMARY KEY (seq))"
        )]
    }

    fn create_triggers(&self, spec: &TriggerSpec<'_>) -> Vec<String> {
        let image = |row: &str| {
            let pairs = spec.pairs(self, row, |k, v| format!("KEY {k} VALUE {v}"));
            format!("JSON_OBJECT({pairs} NULL ON NULL RETURNING CLOB(1G) FORMAT JSON)")
        };
        spec.events(self, "N", "O", image)
            .into_iter()
            .map(|(name, event, op, insert)| {
                let referencing = match op {
                    "I" => "REFERENCING NEW AS N",
                    "U" => "REFERENCING NEW AS N OLD AS O",
                    _ => "REFERENCING OLD AS O",
                };
                format!(
                    "CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {} {referencing} FOR EACH ROW {insert}",
                    spec.table.qualified(self)
                )
            })
            .collect()
    }

    fn now_ms(&self) -> &'static str {
        "(BIGINT(DAYS(CURRENT TIMESTAMP - CURRENT TIMEZONE) - DAYS('1970-01-01')) * 86400000 \
         + BIGINT(MIDNIGHT_SECONDS(CURRENT TIMESTAMP - CURRENT TIMEZONE)) * 1000 \
         + MICROSECOND(CURRENT TIMESTAMP - CURRENT TIMEZONE) / 1000)"
    }

    fn clock_query(&self) -> String {
        format!("SELECT {} FROM SYSIBM.SYSDUMMY1", self.now_ms())
    }

    fn limit(&self, sql: &str, n: usize) -> String {
        format!("{sql} FETCH FIRST {n} ROWS ONLY")
    }

    fn placeholder(&self, column: &Column) -> String {
        // A JSON column's text goes in as its storage type.
        let ty = column
            .sql_type
            .strip_prefix("JSON ")
            .unwrap_or(&column.sql_type);
        format!("CAST(? AS {ty})")
    }

    fn upsert(&self, table: &TableInfo, columns: &[String], key: &[String], rows: usize) -> String {
        let cols = columns.iter().map(|c| self.quote(c)).collect::<Vec<_>>();
        let values = values_rows(self, table, columns, rows);
        let on = key
            .iter()
            .map(|k| format!("T.{0} = S.{0}", self.quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let updates: Vec<String> = non_key(columns, key)
            .map(|c| format!("{0} = S.{0}", self.quote(c)))
            .collect();
        let matched = if updates.is_empty() {
            String::new()
        } else {
            format!(" WHEN MATCHED THEN UPDATE SET {}", updates.join(", "))
        };
        format!(
            "MERGE INTO {} AS T USING (VALUES {values}) AS S ({cols}) ON {on}{matched} \
             WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({svals})",
            table.qualified(self),
            cols = cols.join(", "),
            svals = cols
                .iter()
                .map(|c| format!("S.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}
