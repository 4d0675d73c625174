//! The journal poller.
//!
//! Each poll reads, in one statement each, the journal rows after the
//! highest sequence read (at most a batch, in sequence order) and the rows
//! whose sequences are open gaps ([`crate::journal`]). Rows become
//! [`RawChange`]s: the new image (insert, update) or the old image (delete),
//! the old image as the before image (counters need it), the trigger's time
//! as the commit time; values are normalized by column type so every
//! database gives the same JSON. A batch that came back full is followed by
//! the next poll at once; otherwise the next poll waits for the interval.
//!
//! Crash/restart: the position (highest sequence and open gaps) is saved by
//! the store with the batch's changes; journal rows are deleted only in
//! [`Source::committed`], after the store's commit is durable, and only
//! rows that were read. A restart re-reads whatever was not merged, and the
//! store's shadows make a repeated change a no-op.
//!
//! A missing journal table (dropped, or `setup` never run) stops the
//! provider with that diagnosis: polling cannot tell what it missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use odbc_api::IntoParameter;
use serde_json::Value;
use tracing::warn;

use connector_core::clock::now_millis;
use connector_core::key_change::split_key_change;
use connector_core::{
    ConnectorError, ErrorKind, Fields, ProviderMapping, RawChange, RawOp, Result, Source,
    SourceBatch, Stage,
};

use crate::catalog::{integer, mapped_tables, query_text, query_value, TableInfo};
use crate::conn::{classify, is_missing_table, OdbcConn, Session};
use crate::dialect::{Dialect, TriggerSpec};
use crate::image::decode_image;
use crate::journal::{row_time, JournalPosition};
use crate::options::OdbcOptions;

/// Journal rows are pruned in steps of this many sequence numbers.
const PRUNE_STEP: i64 = 20_000;
/// Open gap ranges are re-read this many per statement.
const GAPS_PER_QUERY: usize = 200;

pub struct OdbcSource {
    session: Session,
    d: &'static dyn Dialect,
    journal: String,
    provider: String,
    tables: HashMap<String, TableInfo>,
    /// The document id's columns per table: an update that changes them
    /// moves the row to another document.
    keys: HashMap<String, Vec<String>>,
    position: JournalPosition,
    gap_timeout: Duration,
    last_poll: Option<Instant>,
    full: bool,
    last_details: Option<Instant>,
}

/// How often the journal's size is read for `connector status`.
const DETAILS_EVERY: Duration = Duration::from_secs(10);

/// One journal row as read.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRow {
    pub seq: i64,
    pub table: String,
    pub op: String,
    pub new_image: Option<String>,
    pub old_image: Option<String>,
    pub changed_ms: Option<i64>,
}

impl OdbcSource {
    pub async fn open(
        conn: &OdbcConn,
        o: &OdbcOptions,
        mapping: &Arc<ProviderMapping>,
        resume: Option<String>,
    ) -> Result<OdbcSource> {
        let d = o.dialect.dialect();
        let provider = mapping.provider().to_string();
        let position = match &resume {
            Some(text) => JournalPosition::parse(text).ok_or_else(|| {
                ConnectorError::permanent(
                    Stage::Source,
                    format!("the store's position `{text}` is not a journal position"),
                )
            })?,
            None => JournalPosition::default(),
        };
        let mut session = open_session(conn, d, Stage::Source).await?;
        let mapping_tables = {
            let o = o.clone();
            let m = mapping.clone();
            session
                .run(move |c| {
                    let tables = mapped_tables(c, d, &m, &o)?;
                    let journal =
                        crate::catalog::table_info(c, d, o.schema.as_deref(), &o.journal)?;
                    Ok((tables, journal.is_some()))
                })
                .await?
        };
        let (tables, journal_exists) = mapping_tables;
        let keys = tables
            .iter()
            .map(|(collection, t)| {
                let id = mapping.key_columns(collection).unwrap_or_default();
                (t.name.clone(), id)
            })
            .collect();
        let journal = d.qualified(o.schema.as_deref(), &o.journal);
        if !journal_exists {
            return Err(missing_journal(&journal, &provider));
        }
        Ok(OdbcSource {
            session,
            d,
            journal,
            provider,
            keys,
            tables: tables
                .into_iter()
                .map(|(_, t)| (t.name.clone(), t))
                .collect(),
            position,
            gap_timeout: o.gap_timeout,
            last_poll: None,
            full: false,
            last_details: None,
        })
    }

    /// The rows after the position and the rows of its gaps (at most a
    /// batch of those), and whether every gap was read in full: only then
    /// may an empty one be taken for a rollback.
    async fn poll(&mut self, max: usize) -> Result<(Vec<JournalRow>, bool)> {
        let d = self.d;
        let cols = format!("seq, {}", TriggerSpec::COLUMNS);
        let after = d.limit(
            &format!(
                "SELECT {cols} FROM {} WHERE seq > ? ORDER BY seq",
                self.journal
            ),
            max,
        );
        let gaps: Vec<(i64, i64)> = self.position.gap_ranges().collect();
        let journal = self.journal.clone();
        let seq = self.position.seq;
        let result = self
            .session
            .run(move |c| {
                let mut rows = Vec::new();
                let mut complete = true;
                // At most a batch of gap rows too (a transaction of 50,000
                // rows committing late): the rest stay gaps, read next.
                for chunk in gaps.chunks(GAPS_PER_QUERY) {
                    let room = max.saturating_sub(rows.len());
                    if room == 0 {
                        complete = false;
                        break;
                    }
                    let ranges = vec!["seq BETWEEN ? AND ?"; chunk.len()].join(" OR ");
                    let sql = d.limit(
                        &format!("SELECT {cols} FROM {journal} WHERE {ranges} ORDER BY seq"),
                        room,
                    );
                    let params: Vec<String> = chunk
                        .iter()
                        .flat_map(|(first, last)| [first.to_string(), last.to_string()])
                        .collect();
                    let read = query_text(c, &sql, &params, Stage::Source, "polling the journal")?;
                    complete &= read.len() < room;
                    rows.extend(read);
                }
                rows.extend(query_text(
                    c,
                    &after,
                    &[seq.to_string()],
                    Stage::Source,
                    "polling the journal",
                )?);
                Ok((rows, complete))
            })
            .await;
        let (rows, complete) = self.journal_result(result)?;
        let rows = rows.into_iter().map(journal_row).collect::<Result<_>>()?;
        Ok((rows, complete))
    }

    /// A statement on the journal failing because the journal is gone (in a
    /// poll, a prune or a size query) says so, with the fix.
    fn journal_result<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(e) if is_missing_table(&e) => Err(missing_journal(&self.journal, &self.provider)),
            other => other,
        }
    }

    /// The journal's size and the poller's place in it, for `status`; an
    /// error when the journal's numbering went back below the position (see
    /// [`journal_restarted`]).
    async fn details(&mut self) -> Result<Value> {
        let sql = format!("SELECT COUNT(*), MAX(seq) FROM {}", self.journal);
        let result = self
            .session
            .run(move |c| query_text(c, &sql, &[], Stage::Source, "reading the journal's size"))
            .await;
        let rows = self.journal_result(result)?;
        let cell = |i: usize| {
            rows.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .and_then(|v| integer(&v))
        };
        let seq = self.position.seq;
        if let Some(max) = cell(1).filter(|max| *max < seq) {
            return Err(journal_restarted(
                &self.journal,
                &self.provider,
                &format!("its highest sequence is {max}, the store has read up to {seq}"),
            ));
        }
        // The prune keeps the row at the position: empty, it started over.
        if cell(1).is_none() && seq > 0 {
            return Err(journal_restarted(
                &self.journal,
                &self.provider,
                &format!(
                    "it is empty, and the store has read up to {seq} (that row is always kept)"
                ),
            ));
        }
        if let Some(mark) = self.position.mark {
            let journal = self.journal.clone();
            let result = self
                .session
                .run(move |c| row_time(c, &journal, seq, Stage::Source))
                .await;
            let why = match self.journal_result(result)? {
                Some(at) if at != mark => Some(format!(
                    "its row {seq}, the last the store read, is now another row, of time {at} instead of {mark}"
                )),
                None => Some(format!(
                    "its row {seq}, the last the store read (always kept), is gone \
                     (or another provider prunes this journal: give each its own `journal=`)"
                )),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(journal_restarted(&self.journal, &self.provider, &why));
            }
        }
        Ok(serde_json::json!({
            "journal": self.journal,
            "journal_rows": cell(0),
            "journal_max_seq": cell(1),
            "read_up_to": self.position.seq,
            "open_gaps": self.position.open_gaps(),
        }))
    }

    fn change(&self, row: &JournalRow) -> Result<RawChange> {
        let op = match row.op.trim() {
            "I" => RawOp::Insert,
            "U" => RawOp::Update,
            "D" => RawOp::Delete,
            // A statement trigger's row (PostgreSQL): the table emptied.
            "T" => RawOp::Truncate,
            other => {
                return Err(ConnectorError::permanent(
                    Stage::Source,
                    format!("journal row {}: unknown operation `{other}`", row.seq),
                ))
            }
        };
        let info = self.tables.get(&row.table);
        let decode = |image: &Option<String>| -> Result<Option<Fields>> {
            image
                .as_deref()
                .map(|text| decode_image(text, info))
                .transpose()
                .map_err(|e| {
                    ConnectorError::bad_record(
                        Stage::Source,
                        format!("journal row {} ({}): {e}", row.seq, row.table),
                    )
                })
        };
        let new = decode(&row.new_image)?;
        let old = decode(&row.old_image)?;
        let (fields, before) = match op {
            RawOp::Delete => (old.clone().unwrap_or_default(), old),
            RawOp::Truncate => (Fields::new(), None),
            _ => (new.unwrap_or_default(), old),
        };
        Ok(RawChange {
            table: row.table.clone(),
            schema: info.and_then(|t| t.schema.clone()),
            op,
            row: fields,
            before,
            commit_ts_ms: row.changed_ms,
            unchanged: Vec::new(),
            unchanged_from: None,
            own_write: false,
            txn: Some(row.seq as u64),
        })
    }
}

/// Opens a connection and runs the dialect's session settings.
pub(crate) async fn open_session(
    conn: &OdbcConn,
    d: &'static dyn Dialect,
    stage: Stage,
) -> Result<Session> {
    let mut session = Session::open(conn, d.name(), stage).await?;
    let setup = d.session_setup();
    if !setup.is_empty() {
        session
            .run(move |c| {
                for sql in &setup {
                    c.execute(sql, (), None)
                        .map_err(|e| classify(&e, stage, "configuring the session"))?;
                }
                Ok(())
            })
            .await?;
    }
    Ok(session)
}

fn missing_journal(journal: &str, provider: &str) -> ConnectorError {
    ConnectorError::permanent(
        Stage::Source,
        format!(
            "the change journal {journal} does not exist (dropped, or setup never ran): changes made \
             meanwhile cannot be recovered from it; run `connector setup --provider {provider}`, then \
             `connector initial-sync --provider {provider} --restart`"
        ),
    )
}

/// Pruning keeps the highest row read, so the journal's highest number is
/// never below the position the store holds, and the row at the position
/// keeps the change time the poller saw (`JournalPosition::mark`), unless
/// the journal started over: dropped and set up again, or restored from a
/// backup. Its new rows carry numbers the poller has passed and would
/// never read (and a prune would delete them).
fn journal_restarted(journal: &str, provider: &str, why: &str) -> ConnectorError {
    ConnectorError::permanent(
        Stage::Source,
        format!(
            "the change journal {journal} started its numbering over ({why}): it was set up \
             again or restored, and changes made meanwhile may be missing; run `connector \
             initial-sync --provider {provider} --restart` (it copies every table and starts \
             reading the journal anew)"
        ),
    )
}

fn journal_row(cells: Vec<Option<String>>) -> Result<JournalRow> {
    let mut it = cells.into_iter();
    let mut next = || it.next().flatten();
    let bad = |what: &str| ConnectorError::permanent(Stage::Source, format!("journal row: {what}"));
    let seq = next()
        .and_then(|s| integer(&s))
        .ok_or_else(|| bad("no sequence"))?;
    Ok(JournalRow {
        seq,
        table: next().ok_or_else(|| bad("no table"))?,
        op: next().ok_or_else(|| bad("no operation"))?,
        new_image: next(),
        old_image: next(),
        changed_ms: next().and_then(|s| integer(&s)),
    })
}

#[async_trait]
impl Source for OdbcSource {
    async fn next_batch(&mut self, max: usize, max_wait: Duration) -> Result<SourceBatch> {
        if let (false, Some(last)) = (self.full, self.last_poll) {
            let due = last + max_wait;
            tokio::time::sleep_until(due.into()).await;
        }
        self.last_poll = Some(Instant::now());
        // Before the poll, at a session's start and every 10 s: a journal
        // that started over is told before its rows are read as new ones.
        let status = if self
            .last_details
            .is_none_or(|t| t.elapsed() >= DETAILS_EVERY)
        {
            self.last_details = Some(Instant::now());
            Some(self.details().await?)
        } else {
            None
        };
        let (rows, gaps_read) = self.poll(max.max(1)).await?;
        // Full: a batch of new rows, or of gap rows (more may be waiting).
        let new = rows.iter().filter(|r| r.seq > self.position.seq).count();
        self.full = new >= max.max(1) || rows.len() - new >= max.max(1);
        let now = now_millis();
        let before = self.position.clone();
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let apply = self.position.read(&seqs, now);
        if let Some(top) = rows.iter().find(|r| r.seq == self.position.seq) {
            self.position.mark = top.changed_ms;
        }
        let mut changes = Vec::with_capacity(rows.len());
        for (row, apply) in rows.iter().zip(apply) {
            if !apply {
                continue;
            }
            match self.change(row) {
                Ok(c) if c.op == RawOp::Update => {
                    let key = self.keys.get(&c.table).map_or(&[][..], Vec::as_slice);
                    changes.extend(split_key_change(c, key, None));
                }
                Ok(c) => changes.push(c),
                Err(e) if e.kind == ErrorKind::BadRecord => {
                    // Undecodable: hand it to the mapping as a row it will
                    // reject, so it reaches the dead letters with its text.
                    warn!(provider = %self.provider, error = %e, "undecodable journal row");
                    let mut raw = Fields::new();
                    raw.insert("journal_seq".into(), Value::from(row.seq));
                    raw.insert("decode_error".into(), Value::from(e.message.clone()));
                    raw.insert(
                        "image".into(),
                        Value::from(row.new_image.clone().or(row.old_image.clone())),
                    );
                    changes.push(RawChange {
                        table: row.table.clone(),
                        schema: None,
                        op: RawOp::Insert,
                        row: raw,
                        before: None,
                        commit_ts_ms: row.changed_ms,
                        unchanged: Vec::new(),
                        unchanged_from: None,
                        own_write: false,
                        txn: Some(row.seq as u64),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        // Only gaps read in full this time: a gap a batch could not hold
        // may have committed rows still unread (a long transaction that
        // committed while the worker was down), which expiry would lose
        // and the prune then delete.
        let expired = if gaps_read {
            self.position
                .expire(now, self.gap_timeout.as_millis() as i64)
        } else {
            Vec::new()
        };
        if let Some((first, _)) = expired.first() {
            let count: i64 = expired.iter().map(|(a, b)| b - a + 1).sum();
            warn!(provider = %self.provider, count, first,
                "journal sequence numbers never committed within gap_timeout_s; taken for rolled-back transactions");
        }
        let position = (self.position != before).then(|| self.position.encode());
        Ok(SourceBatch {
            changes,
            position,
            status,
            spilled: None,
        })
    }

    async fn committed(&mut self, position: &str) -> Result<()> {
        let Some(p) = JournalPosition::parse(position) else {
            return Ok(());
        };
        let upto = p.prune_upto();
        if upto <= 0 {
            return Ok(());
        }
        // The row at `upto` stays: the highest number read is always in
        // the journal, which tells a journal that started over. In steps of
        // PRUNE_STEP numbers, each its own statement: a backlog held back by
        // an open gap (minutes of rows with their images) in one DELETE can
        // fill DB2's transaction log and fail every time.
        let journal = self.journal.clone();
        let result = self
            .session
            .run(move |c| {
                let lowest = query_value(
                    c,
                    &format!("SELECT MIN(seq) FROM {journal}"),
                    &[],
                    Stage::Source,
                    "pruning the journal",
                )?
                .and_then(|t| integer(&t));
                let delete = format!("DELETE FROM {journal} WHERE seq < ?");
                let mut below = lowest.unwrap_or(upto);
                while below < upto {
                    below = (below + PRUNE_STEP).min(upto);
                    let bound = below.to_string();
                    c.execute(&delete, &[bound.as_str().into_parameter()][..], None)
                        .map_err(|e| classify(&e, Stage::Source, "pruning the journal"))?;
                }
                Ok(())
            })
            .await;
        match self.journal_result(result) {
            Err(e) if e.kind == ErrorKind::Transient => {
                // The rows stay until the next batch's prune; reading goes on.
                warn!(provider = %self.provider, error = %e, "pruning the journal failed; retried after the next batch");
                Ok(())
            }
            other => other,
        }
    }
}
