//! The logical replication source.
//!
//! Events arrive as Begin, row messages, Commit. A transaction's changes are
//! held until its Commit and then join the batch whole (past the batch
//! size, a transaction's changes go to a temporary file instead
//! ([`connector_core::spill`]), and its Commit ends the batch: the worker
//! merges it from disk in the same store transaction); a batch is returned
//! at a transaction boundary when it holds `max` changes, when no further
//! event arrives within a short linger (so a single change is not delayed),
//! or when `max_wait` passes with nothing at all. The batch position is the
//! last Commit's end LSN.
//!
//! Restart: the store saved the end LSN of the last batch it committed, and
//! the slot was acknowledged only up to there ([`Source::committed`]). The
//! stream restarts at that LSN, and a transaction whose commit LSN is below
//! it is skipped, so nothing is applied twice.
//!
//! Slot safety: a missing slot with no saved position is a first start (the
//! publication and slot are created). A missing, invalidated (`wal_status =
//! lost`) or re-created slot (its confirmed LSN ahead of ours) while the
//! store has a position means changes were lost on the server: the provider
//! stops with that diagnosis instead of streaming over a gap.
//!
//! Quiet databases: every heartbeat interval a non-transactional logical
//! message is emitted; it comes back with an LSN that is saved and
//! acknowledged, so the slot advances and WAL does not pile up. The same
//! tick reads the slot's retained WAL for `connector status`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio_postgres::Client;
use tracing::{info, warn};

use connector_core::key_change::split_key_change;
use connector_core::spill::Spill;
use connector_core::{
    ConnectorError, ErrorKind, Fields, ProviderMapping, RawChange, RawOp, Result, Source,
    SourceBatch, Stage,
};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};

use crate::conn::{classify, classify_replication, PgConn};
use crate::options::{PgOptions, SlotLostPolicy};
use crate::pgoutput::{decode, Datum, Message, Relation};
use crate::setup;
use crate::types::text_to_json;

pub const HEARTBEAT_PREFIX: &str = "connector.heartbeat";
/// How long a batch with changes waits for more before it is returned.
const LINGER: Duration = Duration::from_millis(5);
/// Milliseconds between the Unix and PostgreSQL (2000-01-01) epochs.
const PG_EPOCH_MS: i64 = 946_684_800_000;

struct Txn {
    /// Widened to 64 bits ([`widen_xid`]).
    xid: u64,
    commit_ms: i64,
    skip: bool,
    /// Made by our own sink: it carries the sink's replication origin.
    own_write: bool,
    changes: Vec<RawChange>,
    /// The changes past [`PgSource::spill_after`], on disk.
    spill: Option<Spill>,
}

pub struct PgSource {
    client: ReplicationClient,
    sql: Client,
    slot: String,
    /// The replication origin our sink tags its transactions with.
    origin: String,
    relations: HashMap<u32, Relation>,
    /// The document id's columns per (schema, table) of the mapped tables:
    /// an update that changes them moves the row to another document.
    keys: HashMap<(String, String), Vec<String>>,
    /// The mapped tables' oids when the session opened: a Relation message
    /// for one under another name is a rename, even when no change of the
    /// table came before it in this session.
    mapped_oids: HashMap<u32, (String, String)>,
    resume: Lsn,
    txn: Option<Txn>,
    heartbeat_every: Duration,
    last_heartbeat: Instant,
    /// The mapped tables' columns when the session opened: a table's first
    /// Relation message in the session is compared with them.
    columns_at_open: HashMap<u32, HashSet<String>>,
    /// Domain type oid → its base type's (the Relation message names the
    /// domain; values are read by the base type, as the copy reads them).
    domains: HashMap<u32, u32>,
    /// The publication and the provider, for the check with each heartbeat
    /// that every mapped table is still published.
    publication: String,
    provider: String,
    /// The last streamed xid, widened to 64 bits (epoch and xid, as
    /// `xid8`); the next 32-bit xid is widened to the value nearest it.
    last_xid: u64,
    /// The most changes of one transaction held in memory (the batch size):
    /// past it, the transaction goes on disk until its commit.
    spill_after: usize,
}

/// Widens a 32-bit xid (as pgoutput's Begin carries it) to the 64-bit
/// `xid8` nearest `near`. Every xid the server still streams is within
/// 2^31 of any other (wraparound protection), so nearest is exact.
pub fn widen_xid(xid: u32, near: u64) -> u64 {
    let epoch = near >> 32;
    [epoch.wrapping_sub(1), epoch, epoch + 1]
        .into_iter()
        .map(|e| (e << 32) | u64::from(xid))
        .min_by_key(|full| full.abs_diff(near))
        .unwrap_or(u64::from(xid))
}

async fn slot_state(sql: &Client, slot: &str) -> Result<Option<(Option<String>, Option<Lsn>)>> {
    let rows = sql
        .query(
            "SELECT wal_status::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| classify(&e, Stage::Source, "reading pg_replication_slots"))?;
    Ok(rows.first().map(|r| {
        let lsn: Option<String> = r.get(1);
        (r.get(0), lsn.and_then(|l| Lsn::parse(&l).ok()))
    }))
}

/// The diagnosis of a lost slot under the configured policy. With
/// `resnapshot` the stale slot is dropped first, so the copy that follows
/// creates a fresh one with an exported snapshot.
async fn slot_lost(
    sql: &Client,
    o: &PgOptions,
    resume: &str,
    why: &str,
    provider: &str,
) -> ConnectorError {
    let slot = &o.slot;
    let gap = format!(
        "replication slot {slot} {why}, while the store is at LSN {resume}: the changes in between can no longer be streamed"
    );
    match o.on_slot_lost {
        SlotLostPolicy::Stop => ConnectorError::permanent(
            Stage::Source,
            format!(
                "{gap}. Policy `stop`: drop the slot if it is still there (`SELECT pg_drop_replication_slot('{slot}')`), \
                 then copy again with `connector initial-sync --provider {provider} --restart`, which creates it; \
                 or set on_slot_lost=resnapshot"
            ),
        ),
        SlotLostPolicy::Resnapshot => {
            let dropped = sql
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[slot],
                )
                .await;
            match dropped {
                Err(e) => classify(&e, Stage::Source, &format!("{gap}; dropping the stale slot")),
                Ok(_) => ConnectorError::new(
                    ErrorKind::NeedsSnapshot,
                    Stage::Source,
                    format!("{gap}. Policy `resnapshot`: copying every collection again from a new slot"),
                ),
            }
        }
    }
}

impl PgSource {
    pub async fn open(
        conn: &PgConn,
        o: &PgOptions,
        mapping: &ProviderMapping,
        resume: Option<String>,
    ) -> Result<PgSource> {
        let sql = conn.connect().await?;
        let provider = mapping.provider().to_string();
        let resume_lsn = match &resume {
            Some(text) => Some(Lsn::parse(text).map_err(|e| {
                ConnectorError::permanent(
                    Stage::Source,
                    format!("the store's position `{text}` is not an LSN: {e}"),
                )
            })?),
            None => None,
        };
        match (slot_state(&sql, &o.slot).await?, &resume) {
            (None, None) => {
                for line in setup::run(&sql, mapping, o, false, true).await? {
                    if !line.starts_with("--") {
                        info!(provider = %provider, "setup: {line}");
                    }
                }
            }
            (None, Some(r)) => return Err(slot_lost(&sql, o, r, "does not exist", &provider).await),
            (Some((Some(status), _)), Some(r)) if status == "lost" => {
                return Err(slot_lost(
                    &sql,
                    o,
                    r,
                    "was invalidated (max_slot_wal_keep_size)",
                    &provider,
                )
                .await)
            }
            (Some((_, Some(confirmed))), Some(r)) if resume_lsn.is_some_and(|l| l < confirmed) => {
                let why = format!("was re-created (it starts at {confirmed})");
                return Err(slot_lost(&sql, o, r, &why, &provider).await);
            }
            _ => {}
        }
        // A server whose WAL ends before the store's position (restored
        // from a backup, or failed over to a standby that lagged, with the
        // slot kept): its new commits take LSNs below the position, and
        // streaming from there would skip them as already merged.
        if let (Some(r), Some(resume)) = (&resume, resume_lsn) {
            let flushed: String = sql
                .query_one(
                    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                     ELSE pg_current_wal_flush_lsn() END::text",
                    &[],
                )
                .await
                .map_err(|e| classify(&e, Stage::Source, "reading the server's WAL position"))?
                .get(0);
            if Lsn::parse(&flushed).is_ok_and(|end| end < resume) {
                let why = format!(
                    "is on a server whose WAL ends at {flushed}, before the store's position \
                     (restored or failed over to a server that was behind): its commits from there would be skipped"
                );
                return Err(slot_lost(&sql, o, r, &why, &provider).await);
            }
        }
        let mut keys = HashMap::new();
        let mut mapped_oids = HashMap::new();
        let mut columns_at_open = HashMap::new();
        for (collection, info) in setup::mapped_tables(&sql, mapping, o).await? {
            mapped_oids.insert(info.oid, (info.schema.clone(), info.name.clone()));
            columns_at_open.insert(
                info.oid,
                info.columns.iter().map(|c| c.name.clone()).collect(),
            );
            // The document id's columns, where the table has them all (an
            // id a transform builds is not among them): the primary key.
            let id = mapping
                .key_columns(&collection)
                .filter(|id| id.iter().all(|c| info.column(c).is_some()))
                .unwrap_or_else(|| info.key.clone());
            if !info.old_image_names(&id) {
                warn!(table = %info.name, id = ?id, replica_identity = %info.replica_identity,
                    "the table's replica identity does not hold the document id: an update of the id alone leaves the old document behind (connector setup sets REPLICA IDENTITY FULL)");
            }
            keys.insert((info.schema.clone(), info.name.clone()), id);
        }
        unpublished(&sql, o, &keys, &provider).await?;
        let start = resume_lsn.unwrap_or(Lsn(0));
        let primary = conn.primary().await?;
        let mut client =
            ReplicationClient::connect(primary.replication(&o.slot, &o.publication, start))
                .await
                .map_err(|e| classify_replication(&e, Stage::Source, "starting replication"))?;
        client.wait_started().await.map_err(|e| {
            classify_replication(
                &e,
                Stage::Source,
                &format!("starting replication on slot {}", o.slot),
            )
        })?;
        let next_xid: i64 = sql
            .query_one(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8",
                &[],
            )
            .await
            .map_err(|e| classify(&e, Stage::Source, "reading the next transaction id"))?
            .get(0);
        let domains = crate::catalog::domain_bases(&sql).await?;
        info!(provider = %provider, slot = %o.slot, from = %start, "streaming");
        Ok(PgSource {
            client,
            sql,
            slot: o.slot.clone(),
            origin: crate::sink::origin_name(o),
            relations: HashMap::new(),
            keys,
            mapped_oids,
            resume: start,
            txn: None,
            heartbeat_every: o.heartbeat,
            last_heartbeat: Instant::now(),
            publication: o.publication.clone(),
            provider: provider.to_string(),
            domains,
            columns_at_open,
            last_xid: next_xid as u64,
            spill_after: usize::MAX,
        })
    }

    async fn heartbeat(&mut self) -> Result<Value> {
        self.last_heartbeat = Instant::now();
        self.still_published().await?;
        self.sql
            .execute(
                "SELECT pg_logical_emit_message(false, $1, '')",
                &[&HEARTBEAT_PREFIX],
            )
            .await
            .map_err(|e| classify(&e, Stage::Source, "emitting a heartbeat"))?;
        let row = self
            .sql
            .query_opt(
                "SELECT wal_status::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8,
                        safe_wal_size::int8, current_setting('max_slot_wal_keep_size')
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| classify(&e, Stage::Source, "reading the slot's WAL"))?;
        Ok(match row {
            Some(r) => json!({
                "slot": self.slot,
                "wal_status": r.get::<_, Option<String>>(0),
                "retained_wal_bytes": r.get::<_, Option<i64>>(1),
                "safe_wal_size": r.get::<_, Option<i64>>(2),
                "max_slot_wal_keep_size": r.get::<_, String>(3),
            }),
            None => json!({"slot": self.slot, "wal_status": "missing"}),
        })
    }

    /// Stops the provider when a mapped table left the publication while
    /// it streams (dropped and created again, `ALTER PUBLICATION … DROP
    /// TABLE`): PostgreSQL then sends nothing for it, and the heartbeats
    /// moved the slot past its changes with the provider green. By oid, so
    /// a renamed table is still the published one. Before the heartbeat's
    /// message: the slot does not pass a change the check would miss.
    async fn still_published(&self) -> Result<()> {
        let published: HashSet<u32> = self
            .sql
            .query(
                "SELECT c.oid::int8 FROM pg_publication_tables t
                   JOIN pg_namespace n ON n.nspname = t.schemaname
                   JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
                  WHERE t.pubname = $1",
                &[&self.publication],
            )
            .await
            .map_err(|e| classify(&e, Stage::Source, "reading the publication"))?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        let mut missing: Vec<String> = self
            .mapped_oids
            .iter()
            .filter(|(oid, _)| !published.contains(*oid))
            .map(|(_, (s, t))| format!("{s}.{t}"))
            .collect();
        if !missing.is_empty() {
            missing.sort();
            return Err(unpublished_error(
                &missing,
                &self.publication,
                &self.provider,
            ));
        }
        // A mapped name that another table has taken (`RENAME TO x_old;
        // CREATE TABLE x`): not in the publication, its changes never come.
        let (oids, names): (Vec<i64>, Vec<String>) = self
            .mapped_oids
            .iter()
            .map(|(oid, (s, t))| (*oid as i64, crate::conn::qualified(s, t)))
            .unzip();
        let taken = self
            .sql
            .query(
                "SELECT n FROM unnest($1::int8[], $2::text[]) AS m(oid, n)
                  WHERE to_regclass(n) IS NOT NULL AND to_regclass(n)::oid::int8 <> m.oid",
                &[&oids, &names],
            )
            .await
            .map_err(|e| classify(&e, Stage::Source, "reading the mapped tables' names"))?;
        if let Some(row) = taken.first() {
            let name: String = row.get(0);
            return Err(ConnectorError::permanent(
                Stage::Source,
                format!(
                    "{name} is not the table mapped under that name when streaming began (replaced after a \
                     rename, or dropped and created again): run `connector setup --provider {p}`, then \
                     `connector initial-sync --provider {p} --collection <its collection>`",
                    p = self.provider
                ),
            ));
        }
        Ok(())
    }

    fn row(&self, rel: &Relation, datums: &[Datum]) -> (Fields, Vec<String>) {
        let mut fields = Fields::with_capacity(rel.columns.len());
        let mut unchanged = Vec::new();
        for (col, d) in rel.columns.iter().zip(datums) {
            match d {
                Datum::Null => {
                    fields.insert(col.name.clone(), Value::Null);
                }
                Datum::UnchangedToast => unchanged.push(col.name.clone()),
                Datum::Text(bytes) | Datum::Binary(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    let ty = self.domains.get(&col.type_oid).copied();
                    fields.insert(
                        col.name.clone(),
                        text_to_json(ty.unwrap_or(col.type_oid), &text),
                    );
                }
            }
        }
        (fields, unchanged)
    }

    fn change(
        &self,
        table: &(String, String),
        op: RawOp,
        row: Fields,
        before: Option<Fields>,
        unchanged: Vec<String>,
        commit_ms: i64,
    ) -> RawChange {
        RawChange {
            table: table.1.clone(),
            schema: Some(table.0.clone()),
            op,
            row,
            before,
            commit_ts_ms: Some(commit_ms),
            unchanged,
            unchanged_from: None,
            own_write: self.txn.as_ref().is_some_and(|t| t.own_write),
            txn: self.txn.as_ref().map(|t| t.xid),
        }
    }

    /// Turns one row message into changes for the open transaction.
    fn on_message(&mut self, data: &[u8]) -> Result<()> {
        let msg =
            decode(data).map_err(|e| ConnectorError::permanent(Stage::Source, e.to_string()))?;
        let Some(txn) = &self.txn else {
            if let Message::Relation(rel) = msg {
                self.relation(rel)?;
            }
            return Ok(());
        };
        let (skip, commit_ms) = (txn.skip, txn.commit_ms);
        let mut out = Vec::new();
        match msg {
            Message::Relation(rel) => self.relation(rel)?,
            Message::Origin { name, .. } => {
                let own = name == self.origin;
                if let Some(txn) = &mut self.txn {
                    txn.own_write = own;
                }
            }
            _ if skip => {}
            Message::Insert { relation, new } => {
                if let Some((rel, table)) = self.mapped(relation) {
                    let (row, unchanged) = self.row(rel, &new);
                    out.push(self.change(&table, RawOp::Insert, row, None, unchanged, commit_ms));
                }
            }
            Message::Update {
                relation,
                old,
                key_only,
                new,
            } => {
                if let Some((rel, table)) = self.mapped(relation) {
                    let (row, unchanged) = self.row(rel, &new);
                    let old = old.map(|o| self.row(rel, &o).0);
                    let key = self.keys.get(&table).map_or(&[][..], Vec::as_slice);
                    // A key-only old image ('K') has NULL for every column
                    // but the key: no before image, only the old key.
                    let (before, key_image) = if key_only { (None, old) } else { (old, None) };
                    let update =
                        self.change(&table, RawOp::Update, row, before, unchanged, commit_ms);
                    out.extend(split_key_change(update, key, key_image.as_ref()));
                }
            }
            Message::Delete { relation, old, .. } => {
                if let Some((rel, table)) = self.mapped(relation) {
                    let (row, _) = self.row(rel, &old);
                    out.push(self.change(&table, RawOp::Delete, row, None, Vec::new(), commit_ms));
                }
            }
            Message::Truncate { relations, .. } => {
                for oid in relations {
                    if let Some((_, table)) = self.mapped(oid) {
                        out.push(self.change(
                            &table,
                            RawOp::Truncate,
                            Fields::new(),
                            None,
                            Vec::new(),
                            commit_ms,
                        ));
                    }
                }
            }
            Message::Type { .. } | Message::Other(_) => {}
        }
        if let Some(txn) = &mut self.txn {
            txn.changes.extend(out);
            if txn.changes.len() > self.spill_after {
                if txn.spill.is_none() {
                    info!(provider = %self.provider, xid = txn.xid, changes = txn.changes.len(),
                        "a transaction larger than the batch size; holding it on disk until its commit");
                    txn.spill = Some(Spill::new()?);
                }
                if let Some(spill) = &mut txn.spill {
                    spill.extend(txn.changes.drain(..))?;
                }
            }
        }
        Ok(())
    }

    /// Keeps a table's description. A mapped table is known by its oid
    /// (read when the session opens): renamed under the stream, its changes
    /// go on to its collection under the name the mapping knows, and a
    /// stream that resumes before a rename the mapping already follows
    /// finds the table under its old name too. (Stopping at the rename, as
    /// first done, left a resumed stream no way on but a fresh copy.) The
    /// next start needs the mapping to name the table as it is now: said
    /// once here, and `setup`/the source refuse a mapped name that no
    /// table has.
    fn relation(&mut self, rel: Relation) -> Result<()> {
        if let Some(known) = self.mapped_oids.get(&rel.oid) {
            // Columns gone from a mapped table (dropped, renamed): an id
            // column's loss makes every change a dead letter, so the
            // provider stops before this transaction; another's is told.
            let has = |c: &str| rel.columns.iter().any(|col| col.name == c);
            let id = self.keys.get(known).map_or(&[][..], Vec::as_slice);
            // Against the table's last description in this session, not the
            // catalog: a stream resumed before a rename shows the old
            // columns first, and stopping there would stop for ever.
            let had = |c: &str| match self.relations.get(&rel.oid) {
                Some(r) => r.columns.iter().any(|col| col.name == c),
                None => self
                    .columns_at_open
                    .get(&rel.oid)
                    .is_some_and(|cols| cols.contains(c)),
            };
            if let Some(gone) = id.iter().find(|c| had(c) && !has(c)) {
                return Err(ConnectorError::permanent(
                    Stage::Source,
                    format!(
                        "id column `{gone}` of mapped table {}.{} is gone (dropped or renamed): its changes \
                         cannot be synced; point the mapping at the column as it is now, run `connector setup`, \
                         and start again (the stream resumes before this change)",
                        known.0, known.1
                    ),
                ));
            }
            if let Some(before) = self.relations.get(&rel.oid) {
                for col in before.columns.iter().filter(|c| !has(&c.name)) {
                    warn!(table = %format!("{}.{}", known.0, known.1), column = %col.name,
                        "a column of a mapped table is gone (dropped or renamed): the documents keep its last values, and the other databases theirs");
                }
            }
        }
        if let Some((ns, name)) = self.mapped_oids.get(&rel.oid) {
            let seen = self
                .relations
                .get(&rel.oid)
                .map(|r| (r.namespace.as_str(), r.name.as_str()));
            let now = (rel.namespace.as_str(), rel.name.as_str());
            if now != (ns.as_str(), name.as_str()) && seen != Some(now) {
                warn!(
                    table = %format!("{ns}.{name}"), streams_as = %format!("{}.{}", rel.namespace, rel.name),
                    "a mapped table streams under another name (renamed): its changes are synced as before; \
                     point the mapping at its name before the next start"
                );
            }
        } else if self
            .keys
            .contains_key(&(rel.namespace.clone(), rel.name.clone()))
        {
            // Another table under a mapped name (dropped and created again,
            // or `RENAME TO x_old; CREATE TABLE x`): its rows are not the
            // copied ones (a DROP streams no deletes), and beside a renamed
            // mapped table both would land in one collection.
            return Err(ConnectorError::permanent(
                Stage::Source,
                format!(
                    "{}.{} is not the table mapped under that name when streaming began (dropped and \
                     created again, or replaced after a rename): run `connector setup --provider {p}`, then \
                     `connector initial-sync --provider {p} --collection <its collection>` \
                     (the stream resumes before this change)",
                    rel.namespace,
                    rel.name,
                    p = self.provider
                ),
            ));
        }
        self.relations.insert(rel.oid, rel);
        Ok(())
    }

    /// A mapped table's description and the name the mapping knows it by
    /// (by oid: every mapped table existed when the session opened).
    fn mapped(&self, oid: u32) -> Option<(&Relation, (String, String))> {
        Some((
            self.relations.get(&oid)?,
            self.mapped_oids.get(&oid)?.clone(),
        ))
    }
}

/// Stops the provider when a mapped table is not in the publication (it
/// was dropped and created again, or mapped after `setup` ran): its changes
/// would never be streamed, and the slot would move past them.
async fn unpublished(
    sql: &Client,
    o: &PgOptions,
    mapped: &HashMap<(String, String), Vec<String>>,
    provider: &str,
) -> Result<()> {
    let published: HashSet<(String, String)> = sql
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&o.publication],
        )
        .await
        .map_err(|e| classify(&e, Stage::Source, "reading the publication"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut missing: Vec<String> = mapped
        .keys()
        .filter(|t| !published.contains(*t))
        .map(|(s, t)| format!("{s}.{t}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    Err(unpublished_error(&missing, &o.publication, provider))
}

fn unpublished_error(missing: &[String], publication: &str, provider: &str) -> ConnectorError {
    ConnectorError::permanent(
        Stage::Source,
        format!(
            "mapped table(s) {} not in publication {publication} (dropped and created again, or mapped after setup): \
             their changes are not streamed; run `connector setup --provider {provider}`, then \
             `connector initial-sync --provider {provider} --collection <c>` for each of their collections \
             (changes made while they were out of the publication are only in the tables)",
            missing.join(", "),
        ),
    )
}

#[async_trait]
impl Source for PgSource {
    async fn next_batch(&mut self, max: usize, max_wait: Duration) -> Result<SourceBatch> {
        self.spill_after = max.max(1);
        let started = Instant::now();
        let mut batch = SourceBatch::default();
        let mut first_commit: Option<Instant> = None;
        loop {
            if self.txn.is_none() && self.last_heartbeat.elapsed() >= self.heartbeat_every {
                batch.status = Some(self.heartbeat().await?);
            }
            let wait = match (first_commit, self.txn.is_some()) {
                (_, true) => Duration::from_secs(1),
                (Some(t), false) => LINGER.saturating_sub(t.elapsed()),
                (None, false) => max_wait.saturating_sub(started.elapsed()).min(
                    self.heartbeat_every
                        .saturating_sub(self.last_heartbeat.elapsed()),
                ),
            };
            let event = match tokio::time::timeout(wait, self.client.recv()).await {
                Err(_) if self.txn.is_some() => continue,
                Err(_) => {
                    if first_commit.is_some() || started.elapsed() >= max_wait {
                        return Ok(batch);
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(classify_replication(
                        &e,
                        Stage::Source,
                        "replication stream",
                    ))
                }
                Ok(Ok(None)) => {
                    return Err(ConnectorError::transient(
                        Stage::Source,
                        "the replication stream ended",
                    ))
                }
                Ok(Ok(Some(ev))) => ev,
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => {
                    self.last_xid = widen_xid(xid, self.last_xid);
                    self.txn = Some(Txn {
                        xid: self.last_xid,
                        commit_ms: commit_time_micros / 1000 + PG_EPOCH_MS,
                        skip: final_lsn < self.resume,
                        own_write: false,
                        changes: Vec::new(),
                        spill: None,
                    });
                }
                ReplicationEvent::XLogData { data, .. } => self.on_message(&data)?,
                ReplicationEvent::Commit { end_lsn, .. } => {
                    if let Some(txn) = self.txn.take() {
                        if let (false, Some(mut spill)) = (txn.skip, txn.spill) {
                            // It ends the batch, after the changes before it.
                            spill.extend(txn.changes)?;
                            info!(provider = %self.provider, changes = spill.len(), xid = txn.xid,
                                "a large transaction committed; merging it from disk");
                            batch.spilled = Some(spill);
                            batch.position = Some(end_lsn.to_string());
                            return Ok(batch);
                        }
                        if !txn.skip {
                            batch.changes.extend(txn.changes);
                            batch.position = Some(end_lsn.to_string());
                            first_commit.get_or_insert_with(Instant::now);
                        }
                    }
                    if batch.changes.len() >= max {
                        return Ok(batch);
                    }
                }
                ReplicationEvent::Message {
                    transactional: false,
                    lsn,
                    prefix,
                    ..
                } if prefix == HEARTBEAT_PREFIX => {
                    if self.txn.is_none() && lsn >= self.resume {
                        batch.position = Some(lsn.to_string());
                        return Ok(batch);
                    }
                }
                ReplicationEvent::StoppedAt { .. } => return Ok(batch),
                ReplicationEvent::KeepAlive { .. } | ReplicationEvent::Message { .. } => {}
            }
        }
    }

    async fn committed(&mut self, position: &str) -> Result<()> {
        match Lsn::parse(position) {
            Ok(lsn) => {
                self.client.update_applied_lsn(lsn);
                Ok(())
            }
            Err(e) => {
                warn!(%position, error = %e, "not an LSN; not acknowledged");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::widen_xid;

    #[test]
    fn xids_widen_to_the_epoch_nearest_the_last_one() {
        let epoch = |e: u64, xid: u32| (e << 32) | u64::from(xid);
        assert_eq!(widen_xid(700, epoch(0, 650)), 700);
        assert_eq!(widen_xid(600, epoch(0, 650)), 600);
        // Across a wraparound, both ways.
        assert_eq!(widen_xid(5, epoch(2, u32::MAX - 10)), epoch(3, 5));
        assert_eq!(
            widen_xid(u32::MAX - 10, epoch(3, 5)),
            epoch(2, u32::MAX - 10)
        );
        // Epoch 0 never widens below zero.
        assert_eq!(widen_xid(u32::MAX - 10, 5), epoch(0, u32::MAX - 10));
    }
}
