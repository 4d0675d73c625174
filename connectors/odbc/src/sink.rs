//! The sink: one transaction per batch, array parameters per statement.
//!
//! The batch is grouped as for every SQL sink
//! ([`connector_core::sink_plan`]); each group is one prepared statement
//! (the dialect's upsert, or a delete by key) executed once with all its
//! rows bound as arrays of text parameters — one round trip per group
//! rather than per row (autocommit row by row is two orders of magnitude
//! slower). Where the driver would prepare the statement again for every
//! array row (SQLite's), the dialect asks for many rows in one statement's
//! VALUES list instead. Values are converted to the text each column takes by the
//! dialect (booleans, UTC timestamps, JSON).
//!
//! Tables go parents first (deletes children first) by the foreign keys the
//! driver lists among them ([`TableOrder`]). If the batch fails for a row's
//! own fault (a data or constraint error), it is rolled back and written
//! again row by row, each row committed on its own, a row breaking a
//! constraint again after the others ([`RowPasses`]): rows the database
//! rejects are returned for the dead-letter table and the others are
//! written.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use odbc_api::{Connection, IntoParameter};
use tracing::warn;

use connector_core::error::{is_constraint_violation, is_missing_reference};
use connector_core::row_passes::RowPasses;
use connector_core::sink_plan::{group_rows, GroupOp, RowGroup};
use connector_core::table_order::TableOrder;
use connector_core::{
    ColumnType, ConnectorError, ErrorKind, OutboundRow, ProviderMapping, Refused, Result, Sink,
    Stage,
};

use crate::catalog::{foreign_keys, integer, mapped_tables, query_value, TableInfo};
use crate::conn::{classify, OdbcConn, Session};
use crate::dialect::Dialect;
use crate::options::OdbcOptions;
use crate::source::open_session;

pub struct OdbcSink {
    session: Session,
    d: &'static dyn Dialect,
    tables: HashMap<String, TableInfo>,
    /// Parents before children (their foreign keys).
    order: TableOrder,
    /// Parameters one statement may carry here.
    max_parameters: usize,
}

/// One row group's statements and parameter rows (text, `None` = NULL).
struct Statement {
    /// The one-row statement (array execution, and row-by-row isolation).
    sql_one: String,
    /// Where the dialect wants several rows per statement: the statements
    /// and the parameter rows each covers.
    multi: Vec<(String, std::ops::Range<usize>)>,
    table: String,
    rows: Vec<usize>,
    params: Vec<Vec<Option<String>>>,
}

impl OdbcSink {
    pub async fn open(
        conn: &OdbcConn,
        o: &OdbcOptions,
        mapping: &Arc<ProviderMapping>,
    ) -> Result<OdbcSink> {
        let d = o.dialect.dialect();
        let mut session = open_session(conn, d, Stage::Sink).await?;
        let (m, o) = (mapping.clone(), o.clone());
        let found = session
            .run(move |c| {
                c.set_autocommit(false)
                    .map_err(|e| classify(&e, Stage::Sink, "turning autocommit off"))?;
                let mut tables = mapped_tables(c, d, &m, &o)?;
                for (collection, info) in &mut tables {
                    let key = m.key_columns(collection).unwrap_or_default();
                    let Some(check) = d.key_check(info, &key) else {
                        continue;
                    };
                    let (sql, params) = &check.passes;
                    let ctx = format!("checking the key of {}", info.name);
                    let found = query_value(c, sql, params, Stage::Sink, &ctx)?
                        .and_then(|n| integer(&n))
                        .unwrap_or(0);
                    info.key_checked = found > 0;
                    if !info.key_checked {
                        warn!(provider = %m.provider(), table = %info.name, dialect = d.name(),
                            "{}", d.key_check_failed());
                    }
                }
                let infos: Vec<&TableInfo> = tables.iter().map(|(_, t)| t).collect();
                let keys = foreign_keys(c, &infos);
                let max_parameters = match d.version_query() {
                    Some(q) => {
                        let version = query_value(c, q, &[], Stage::Sink, "reading the version")?
                            .unwrap_or_default();
                        d.max_parameters(&version)
                    }
                    None => usize::MAX,
                };
                // End the catalog reads' transaction: held open until the
                // first batch, it blocked every writer of an SQLite file in
                // rollback-journal mode (a read lock never released).
                c.commit()
                    .map_err(|e| classify(&e, Stage::Sink, "ending the catalog reads"))?;
                Ok((tables, keys, max_parameters))
            })
            .await?;
        Ok(OdbcSink {
            session,
            d,
            tables: found
                .0
                .into_iter()
                .map(|(_, t)| (t.name.clone(), t))
                .collect(),
            order: TableOrder::from_foreign_keys(found.1),
            max_parameters: found.2,
        })
    }

    fn table(&self, name: &str) -> Result<&TableInfo> {
        self.tables.get(name).ok_or_else(|| {
            ConnectorError::permanent(
                Stage::Sink,
                format!("table {name} is not known to this sink"),
            )
        })
    }

    fn plan(&self, rows: &[OutboundRow]) -> Result<Vec<Statement>> {
        let groups = group_rows(
            rows,
            |row, c| Ok(c.is_empty() || self.table(&row.table)?.column(c).is_some()),
            &self.order,
        )?;
        groups
            .into_iter()
            .map(|g| self.statement(rows, g))
            .collect()
    }

    fn statement(&self, rows: &[OutboundRow], g: RowGroup) -> Result<Statement> {
        let d = self.d;
        let info = self.table(&g.table)?;
        let columns = match &g.op {
            GroupOp::Upsert { columns } => columns.clone(),
            GroupOp::Delete => g.key.clone(),
        };
        let sql = |rows: usize| match &g.op {
            GroupOp::Upsert { columns } => d.upsert(info, columns, &g.key, rows),
            GroupOp::Delete => d.delete(info, &g.key, rows),
        };
        let per = d
            .rows_per_statement(columns.len())
            .min((self.max_parameters / columns.len().max(1)).max(1));
        let multi = if per > 1 {
            (0..g.rows.len())
                .step_by(per)
                .map(|start| {
                    let end = (start + per).min(g.rows.len());
                    (sql(end - start), start..end)
                })
                .collect()
        } else {
            Vec::new()
        };
        let types: Vec<ColumnType> = columns
            .iter()
            .map(|c| info.column(c).map_or(ColumnType::Text, |c| c.ty))
            .collect();
        let params = g
            .rows
            .iter()
            .map(|i| {
                let r = &rows[*i];
                columns
                    .iter()
                    .zip(&types)
                    .map(|(c, ty)| {
                        let v = match &r.row {
                            Some(fields) => fields.get(c),
                            None => r.key.iter().find(|(k, _)| k == c).map(|(_, v)| v),
                        };
                        v.and_then(|v| d.param_text(*ty, v))
                    })
                    .collect()
            })
            .collect();
        Ok(Statement {
            sql_one: sql(1),
            multi,
            table: g.table,
            rows: g.rows,
            params,
        })
    }
}

/// The most bytes one array execution may bind: odbc-api reserves every
/// row at each column's longest value, so one 10 MB CLOB in a group of a
/// thousand rows asked for 10 GB (the process died, and so on every retry).
const ARRAY_BYTES: usize = 64 << 20;

/// Executes one statement for the given parameter rows as arrays, as few
/// as fit [`ARRAY_BYTES`] each.
fn execute(
    conn: &Connection<'_>,
    sql: &str,
    params: &[Vec<Option<String>>],
) -> Result<(), odbc_api::Error> {
    for rows in array_chunks(params, ARRAY_BYTES) {
        execute_array(conn, sql, &params[rows])?;
    }
    Ok(())
}

/// Consecutive ranges of `params` whose arrays (rows × the longest value
/// of each column, plus a terminator) stay within `budget`; a row alone is
/// its own range whatever its size.
fn array_chunks(params: &[Vec<Option<String>>], budget: usize) -> Vec<std::ops::Range<usize>> {
    let width = |row: &Vec<Option<String>>| -> Vec<usize> {
        row.iter()
            .map(|v| v.as_ref().map_or(0, String::len).max(1) + 1)
            .collect()
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut widest: Vec<usize> = Vec::new();
    for (i, row) in params.iter().enumerate() {
        let w = width(row);
        let merged: Vec<usize> = if widest.is_empty() {
            w.clone()
        } else {
            widest.iter().zip(&w).map(|(a, b)| *a.max(b)).collect()
        };
        let bytes = (i - start + 1) * merged.iter().sum::<usize>();
        if i > start && bytes > budget {
            out.push(start..i);
            start = i;
            widest = w;
        } else {
            widest = merged;
        }
    }
    if start < params.len() {
        out.push(start..params.len());
    }
    out
}

/// Executes one statement for the given parameter rows as one array.
fn execute_array(
    conn: &Connection<'_>,
    sql: &str,
    params: &[Vec<Option<String>>],
) -> Result<(), odbc_api::Error> {
    if params.is_empty() {
        return Ok(());
    }
    let ncols = params[0].len();
    let max_len: Vec<usize> = (0..ncols)
        .map(|c| {
            params
                .iter()
                .map(|r| r[c].as_ref().map_or(0, String::len))
                .max()
                .unwrap_or(0)
                .max(1)
        })
        .collect();
    let prepared = conn.prepare(sql)?;
    let mut inserter = prepared.into_text_inserter(params.len(), max_len)?;
    inserter.set_num_rows(params.len());
    for c in 0..ncols {
        let mut col = inserter.column_mut(c);
        for (r, row) in params.iter().enumerate() {
            col.set_cell(r, row[c].as_deref().map(str::as_bytes));
        }
    }
    inserter.execute()?;
    Ok(())
}

/// Executes one statement once with every parameter row flattened.
fn execute_flat(
    conn: &Connection<'_>,
    sql: &str,
    params: &[Vec<Option<String>>],
) -> Result<(), odbc_api::Error> {
    let flat: Vec<_> = params
        .iter()
        .flat_map(|r| r.iter().map(|v| v.as_deref().into_parameter()))
        .collect();
    conn.execute(sql, flat.as_slice(), None)?;
    Ok(())
}

fn write_all(conn: &Connection<'_>, statements: &[Statement]) -> Result<()> {
    let result = statements.iter().try_for_each(|s| {
        let run = if s.multi.is_empty() {
            execute(conn, &s.sql_one, &s.params)
        } else {
            s.multi
                .iter()
                .try_for_each(|(sql, range)| execute_flat(conn, sql, &s.params[range.clone()]))
        };
        run.map_err(|e| classify(&e, Stage::Sink, &format!("writing to {}", s.table)))
    });
    match result {
        Ok(()) => conn
            .commit()
            .map_err(|e| classify(&e, Stage::Sink, "COMMIT")),
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}

/// Row by row, each committed alone, in passes ([`RowPasses`]); returns
/// the rejected rows.
fn isolate(conn: &Connection<'_>, statements: &[Statement]) -> Result<Vec<Refused>> {
    // (statement, its parameter row), in statement order.
    let order: Vec<(usize, usize)> = statements
        .iter()
        .enumerate()
        .flat_map(|(s, st)| (0..st.rows.len()).map(move |r| (s, r)))
        .collect();
    let mut passes = RowPasses::new(0..order.len());
    while let Some(k) = passes.next_row() {
        let (s, r) = order[k];
        let st = &statements[s];
        // A deferred constraint (SQLite's DEFERRABLE INITIALLY DEFERRED
        // keys, PostgreSQL's) fails the row's COMMIT: the row's refusal as
        // any other (before, the sink stopped on it for good).
        let outcome = execute(conn, &st.sql_one, std::slice::from_ref(&st.params[r]))
            .and_then(|()| conn.commit());
        match outcome {
            Ok(()) => {
                passes.written();
            }
            Err(e) => {
                let _ = conn.rollback();
                let err = classify(&e, Stage::Sink, &format!("table {}", st.table));
                if err.kind != ErrorKind::BadRecord {
                    return Err(err);
                }
                let (constraint, awaits_reference) = match &e {
                    odbc_api::Error::Diagnostics { record, .. } => {
                        let (state, message) = (
                            record.state.as_str(),
                            String::from_utf8_lossy(&record.message),
                        );
                        (
                            is_constraint_violation(state, &message),
                            is_missing_reference(state, &message),
                        )
                    }
                    _ => (false, false),
                };
                let refused = Refused {
                    row: k,
                    reason: err.message,
                    awaits_reference,
                };
                passes.failed(refused, constraint);
            }
        }
    }
    let mut rejected: Vec<Refused> = passes
        .rejected()
        .into_iter()
        .map(|refused| {
            let (s, r) = order[refused.row];
            Refused {
                row: statements[s].rows[r],
                ..refused
            }
        })
        .collect();
    rejected.sort_by_key(|r| r.row);
    Ok(rejected)
}

#[async_trait]
impl Sink for OdbcSink {
    async fn write(&mut self, rows: &[OutboundRow]) -> Result<Vec<Refused>> {
        let statements = Arc::new(self.plan(rows)?);
        let all = statements.clone();
        match self
            .session
            .run_to_the_end(move |c| write_all(c, &all))
            .await
        {
            Ok(()) => Ok(Vec::new()),
            Err(e) if e.kind == ErrorKind::BadRecord => {
                self.session
                    .run_to_the_end(move |c| isolate(c, &statements))
                    .await
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lens: &[usize]) -> Vec<Vec<Option<String>>> {
        lens.iter()
            .map(|n| vec![Some("k".into()), Some("x".repeat(*n))])
            .collect()
    }

    #[test]
    fn a_huge_value_does_not_size_every_row_of_its_array() {
        // 1,000 small rows and one of 10 MB, 64 MB at most per array.
        let mut lens = vec![10; 1000];
        lens[500] = 10 << 20;
        let params = rows(&lens);
        let chunks = array_chunks(&params, ARRAY_BYTES);
        // Every row once, in order.
        let covered: Vec<usize> = chunks.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(covered, (0..1000).collect::<Vec<_>>());
        for r in &chunks {
            let widest: usize = (0..2)
                .map(|c| {
                    params[r.clone()]
                        .iter()
                        .map(|row| row[c].as_ref().map_or(0, String::len).max(1) + 1)
                        .max()
                        .unwrap()
                })
                .sum();
            assert!(
                r.len() * widest <= ARRAY_BYTES,
                "{r:?}: {} bytes",
                r.len() * widest
            );
        }
        // Small rows stay one array.
        assert_eq!(array_chunks(&rows(&[10; 1000]), ARRAY_BYTES), vec![0..1000]);
        // A row bigger than the budget is an array of its own.
        assert_eq!(
            array_chunks(&rows(&[10, 100, 10]), 50),
            vec![0..1, 1..2, 2..3]
        );
    }
}
