//! Initial sync: keyset pages by the mapping's id columns.
//!
//! A page is `SELECT … WHERE key > last ORDER BY key` limited to a chunk,
//! the comparison spelled out column by column (`k1 > ? OR (k1 = ? AND
//! k2 > ?)`) because not every database compares row values. Each page is
//! its own statement: there is no exported snapshot as PostgreSQL has, so
//! a row changed during the copy may be copied in either state — its
//! journal entry (read after the copy) carries the later change and a later
//! time, and the store's stamps keep the later one. Resuming after a crash
//! starts after the last key the store saved. Known gap: the journal's time
//! is the trigger's, so a transaction that fired before the copy began and
//! committed after the copy read its row loses to the copy
//! (docs/ARCHITECTURE.md, ODBC provider).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use connector_core::clock::now_millis;
use connector_core::column_type::text_to_json;
use connector_core::provider::SnapshotChunk;
use connector_core::{
    ConnectorError, Fields, ProviderMapping, RawChange, RawOp, Result, Snapshot, Stage,
};

use crate::catalog::{mapped_tables, query_text, TableInfo};
use crate::conn::{OdbcConn, Session};
use crate::dialect::Dialect;
use crate::options::OdbcOptions;
use crate::source::open_session;

pub struct OdbcSnapshot {
    session: Session,
    d: &'static dyn Dialect,
    /// collection → (table, key columns)
    tables: HashMap<String, (TableInfo, Vec<String>)>,
    as_of_ms: i64,
}

impl OdbcSnapshot {
    pub async fn open(
        conn: &OdbcConn,
        o: &OdbcOptions,
        mapping: &Arc<ProviderMapping>,
    ) -> Result<OdbcSnapshot> {
        let d = o.dialect.dialect();
        // A millisecond early: a change journaled in the copy's first
        // millisecond, which the copy may have read in its old state, must
        // still win over the copied row.
        let as_of_ms = now_millis() - 1;
        let mut session = open_session(conn, d, Stage::Snapshot).await?;
        let (m, o) = (mapping.clone(), o.clone());
        let found = session.run(move |c| mapped_tables(c, d, &m, &o)).await?;
        let tables = found
            .into_iter()
            .map(|(collection, info)| {
                let key = mapping.key_columns(&collection).unwrap_or_default();
                (collection, (info, key))
            })
            .collect();
        Ok(OdbcSnapshot {
            session,
            d,
            tables,
            as_of_ms,
        })
    }

    fn table(&self, collection: &str) -> Result<&(TableInfo, Vec<String>)> {
        self.tables.get(collection).ok_or_else(|| {
            ConnectorError::permanent(
                Stage::Snapshot,
                format!("collection `{collection}` is not synced with this provider"),
            )
        })
    }
}

/// The keyset condition after `after` (key values in key order) and its
/// parameters: `k1 > ? OR (k1 = ? AND k2 > ?) …`.
pub fn after_condition(
    d: &dyn Dialect,
    table: &TableInfo,
    key: &[String],
    after: &[Value],
) -> (String, Vec<Option<String>>) {
    let mut alternatives = Vec::new();
    let mut params = Vec::new();
    for i in 0..key.len() {
        let mut terms = Vec::new();
        for (j, k) in key.iter().enumerate().take(i + 1) {
            let op = if j == i { ">" } else { "=" };
            terms.push(format!("{} {op} {}", d.quote(k), d.marker(table, k)));
            let ty = table
                .column(k)
                .map(|c| c.ty)
                .unwrap_or(connector_core::ColumnType::Text);
            params.push(d.param_text(ty, after.get(j).unwrap_or(&Value::Null)));
        }
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    (alternatives.join(" OR "), params)
}

#[async_trait]
impl Snapshot for OdbcSnapshot {
    async fn estimate_rows(&mut self, collection: &str) -> Result<Option<u64>> {
        let (info, _) = self.table(collection)?;
        let sql = format!("SELECT COUNT(*) FROM {}", info.qualified(self.d));
        let rows = self
            .session
            .run(move |c| query_text(c, &sql, &[], Stage::Snapshot, "counting rows"))
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|n| n.trim().parse().ok()))
    }

    async fn chunk(
        &mut self,
        collection: &str,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<SnapshotChunk> {
        let d = self.d;
        let (info, key) = self.table(collection)?.clone();
        let cols = info
            .columns
            .iter()
            .map(|c| d.quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let order = key
            .iter()
            .map(|k| d.quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let (cond, params) = match after.and_then(Value::as_array) {
            Some(values) => {
                let (cond, params) = after_condition(d, &info, &key, values);
                (format!(" WHERE {cond}"), params)
            }
            None => (String::new(), Vec::new()),
        };
        let sql = d.limit(
            &format!(
                "SELECT {cols} FROM {}{cond} ORDER BY {order}",
                info.qualified(d)
            ),
            limit,
        );
        let params: Vec<String> = params.into_iter().map(Option::unwrap_or_default).collect();
        let context = format!("reading {}", info.qualified(d));
        let rows = self
            .session
            .run(move |c| query_text(c, &sql, &params, Stage::Snapshot, &context))
            .await?;
        let done = rows.len() < limit;
        let mut out = Vec::with_capacity(rows.len());
        for cells in rows {
            let row: Fields = info
                .columns
                .iter()
                .zip(cells)
                .map(|(col, cell)| {
                    let v = cell.map_or(Value::Null, |text| text_to_json(col.ty, &text));
                    (col.name.clone(), v)
                })
                .collect();
            out.push(RawChange {
                table: info.name.clone(),
                schema: info.schema.clone(),
                op: RawOp::Snapshot,
                row,
                before: None,
                commit_ts_ms: Some(self.as_of_ms),
                unchanged: Vec::new(),
                own_write: false,
                txn: None,
            });
        }
        let last_key = out.last().map(|r| {
            Value::Array(
                key.iter()
                    .map(|k| r.row.get(k).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        });
        Ok(SnapshotChunk {
            rows: out,
            last_key,
            done,
        })
    }
}
