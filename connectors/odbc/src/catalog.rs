//! What the database's catalog says about a mapped table: its columns and
//! their types, read through the dialect's catalog query.

use odbc_api::{Connection, Cursor, IntoParameter, ResultSetMetadata};

use connector_core::{ColumnType, ConnectorError, ProviderMapping, Result, Stage};

use crate::conn::classify;
use crate::dialect::Dialect;
use crate::options::OdbcOptions;

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// The type as the catalog writes it, e.g. `DECIMAL(10,2)` (for casts).
    pub sql_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    pub schema: Option<String>,
    pub name: String,
    pub columns: Vec<Column>,
    /// The dialect's check of the id's columns passed when the sink opened
    /// ([`crate::dialect::Dialect::key_check`]): SQLite's case-blind index
    /// on a UUID key exists; MariaDB's key can take the upsert's guard.
    pub key_checked: bool,
}

impl TableInfo {
    pub fn qualified(&self, d: &dyn Dialect) -> String {
        d.qualified(self.schema.as_deref(), &self.name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// An integer the database returned as text (`42`, or `42.0` where a
/// driver renders a whole decimal).
pub fn integer(text: &str) -> Option<i64> {
    let t = text.trim();
    t.parse().ok().or_else(|| {
        let (whole, fraction) = t.split_once('.')?;
        fraction
            .chars()
            .all(|c| c == '0')
            .then(|| whole.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
#[test]
fn integers_read_as_drivers_render_them() {
    assert_eq!(integer(" 42 "), Some(42));
    assert_eq!(integer("42.000"), Some(42));
    assert_eq!(integer("9007199254740993"), Some(9_007_199_254_740_993));
    assert_eq!(integer("42.5"), None);
    assert_eq!(integer("forty-two"), None);
}

/// The first column of the first row of a query ([`query_text`]), if
/// there is one and it is not NULL.
pub fn query_value(
    conn: &Connection<'_>,
    sql: &str,
    params: &[String],
    stage: Stage,
    context: &str,
) -> Result<Option<String>> {
    Ok(query_text(conn, sql, params, stage, context)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// Runs a query with text parameters and returns every row as text
/// (`None` for NULL), fetching long values in pieces (no truncation).
pub fn query_text(
    conn: &Connection<'_>,
    sql: &str,
    params: &[String],
    stage: Stage,
    context: &str,
) -> Result<Vec<Vec<Option<String>>>> {
    let params: Vec<_> = params.iter().map(|p| p.as_str().into_parameter()).collect();
    let cursor = conn
        .execute(sql, params.as_slice(), None)
        .map_err(|e| classify(&e, stage, context))?;
    let Some(mut cursor) = cursor else {
        return Ok(Vec::new());
    };
    let ncols = cursor
        .num_result_cols()
        .map_err(|e| classify(&e, stage, context))? as u16;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(mut row) = cursor
        .next_row()
        .map_err(|e| classify(&e, stage, context))?
    {
        let mut values = Vec::with_capacity(ncols as usize);
        for col in 1..=ncols {
            buf.clear();
            let present = row
                .get_text(col, &mut buf)
                .map_err(|e| classify(&e, stage, context))?;
            values.push(present.then(|| String::from_utf8_lossy(&buf).into_owned()));
        }
        out.push(values);
    }
    Ok(out)
}

/// Reads a table's columns; `None` when it does not exist.
pub fn table_info(
    conn: &Connection<'_>,
    d: &dyn Dialect,
    schema: Option<&str>,
    table: &str,
) -> Result<Option<TableInfo>> {
    let (sql, params) = d.columns_query(schema, table);
    let rows = query_text(
        conn,
        &sql,
        &params,
        Stage::Setup,
        &format!("reading the catalog for {}", d.qualified(schema, table)),
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let name = it.next().flatten()?;
            let sql_type = it.next().flatten().unwrap_or_default();
            Some(Column {
                ty: d.column_type(&sql_type),
                name: name.trim().to_string(),
                sql_type: sql_type.trim().to_string(),
            })
        })
        .collect();
    Ok(Some(TableInfo {
        schema: schema.map(str::to_string),
        name: table.to_string(),
        columns,
        key_checked: false,
    }))
}

/// The mapped tables: (collection, table info); an error names a missing
/// table or a missing key column.
pub fn mapped_tables(
    conn: &Connection<'_>,
    d: &dyn Dialect,
    mapping: &ProviderMapping,
    o: &OdbcOptions,
) -> Result<Vec<(String, TableInfo)>> {
    let mut out = Vec::new();
    for (rule, table, schema) in mapping.tables() {
        let schema = schema.or(o.schema.as_deref());
        let info = table_info(conn, d, schema, table)?.ok_or_else(|| {
            ConnectorError::permanent(
                Stage::Setup,
                format!(
                    "collection `{}`: table {} does not exist in the {} database",
                    rule.name,
                    d.qualified(schema, table),
                    d.name()
                ),
            )
        })?;
        let key = mapping.key_columns(&rule.name).unwrap_or_default();
        if let Some(missing) = key.iter().find(|k| info.column(k).is_none()) {
            return Err(ConnectorError::permanent(
                Stage::Setup,
                format!(
                    "collection `{}`: the id column `{missing}` is not a column of {}",
                    rule.name,
                    info.qualified(d)
                ),
            ));
        }
        mapping
            .check_columns(&rule.name, info.columns.iter().map(|c| c.name.as_str()))
            .map_err(|e| ConnectorError::permanent(Stage::Setup, e))?;
        out.push((rule.name.clone(), info));
    }
    Ok(out)
}

/// The foreign keys among `tables`, as `(child, parent)` table names, from
/// the driver's `SQLForeignKeys`. A driver that cannot tell gives none (the
/// sink's row passes still write children after their parents).
pub fn foreign_keys(conn: &Connection<'_>, tables: &[&TableInfo]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for child in tables {
        let schema = child.schema.as_deref().unwrap_or("");
        let rows = match conn.foreign_keys("", "", "", "", schema, &child.name) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(table = %child.name, error = %e, "the driver does not list foreign keys");
                return Vec::new();
            }
        };
        for row in rows.flatten() {
            let parent = row.pk_table.as_str().ok().flatten().unwrap_or("").trim();
            if let Some(p) = tables.iter().find(|t| t.name.eq_ignore_ascii_case(parent)) {
                out.push((child.name.clone(), p.name.clone()));
            }
        }
    }
    out
}
