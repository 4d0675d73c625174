//! Initial sync: keyset pages by primary key inside one REPEATABLE READ
//! transaction.
//!
//! When the replication slot does not exist yet, it is created here with
//! `CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')` on a replication session
//! that stays open while the pages are read through `SET TRANSACTION
//! SNAPSHOT`: the copy is exactly the state at the slot's consistent point,
//! and streaming from the slot continues from there, with no row missed or
//! applied twice. When the slot exists (a resumed copy, or streaming
//! already ran), the pages come from a fresh snapshot: rows changed since
//! the slot's position are then both copied and streamed, which the store's
//! stamps resolve (later commits win).
//!
//! Either way the copy is stamped with the start of its snapshot
//! transaction (less a millisecond), later than every commit it shows, and
//! the xids the snapshot does not see (its xip list, and every xid from its
//! xmax on) are handed to the worker ([`Snapshot::in_flight`]): a commit not
//! in the copy whose stamp is older than the copy's (PostgreSQL stamps a
//! commit before it becomes visible; with an exported snapshot, any commit
//! between the slot's consistent point and the copy's transaction) has its
//! streamed stamp raised above the copy's. So a commit the copy shows wins
//! over every other provider's write from before it, including one that
//! committed while `CREATE_REPLICATION_SLOT` waited for running
//! transactions, and every commit the copy does not show wins over the copy.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::Client;
use tracing::info;

use connector_core::column_type::pg_base_type;
use connector_core::provider::SnapshotChunk;
use connector_core::table_order::between_collections;
use connector_core::{
    ConnectorError, InFlight, ProviderMapping, RawChange, RawOp, Result, Snapshot, Stage,
};
use pgwire_replication::{Lsn, ReplicationClient};

use crate::catalog::{self, TableInfo};
use crate::conn::{classify, classify_replication, ident, PgConn};
use crate::options::PgOptions;
use crate::setup;
use crate::types::text_to_json;

struct Table {
    info: TableInfo,
    /// `SELECT col::text, … FROM t` and the key predicate, prepared once.
    first: String,
    next: String,
}

pub struct PgSnapshot {
    client: Client,
    /// Keeps an exported snapshot alive until the copy is done.
    exporter: Option<ReplicationClient>,
    /// The new slot's consistent point (when this snapshot created it).
    start_position: Option<String>,
    /// The copy's stamp (every row's), and the xids the snapshot does not
    /// see: its xip list and, from its xmax on, every xid (64-bit `xid8`, as
    /// the source widens pgoutput's).
    unseen: InFlight,
    tables: HashMap<String, Table>,
}

impl PgSnapshot {
    /// A snapshot to copy from (`for_copy`: the slot is made here when it
    /// does not exist, with the publication), or only to read from
    /// (`verify`: nothing is made; a missing slot would otherwise start
    /// retaining WAL for a provider nobody streams).
    pub async fn open(
        conn: &PgConn,
        o: &PgOptions,
        mapping: &ProviderMapping,
        for_copy: bool,
    ) -> Result<PgSnapshot> {
        let client = conn.connect().await?;
        let err =
            |ctx: &'static str| move |e: tokio_postgres::Error| classify(&e, Stage::Snapshot, ctx);
        let slot = client
            .query(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&o.slot],
            )
            .await
            .map_err(err("reading pg_replication_slots"))?;
        let slot_exists = !slot.is_empty();
        let mut exporter = None;
        let mut exported = None;
        // An existing slot streams from its confirmed position: the stream's
        // start for a feed that has none yet (a slot `setup` made), or that
        // the slot has left behind (a slot made again after it was lost).
        let mut start_position: Option<String> = slot.first().and_then(|r| r.get(0));
        if !slot_exists && for_copy {
            // The publication must exist before the slot's consistent point.
            setup::run(&client, mapping, o, false, false).await?;
            let primary = conn.primary().await?;
            let mut repl = ReplicationClient::connect_gated(primary.replication(
                &o.slot,
                &o.publication,
                Lsn(0),
            ))
            .await
            .map_err(|e| {
                classify_replication(&e, Stage::Snapshot, "opening a replication session")
            })?;
            let rows = repl
                .simple_query(&format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
                    ident(&o.slot)
                ))
                .await
                .map_err(|e| {
                    classify_replication(&e, Stage::Snapshot, "creating the replication slot")
                })?;
            let cell = |i: usize| {
                rows.first()
                    .and_then(|r| r.get(i).cloned().flatten())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            let (point, name) = (cell(1), cell(2));
            info!(slot = %o.slot, consistent_point = ?point, snapshot = ?name, "created the replication slot with an exported snapshot");
            exported = name;
            start_position = point;
            exporter = Some(repl);
            // Test hook: widens the window between the slot's consistent
            // point and the copy's transaction, where a commit is streamed
            // and not copied (postgres_e2e checks that it wins).
            if let Some(ms) = std::env::var("CONNECTOR_TEST_PAUSE_AFTER_SLOT_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(err("starting the snapshot transaction"))?;
        if let Some(name) = &exported {
            client
                .batch_execute(&format!(
                    "SET TRANSACTION SNAPSHOT {}",
                    crate::conn::literal(name)
                ))
                .await
                .map_err(err("importing the exported snapshot"))?;
        }
        // now() is the transaction's start. With an exported snapshot that
        // is after the slot's consistent point, so after every commit the
        // copy shows. Without one, it is before the snapshot is taken (at
        // its first query, this one): a
        // commit the slot streams that is older than the copy's rows loses
        // to them, a newer one wins, also within the same millisecond (hence
        // - 1: a streamed commit from before the snapshot that wins is
        // followed by the later ones the copy shows, in commit order).
        // PostgreSQL stamps a commit before it flushes it (and before a
        // synchronous standby confirms it), so a commit still in progress
        // for the snapshot can carry an older time than the copy: the
        // snapshot's running xids (its xip list, and any xid from its xmax
        // on, where a committing transaction that completed nothing before
        // it sits) go to the worker, which raises their streamed stamps
        // above the copy's (`Snapshot::in_flight`). Stamping
        // the copy lower instead would let a copy repeated after a lost slot
        // (the only source of what the slot lost) lose to stale values.
        let row = client
            .query_one(
                "SELECT floor(extract(epoch from now()) * 1000)::int8 - 1,
                        ARRAY(SELECT x::text::int8
                              FROM pg_snapshot_xip(pg_current_snapshot()) AS x),
                        pg_snapshot_xmax(pg_current_snapshot())::text::int8",
                &[],
            )
            .await
            .map_err(err("reading the snapshot's time and running transactions"))?;
        let unseen = InFlight {
            as_of_ms: row.get(0),
            txns: row
                .get::<_, Vec<i64>>(1)
                .into_iter()
                .map(|x| x as u64)
                .collect(),
            from: Some(row.get::<_, i64>(2) as u64),
        };
        let mut tables = HashMap::new();
        for (collection, info) in setup::mapped_tables(&client, mapping, o).await? {
            let cols = info
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    // `char(n)::text` strips the padding that pgoutput
                    // sends: the output function keeps it, as the stream.
                    if pg_base_type(&c.type_name) == "bpchar" {
                        format!("textin(bpcharout(src.{})) AS c{i}", ident(&c.name))
                    } else {
                        format!("src.{}::text AS c{i}", ident(&c.name))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            // Qualified with the table alias: a bare name in ORDER BY would
            // pick the `::text` output column and sort as text.
            let key_cols = info
                .key
                .iter()
                .map(|k| format!("src.{}", ident(k)))
                .collect::<Vec<_>>()
                .join(", ");
            let key_params = info
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let ty = info
                        .column(k)
                        .map(|c| c.type_name.as_str())
                        .unwrap_or("text");
                    format!("${}::text::{ty}", i + 1)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let base = format!("SELECT {cols} FROM {} AS src", info.qualified());
            let limit = format!("${}", info.key.len() + 1);
            tables.insert(
                collection,
                Table {
                    first: format!("{base} ORDER BY {key_cols} LIMIT $1"),
                    next: format!("{base} WHERE ({key_cols}) > ({key_params}) ORDER BY {key_cols} LIMIT {limit}"),
                    info,
                },
            );
        }
        Ok(PgSnapshot {
            client,
            exporter,
            start_position,
            unseen,
            tables,
        })
    }

    fn table(&self, collection: &str) -> Result<&Table> {
        self.tables.get(collection).ok_or_else(|| {
            ConnectorError::permanent(
                Stage::Snapshot,
                format!("collection `{collection}` is not mapped to a table here"),
            )
        })
    }
}

#[async_trait]
impl Snapshot for PgSnapshot {
    fn start_position(&self) -> Option<String> {
        self.start_position.clone()
    }

    /// The slot is new to the saved position: this copy created it (the
    /// saved position belongs to a slot that is gone, wherever it stood: a
    /// cluster restored or failed over can be behind it), or it starts
    /// after the saved position (made again by `setup`). What lay between
    /// is only in this copy.
    async fn restarts_feed(&mut self, saved: &str) -> Result<bool> {
        if self.exporter.is_some() {
            return Ok(true);
        }
        let start = self.start_position.as_deref().map(Lsn::parse);
        Ok(match (start, Lsn::parse(saved)) {
            (Some(Ok(start)), Ok(saved)) => saved < start,
            _ => false,
        })
    }

    fn in_flight(&self) -> Option<InFlight> {
        Some(self.unseen.clone())
    }

    async fn foreign_keys(&mut self) -> Result<Vec<(String, String)>> {
        // Inside the copy's transaction: a failed query must not abort it.
        let savepoint = |e: tokio_postgres::Error| classify(&e, Stage::Snapshot, "savepoint");
        self.client
            .batch_execute("SAVEPOINT foreign_keys")
            .await
            .map_err(savepoint)?;
        let keys = catalog::foreign_keys(&self.client, self.tables.values().map(|t| &t.info)).await;
        let end = if keys.is_ok() {
            "RELEASE SAVEPOINT foreign_keys"
        } else {
            "ROLLBACK TO SAVEPOINT foreign_keys; RELEASE SAVEPOINT foreign_keys"
        };
        self.client.batch_execute(end).await.map_err(savepoint)?;
        Ok(between_collections(
            &keys?,
            self.tables
                .iter()
                .map(|(c, t)| (c.as_str(), t.info.name.as_str())),
        ))
    }

    async fn estimate_rows(&mut self, collection: &str) -> Result<Option<u64>> {
        // The planner's estimate (a count(*) reads the whole table before
        // the copy starts); counted only where the table was never analyzed.
        let t = self.table(collection)?;
        let table = t.info.qualified();
        let sql = format!(
            "SELECT CASE WHEN c.reltuples > 0 THEN c.reltuples::int8 ELSE (SELECT count(*) FROM {table}) END              FROM pg_class c WHERE c.oid = $1::text::regclass"
        );
        let n: i64 = self
            .client
            .query_one(&sql, &[&table])
            .await
            .map_err(|e| classify(&e, Stage::Snapshot, "counting rows"))?
            .get(0);
        Ok(Some(n as u64))
    }

    async fn chunk(
        &mut self,
        collection: &str,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<SnapshotChunk> {
        let t = self.table(collection)?;
        let limit_param = limit as i64;
        let rows = match after {
            None => self.client.query(&t.first, &[&limit_param]).await,
            Some(key) => {
                let parts: Vec<String> = key
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| {
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if parts.len() != t.info.key.len() {
                    return Err(ConnectorError::permanent(
                        Stage::Snapshot,
                        format!(
                            "saved progress key {key} does not fit the key of {}",
                            t.info.qualified()
                        ),
                    ));
                }
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = parts
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                params.push(&limit_param);
                self.client.query(&t.next, &params).await
            }
        }
        .map_err(|e| {
            classify(
                &e,
                Stage::Snapshot,
                &format!("reading {}", t.info.qualified()),
            )
        })?;
        let mut key_idx = Vec::with_capacity(t.info.key.len());
        for k in &t.info.key {
            let Some(i) = t.info.columns.iter().position(|c| &c.name == k) else {
                // Pages without it would not fit the key on the next read.
                return Err(ConnectorError::permanent(
                    Stage::Snapshot,
                    format!(
                        "{}: the primary key's column `{k}` is a generated column, which the copy does not read                          and logical replication does not carry; a table keyed by a generated column cannot be synced",
                        t.info.qualified()
                    ),
                ));
            };
            key_idx.push(i);
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut last_key = None;
        for row in &rows {
            let mut fields = connector_core::Fields::with_capacity(t.info.columns.len());
            for (i, col) in t.info.columns.iter().enumerate() {
                let text: Option<&str> = row.get(i);
                fields.insert(
                    col.name.clone(),
                    text.map_or(Value::Null, |s| text_to_json(col.type_oid, s)),
                );
            }
            out.push(RawChange {
                table: t.info.name.clone(),
                schema: Some(t.info.schema.clone()),
                op: RawOp::Snapshot,
                row: fields,
                before: None,
                commit_ts_ms: Some(self.unseen.as_of_ms),
                unchanged: Vec::new(),
                unchanged_from: None,
                own_write: false,
                txn: None,
            });
            last_key = Some(Value::Array(
                key_idx
                    .iter()
                    .map(|i| {
                        row.get::<_, Option<&str>>(*i)
                            .map_or(Value::Null, |s| Value::String(s.into()))
                    })
                    .collect(),
            ));
        }
        Ok(SnapshotChunk {
            done: rows.len() < limit,
            rows: out,
            last_key,
        })
    }
}
