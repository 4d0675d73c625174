//! The sink: one transaction per batch.
//!
//! Rows are grouped by table (and by column set, so a document missing a
//! column never overwrites it with NULL); each group is one statement with
//! one JSON parameter:
//!
//! ```sql
//! INSERT INTO "s"."t" ("a","b") SELECT "a","b" FROM jsonb_to_recordset($1) AS x ("a" int, "b" text)
//! ON CONFLICT ("a") DO UPDATE SET "b" = EXCLUDED."b"
//! ```
//!
//! PostgreSQL's input functions convert every value to the column's type
//! (taken from the catalog: only the statement's own columns, so a NOT NULL
//! domain column a row lacks is never checked as NULL), and every identifier
//! is quoted. Deletes are
//! one `DELETE … WHERE (key) IN (SELECT … FROM jsonb_to_recordset(…) AS x
//! (key columns and their types))` per table. Tables go parents first (deletes children first) by the
//! foreign keys among them ([`TableOrder`]). If the batch fails for a row's
//! own fault (a data or constraint error), it is retried row by row under
//! savepoints, a row breaking a constraint again after the others
//! ([`RowPasses`]): the rejected rows are returned for the dead-letter table
//! and the rest commit.
//!
//! Echoes: the session is tagged with a replication origin named after the
//! provider's slot (`pg_replication_origin_session_setup`), so every
//! transaction the sink commits carries it through logical decoding, and the
//! source marks those changes as our own writes: the store records them as
//! what the database holds without a lookup of what the sink intended. Where
//! the role may not use replication origins (they need superuser, or EXECUTE
//! on the `pg_replication_origin_*` functions), the sink says so once and the
//! store's recorded intents recognise the echoes instead.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::Client;
use tracing::{info, warn};

use connector_core::column_type::pg_base_type;
use connector_core::error::{is_constraint_violation, is_missing_reference};
use connector_core::mapping::transform::iso_to_millis;
use connector_core::row_passes::RowPasses;
use connector_core::sink_plan::{group_rows, GroupOp};
use connector_core::table_order::TableOrder;
use connector_core::tagged_writes;
use connector_core::{
    ConnectorError, ErrorKind, OutboundRow, ProviderMapping, Refused, Result, Sink, Stage,
};

use crate::catalog::{self, TableInfo};
use crate::conn::{classify, ident, PgConn};
use crate::options::PgOptions;
use crate::setup;

pub struct PgSink {
    client: Client,
    /// Statements prepared on this session, by SQL text: a batch of the
    /// same shape as an earlier one skips a round trip and the planning.
    prepared: HashMap<String, tokio_postgres::Statement>,
    /// Whether this session's transactions carry our replication origin;
    /// then the statement reading a transaction's id, to record what it
    /// wrote ([`connector_core::tagged_writes`]).
    tagged: bool,
    xid: Option<tokio_postgres::Statement>,
    provider: String,
    /// (table name) → catalog info, for the mapped tables.
    tables: HashMap<String, TableInfo>,
    /// Parents before children (their foreign keys).
    order: TableOrder,
    /// The provider's slot (its name in [`REFUSED_SINCE`]) and how long a
    /// batch all refused by a trigger is retried.
    slot: String,
    refused_batch_wait: std::time::Duration,
}

/// Per provider (slot), since when every batch was refused whole by a
/// trigger: kept across the sink's sessions (each failure opens a new one).
static REFUSED_SINCE: std::sync::Mutex<BTreeMap<String, std::time::Instant>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Whether a batch refused whole by a trigger is still within `wait` of
/// the first such refusal (retry it), recording that first one.
fn still_waiting(slot: &str, wait: std::time::Duration) -> bool {
    let mut since = REFUSED_SINCE.lock().unwrap_or_else(|e| e.into_inner());
    let first = *since
        .entry(slot.to_string())
        .or_insert_with(std::time::Instant::now);
    let waiting = first.elapsed() < wait;
    if !waiting {
        since.remove(slot);
    }
    waiting
}

/// A batch went through: the next refusal of a whole one waits afresh.
fn refusals_over(slot: &str) {
    REFUSED_SINCE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(slot);
}

/// Prepared statements kept per session before the cache starts over (a
/// mapping with many column sets makes many shapes).
const MAX_PREPARED: usize = 256;

/// One statement of a batch and the batch rows it covers.
struct Statement {
    sql: String,
    rows: Vec<usize>,
    /// Its integer columns: a timestamp text bound for one goes in as its
    /// epoch milliseconds (`to_iso_string` undone).
    integer_columns: Vec<String>,
}

impl PgSink {
    pub async fn open(conn: &PgConn, o: &PgOptions, mapping: &ProviderMapping) -> Result<PgSink> {
        let client = conn.connect().await?;
        let mut tables = HashMap::new();
        for (collection, info) in setup::mapped_tables(&client, mapping, o).await? {
            // Upserts conflict on the id's columns: they need a unique index.
            let key = mapping.key_columns(&collection).unwrap_or_default();
            if !catalog::has_unique_index(&client, &info, &key).await? {
                return Err(ConnectorError::permanent(
                    Stage::Setup,
                    format!(
                        "collection `{collection}`: upserts into {} match on ({}), but no unique index covers exactly those columns; \
                         add one (e.g. CREATE UNIQUE INDEX ON {} ({})) or change the mapping's id",
                        info.qualified(),
                        key.join(", "),
                        info.qualified(),
                        key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            tables.insert(info.name.clone(), info);
        }
        let order = match catalog::foreign_keys(&client, tables.values()).await {
            Ok(keys) => TableOrder::from_foreign_keys(keys),
            Err(e) => {
                warn!(provider = %mapping.provider(), error = %e, "cannot read the foreign keys; tables are written in name order");
                TableOrder::default()
            }
        };
        let tagged = tag_session(&client, &origin_name(o), mapping.provider()).await;
        let xid = match tagged {
            true => Some(
                client
                    .prepare("SELECT pg_current_xact_id()::text::bigint")
                    .await
                    .map_err(|e| classify(&e, Stage::Sink, "preparing the xid query"))?,
            ),
            false => None,
        };
        Ok(PgSink {
            client,
            prepared: HashMap::new(),
            tagged,
            xid,
            provider: mapping.provider().to_string(),
            tables,
            order,
            slot: o.slot.clone(),
            refused_batch_wait: o.refused_batch_wait,
        })
    }

    fn table(&self, row: &OutboundRow) -> Result<&TableInfo> {
        self.tables.get(&row.table).ok_or_else(|| {
            ConnectorError::permanent(
                Stage::Sink,
                format!("table {} is not known to this sink", row.table),
            )
        })
    }

    /// One statement per row group ([`connector_core::sink_plan`]).
    fn plan(&self, rows: &[OutboundRow]) -> Result<Vec<Statement>> {
        let groups = group_rows(
            rows,
            |row, c| Ok(c.is_empty() || self.table(row)?.column(c).is_some()),
            &self.order,
        )?;
        Ok(groups
            .into_iter()
            .map(|g| {
                let info = &self.tables[&g.table];
                let t = info.qualified();
                let key_list = g.key.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
                let sql = match &g.op {
                    GroupOp::Upsert { columns } => {
                        let col_list = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
                        let updates: Vec<String> = columns
                            .iter()
                            .filter(|c| !g.key.contains(c))
                            .filter(|c| info.column(c).is_none_or(|col| !col.always_identity))
                            .map(|c| format!("{0} = EXCLUDED.{0}", ident(c)))
                            .collect();
                        let action = if updates.is_empty() {
                            "DO NOTHING".to_string()
                        } else {
                            format!("DO UPDATE SET {}", updates.join(", "))
                        };
                        // The row's own identity value (copied from
                        // another database) goes in as it is, and is never
                        // updated (an identity column may not be).
                        let overriding = if info.has_always_identity() {
                            " OVERRIDING SYSTEM VALUE"
                        } else {
                            ""
                        };
                        format!(
                            "INSERT INTO {t} ({col_list}){overriding} SELECT {col_list} FROM jsonb_to_recordset($1::jsonb) \
                             AS x ({defs}) ON CONFLICT ({key_list}) {action}",
                            defs = typed(info, columns)
                        )
                    }
                    GroupOp::Delete => format!(
                        "DELETE FROM {t} WHERE ({key_list}) IN \
                         (SELECT {key_list} FROM jsonb_to_recordset($1::jsonb) AS x ({defs}))",
                        defs = typed(info, &g.key)
                    ),
                };
                let columns = match &g.op {
                    GroupOp::Upsert { columns } => columns.as_slice(),
                    GroupOp::Delete => g.key.as_slice(),
                };
                let integer_columns = columns
                    .iter()
                    .filter(|c| {
                        info.column(c).is_some_and(|col| {
                            matches!(pg_base_type(&col.type_name).as_str(), "smallint" | "integer" | "bigint")
                        })
                    })
                    .cloned()
                    .collect();
                Statement {
                    sql,
                    rows: g.rows,
                    integer_columns,
                }
            })
            .collect())
    }

    fn payload(rows: &[OutboundRow], s: &Statement, idx: &[usize]) -> Value {
        Value::Array(
            idx.iter()
                .map(|i| {
                    let r = &rows[*i];
                    let mut fields = match &r.row {
                        Some(fields) => fields.clone(),
                        None => r.key.iter().cloned().collect(),
                    };
                    for c in &s.integer_columns {
                        if let Some(Value::String(text)) = fields.get(c) {
                            if let Some(ms) = iso_to_millis(text) {
                                fields.insert(c.clone(), Value::from(ms));
                            }
                        }
                    }
                    Value::Object(fields)
                })
                .collect(),
        )
    }

    /// The prepared form of every statement, preparing those not seen yet.
    async fn prepare(
        &mut self,
        statements: &[Statement],
    ) -> Result<Vec<tokio_postgres::Statement>> {
        if self.prepared.len() > MAX_PREPARED {
            self.prepared.clear();
        }
        let mut out = Vec::with_capacity(statements.len());
        for s in statements {
            let prepared = match self.prepared.get(&s.sql) {
                Some(p) => p.clone(),
                None => {
                    let p =
                        self.client.prepare(&s.sql).await.map_err(|e| {
                            classify(&e, Stage::Sink, "preparing a batch statement")
                        })?;
                    self.prepared.insert(s.sql.clone(), p.clone());
                    p
                }
            };
            out.push(prepared);
        }
        Ok(out)
    }

    async fn run_all(
        &mut self,
        statements: &[Statement],
        rows: &[OutboundRow],
    ) -> Result<(), (ConnectorError, bool)> {
        let prepared = self.prepare(statements).await.map_err(|e| (e, false))?;
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| (classify(&e, Stage::Sink, "BEGIN"), false))?;
        record_writes(&tx, self.xid.as_ref(), &self.provider, rows)
            .await
            .map_err(|e| (e, false))?;
        for (s, prepared) in statements.iter().zip(&prepared) {
            let payload = Self::payload(rows, s, &s.rows);
            if let Err(e) = tx.execute(prepared, &[&payload]).await {
                let err = classify_write(&e, "writing a batch");
                return Err((err, true));
            }
        }
        tx.commit()
            .await
            .map_err(|e| (classify(&e, Stage::Sink, "COMMIT"), false))
    }

    /// Row by row under savepoints, in passes ([`RowPasses`]); returns the
    /// rejected rows.
    async fn isolate(
        &mut self,
        statements: &[Statement],
        rows: &[OutboundRow],
    ) -> Result<Vec<Refused>> {
        let prepared = self.prepare(statements).await?;
        // (statement, batch row), in statement order.
        let order: Vec<(usize, usize)> = statements
            .iter()
            .enumerate()
            .flat_map(|(s, st)| st.rows.iter().map(move |i| (s, *i)))
            .collect();
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| classify(&e, Stage::Sink, "BEGIN"))?;
        // Deferred constraints (DEFERRABLE INITIALLY DEFERRED keys, as
        // Django makes them) checked per row: at COMMIT they failed the
        // whole batch again, and the sink stopped on it for good.
        tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
            .await
            .map_err(|e| classify(&e, Stage::Sink, "SET CONSTRAINTS"))?;
        record_writes(&tx, self.xid.as_ref(), &self.provider, rows).await?;
        let savepoint = |e: tokio_postgres::Error| classify(&e, Stage::Sink, "savepoint");
        let mut passes = RowPasses::new(0..order.len());
        while let Some(k) = passes.next_row() {
            let (s, i) = order[k];
            tx.batch_execute("SAVEPOINT row").await.map_err(savepoint)?;
            let payload = Self::payload(rows, &statements[s], &[i]);
            match tx.execute(&prepared[s], &[&payload]).await {
                Ok(_) => {
                    tx.batch_execute("RELEASE SAVEPOINT row")
                        .await
                        .map_err(savepoint)?;
                    passes.written();
                }
                Err(e) => {
                    let err = classify_write(&e, &format!("table {}", rows[i].table));
                    if err.kind != ErrorKind::BadRecord {
                        return Err(err);
                    }
                    // ROLLBACK TO keeps the savepoint: released, or they nest.
                    tx.batch_execute("ROLLBACK TO SAVEPOINT row; RELEASE SAVEPOINT row")
                        .await
                        .map_err(savepoint)?;
                    // (A trigger's refusal may be one too: a parent it
                    // checks for may come later in the batch.)
                    let code = e.code().map(|c| c.code()).unwrap_or_default();
                    let constraint = is_constraint_violation(code, "") || code == "P0001";
                    let refused = Refused {
                        row: k,
                        awaits_reference: is_missing_reference(code, ""),
                        reason: err.message,
                    };
                    passes.failed(refused, constraint);
                }
            }
        }
        let mut rejected: Vec<Refused> = passes
            .rejected()
            .into_iter()
            .map(|r| Refused {
                row: order[r.row].1,
                ..r
            })
            .collect();
        rejected.sort_by_key(|r| r.row);
        // Every row of a batch of several refused by a trigger is the
        // table refusing writes (a maintenance switch), not the rows:
        // retried, not dead-lettered (one row alone cannot tell), for
        // `refused_batch_wait_s`: a bulk change whose every row breaks a
        // validation trigger looks the same, and retried for ever it
        // stalled every later write to this database.
        let all_refused = order.len() > 1
            && rejected.len() == order.len()
            && rejected.iter().all(|r| r.reason.contains("(P0001)"));
        if all_refused && still_waiting(&self.slot, self.refused_batch_wait) {
            return Err(ConnectorError::transient(
                Stage::Sink,
                format!(
                    "every row of the batch refused by a trigger: {}",
                    rejected[0].reason
                ),
            ));
        }
        if !all_refused {
            refusals_over(&self.slot);
        }
        tx.commit()
            .await
            .map_err(|e| classify(&e, Stage::Sink, "COMMIT"))?;
        Ok(rejected)
    }
}

/// Records which documents this tagged transaction writes, before any of
/// its changes can reach the feed: its other changes (a trigger's, a
/// cascade's) are then merged as the database's own.
async fn record_writes(
    tx: &tokio_postgres::Transaction<'_>,
    xid: Option<&tokio_postgres::Statement>,
    provider: &str,
    rows: &[OutboundRow],
) -> Result<()> {
    let Some(xid) = xid else {
        return Ok(());
    };
    let txn: i64 = tx
        .query_one(xid, &[])
        .await
        .map_err(|e| classify(&e, Stage::Sink, "reading the transaction id"))?
        .get(0);
    tagged_writes::record(
        provider,
        txn as u64,
        rows.iter()
            .map(|r| tagged_writes::loose_key(&r.collection, r.key.iter().map(|(_, v)| v))),
    );
    Ok(())
}

/// A write's error. Beyond data (22) and constraint (23) errors, these are
/// a row's own fault too, so the batch is isolated and the row becomes a
/// dead letter instead of stopping the sink: a validation trigger's RAISE
/// (P0001), a value too large for an index row (54000), and two rows of one
/// statement on one key (21000; written one by one, both go through).
fn classify_write(e: &tokio_postgres::Error, context: &str) -> ConnectorError {
    let mut err = classify(e, Stage::Sink, context);
    if e.code()
        .is_some_and(|c| matches!(c.code(), "P0001" | "54000" | "21000"))
    {
        err.kind = ErrorKind::BadRecord;
    }
    err
}

/// `"c" type, …` of the statement's own columns, for `jsonb_to_recordset`:
/// the table's row type (`jsonb_populate_recordset`) ran every column the
/// payload lacks through its type as NULL, and a NOT NULL domain refused
/// every delete (its payload is the key) and every row lacking it.
fn typed(info: &TableInfo, columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| {
            // Without its length: a varchar(4) here cut a longer value
            // silently, where storing it into the column refuses it.
            let ty = info
                .column(c)
                .map_or("text".to_string(), |col| pg_base_type(&col.type_name));
            format!("{} {ty}", ident(c))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The replication origin the sink tags its transactions with (the slot's name).
pub fn origin_name(o: &PgOptions) -> String {
    o.slot.clone()
}

/// Tags the session's transactions with `origin`, creating it if needed.
/// `false` (and a warning) where the role may not, or another session holds it.
async fn tag_session(client: &Client, origin: &str, provider: &str) -> bool {
    let tagged = client
        .batch_execute(&format!(
            "SELECT pg_replication_origin_create({0}) WHERE pg_replication_origin_oid({0}) IS NULL;
             SELECT pg_replication_origin_session_setup({0})",
            crate::conn::literal(origin)
        ))
        .await;
    match tagged {
        Ok(()) => {
            info!(provider, origin, "sink writes carry replication origin");
            true
        }
        Err(e) => {
            let reason = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            warn!(
                provider, origin, %reason,
                "sink writes are not tagged with a replication origin; echoes are recognised by recorded intents instead (grant EXECUTE on pg_replication_origin_create, pg_replication_origin_oid and pg_replication_origin_session_setup to use origins)"
            );
            false
        }
    }
}

#[async_trait]
impl Sink for PgSink {
    fn tags_own_writes(&self) -> bool {
        self.tagged
    }

    async fn write(&mut self, rows: &[OutboundRow]) -> Result<Vec<Refused>> {
        let statements = self.plan(rows)?;
        match self.run_all(&statements, rows).await {
            Ok(()) => {
                refusals_over(&self.slot);
                Ok(Vec::new())
            }
            Err((e, _)) if e.kind == ErrorKind::BadRecord => self.isolate(&statements, rows).await,
            Err((e, _)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{refusals_over, still_waiting};
    use std::time::Duration;

    // Each test its own slot: the record is process-wide and tests run in
    // parallel threads.
    #[test]
    fn a_batch_refused_whole_is_retried_for_the_wait_from_the_first_refusal() {
        let wait = Duration::from_millis(200);
        assert!(still_waiting("t-wait", wait));
        std::thread::sleep(Duration::from_millis(100));
        assert!(still_waiting("t-wait", wait), "counted from the first");
        std::thread::sleep(Duration::from_millis(150));
        assert!(!still_waiting("t-wait", wait), "past the wait");
        // Given up, the next refusal waits afresh.
        assert!(still_waiting("t-wait", wait));
    }

    #[test]
    fn a_batch_that_went_through_starts_the_wait_over() {
        let wait = Duration::from_millis(200);
        assert!(still_waiting("t-over", wait));
        std::thread::sleep(Duration::from_millis(250));
        refusals_over("t-over");
        assert!(still_waiting("t-over", wait), "a fresh wait");
    }
}
