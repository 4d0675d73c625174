//! Store → sinks: the change log, cursors, and what each sink must write.
//!
//! A sink task for provider Q reads the log after its cursor, asks
//! [`Store::pending_writes`] which of those documents Q does not already hold
//! (the merged document differs from Q's shadow; this includes Q's own
//! changes that lost a conflict, which must be overwritten by the winner),
//! writes them to Q in one provider transaction, and only then calls
//! [`Store::sink_committed`], which moves the cursor and Q's shadows in one
//! store transaction. A crash between the two rewrites the same documents:
//! at least once, idempotent. The sink writes the *current* document, so a
//! burst of changes to one document becomes one write.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use connector_core::SinkWrite;

use crate::dead_letters::NewDeadLetter;
use crate::error::Result;
use crate::merge::{DocState, Write};
use crate::shadow::Shadow;
use crate::sqlite::{load_shadows, parse_body, save_held, Store};
use crate::stamp::now_millis;
use crate::waiting::{any_waiting, keep_sink_letter, resolve_waiting, Kept};

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: i64,
    pub collection: String,
    pub id: Value,
    /// The id as the store keys it (canonical JSON).
    pub key: String,
    pub origin: String,
    pub write: Write,
    /// When the store committed it (ms since the epoch).
    pub at_ms: i64,
    /// The source's commit time, if the feed gave one.
    pub source_ts_ms: Option<i64>,
    /// The merged document was exactly the origin's image: the origin's
    /// own sink has nothing to write for this entry.
    pub origin_holds: bool,
}

/// A document a sink must write, with the shadow it will leave.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub write: SinkWrite,
    /// The document's id as the store keys it.
    pub key: String,
    pub shadow: Shadow,
    /// The provider's `seen` shadow when the write was planned: its commit
    /// records `held` only if the feed has shown nothing else since.
    pub seen: Option<Shadow>,
}

/// Log entries [`Store::read_log_for_sink`] scans at most per call.
pub const SINK_SCAN: i64 = 50_000;

/// What a sink reads from the log: the entries it must look at, and how far
/// it read (its cursor may move there).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRead {
    pub entries: Vec<LogEntry>,
    pub upto: i64,
}

/// Intents older than this are dropped whatever the feed shows.
const INTENT_MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// How far a provider's commit times may run behind the store's clock.
const INTENT_SKEW_MS: i64 = 60_000;

/// Log entries [`Store::compact_log`] deletes per transaction.
pub const COMPACT_SLICE: i64 = 2_000;

/// The cursor name of a provider's sink.
pub fn sink_cursor(provider: &str) -> String {
    format!("sink:{provider}")
}

impl Store {
    /// Up to `limit` log entries after `after`, in order.
    pub fn read_log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        query_entries(
            &self.conn(),
            "SELECT seq, collection, id, origin, at_ms, source_ts_ms, origin_holds, write
             FROM change_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit as i64],
        )
    }

    /// What the sink of `provider` must look at after `after`: up to
    /// `limit` entries, without their writes (a sink writes the merged
    /// document, not the write; parsing writes was a tenth of a fan-out),
    /// leaving out the provider's own changes merged exactly as it reported
    /// them (`origin_holds`: it holds them already). Scans at most
    /// [`SINK_SCAN`] entries; `upto` is how far it read, where the cursor may
    /// move even when no entry was returned. (Filtering in SQLite, an
    /// initial sync's 650,000 entries cost the origin's own sink a tenth of
    /// the fan-out's CPU to read and drop one by one.)
    pub fn read_log_for_sink(&self, provider: &str, after: i64, limit: usize) -> Result<SinkRead> {
        let conn = self.read()?;
        let end = after.saturating_add(SINK_SCAN);
        let entries = query_entries(
            &conn,
            "SELECT seq, collection, id, origin, at_ms, source_ts_ms, origin_holds
             FROM change_log
             WHERE seq > ?1 AND seq <= ?2 AND NOT (origin = ?3 AND origin_holds)
             ORDER BY seq LIMIT ?4",
            params![after, end, provider, limit as i64],
        )?;
        let upto = match entries.last() {
            Some(last) if entries.len() == limit => last.seq,
            // Every entry of the window was read (same snapshot: no entry
            // below the log's end can still appear).
            _ => {
                let log_end: i64 =
                    conn.query_row("SELECT coalesce(max(seq), 0) FROM change_log", [], |r| {
                        r.get(0)
                    })?;
                log_end.min(end).max(after)
            }
        };
        Ok(SinkRead { entries, upto })
    }

    /// The highest sequence number ever assigned (0 for an empty store).
    pub fn last_seq(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'change_log'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    pub fn cursor(&self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT seq FROM cursors WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    /// Sets a cursor (creating it). Used by subscribers other than sinks.
    pub fn set_cursor(&mut self, name: &str, seq: i64) -> Result<()> {
        let tx = self.write()?;
        upsert_cursor(&tx, name, seq)?;
        tx.commit()?;
        Ok(())
    }

    /// The documents of `entries` that `provider` does not hold yet, as they
    /// are now, one per document; `wanted` filters collections the provider
    /// does not sync.
    pub fn pending_writes(
        &self,
        provider: &str,
        entries: &[LogEntry],
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<Pending>> {
        let conn = self.read()?;
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut out = Vec::new();
        for e in entries {
            if !wanted(&e.collection) {
                continue;
            }
            let key = e.key.as_str();
            if !seen.insert((e.collection.as_str(), key)) {
                continue;
            }
            let (body, counters) = document_row(&conn, &e.collection, key)?;
            let shadow = Shadow::of_option(body.as_ref(), &counters);
            let shadows = load_shadows(&conn, provider, &e.collection, key)?;
            if shadows.left_filter {
                continue;
            }
            let up_to_date = match &shadows.held {
                Some(h) => h.covers(&shadow),
                // Unknown: written again, whatever it is.
                None if shadows.unknown => false,
                // Never seen by this provider: a deleted document needs no delete.
                None => body.is_none(),
            };
            if !up_to_date {
                out.push(Pending {
                    write: SinkWrite {
                        collection: e.collection.clone(),
                        id: e.id.clone(),
                        doc: body,
                    },
                    key: e.key.clone(),
                    shadow,
                    seen: shadows.seen,
                });
            }
        }
        Ok(out)
    }

    /// Makes writes planned ahead of time ([`Store::pending_writes`] for
    /// `entries`, while the batch before was still being written) current:
    /// the documents that batch wrote (`touched`: id keys by collection) have
    /// new `held` shadows since, so they are compared again. Without this, a
    /// document written by the batch before and deleted (or changed back)
    /// since would look already held and be skipped.
    pub fn recheck_pending(
        &self,
        provider: &str,
        entries: &[LogEntry],
        ahead: Vec<Pending>,
        touched: &HashMap<String, HashSet<String>>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<Pending>> {
        let stale = |c: &str, k: &str| touched.get(c).is_some_and(|keys| keys.contains(k));
        let again: Vec<LogEntry> = entries
            .iter()
            .filter(|e| stale(&e.collection, &e.key))
            .cloned()
            .collect();
        if again.is_empty() {
            return Ok(ahead);
        }
        let mut out: Vec<Pending> = ahead
            .into_iter()
            .filter(|p| !stale(&p.write.collection, &p.key))
            .collect();
        out.extend(self.pending_writes(provider, &again, wanted)?);
        Ok(out)
    }

    /// Records what the sink of `provider` is about to write, before it
    /// writes: the provider's feed may report those rows before
    /// [`Store::sink_committed`] records the shadows.
    pub fn record_intents(&mut self, provider: &str, writes: &[&Pending]) -> Result<()> {
        self.record(provider, writes, false)
    }

    /// As [`Store::record_intents`] for writes tried before (a failed
    /// attempt recorded them): only those whose intent is gone (expired
    /// while the write kept failing) are recorded again. Two intents for
    /// one write would outlive its echo; none, and the echo is merged as
    /// the provider's own change. One still there is dated now: its echo
    /// comes after this attempt, however long ago the first one failed
    /// (dated by that, it could expire just as the write landed).
    pub fn record_retried_intents(&mut self, provider: &str, writes: &[&Pending]) -> Result<()> {
        self.record(provider, writes, true)
    }

    fn record(&mut self, provider: &str, writes: &[&Pending], if_absent: bool) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let tx = self.write()?;
        for Pending {
            write: w,
            key,
            shadow,
            ..
        } in writes
        {
            if if_absent
                && tx
                    .prepare_cached(
                        "UPDATE sink_intents SET at_ms = ?5 WHERE rowid = (SELECT max(rowid)
                         FROM sink_intents WHERE provider = ?1 AND collection = ?2 AND id = ?3 AND shadow = ?4)",
                    )?
                    .execute(params![provider, w.collection, key, shadow.encode(), now])?
                    > 0
            {
                continue;
            }
            tx.prepare_cached(
                "INSERT INTO sink_intents (provider, collection, id, shadow, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                provider,
                w.collection,
                key,
                shadow.encode(),
                now
            ])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether an intent of `provider` for this image of the document is
    /// recorded.
    pub fn has_intent(
        &self,
        provider: &str,
        collection: &str,
        key: &str,
        shadow: &[u8],
    ) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM sink_intents
               WHERE provider = ?1 AND collection = ?2 AND id = ?3 AND shadow = ?4)",
            params![provider, collection, key, shadow],
            |r| r.get(0),
        )?)
    }

    /// How many recorded intents `provider` has (for tests and `status`).
    pub fn intent_count(&self, provider: &str) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM sink_intents WHERE provider = ?1",
            [provider],
            |r| r.get(0),
        )?)
    }

    /// Drops the intents of writes the provider refused (dead letters):
    /// never written, they have no echo, and a change of the provider's own
    /// that happened to equal one would be taken for it.
    pub fn drop_intents(&mut self, provider: &str, refused: &[&Pending]) -> Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let tx = self.write()?;
        for p in refused {
            // The newest such intent only: an older one with the same image
            // may still have an echo on its way.
            tx.prepare_cached(
                "DELETE FROM sink_intents WHERE rowid = (SELECT max(rowid) FROM sink_intents
                 WHERE provider = ?1 AND collection = ?2 AND id = ?3 AND shadow = ?4)",
            )?
            .execute(params![
                provider,
                p.write.collection,
                p.key,
                p.shadow.encode()
            ])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops intents whose echo will not come (the write failed, or the
    /// provider coalesced it): older than `max_age_ms`, and the provider's
    /// feed has since delivered a commit from a minute (clock skew) after
    /// them, so an echo would have come before it. While the feed is behind
    /// (a long copy of the provider, a backlog) they stay, or its echoes
    /// would be merged as the provider's own changes (a counter's delta
    /// counted twice); a day is the limit either way.
    pub fn expire_intents(&mut self, provider: &str, max_age_ms: i64) -> Result<u64> {
        let now = now_millis();
        let n = self.conn().execute(
            "DELETE FROM sink_intents WHERE provider = ?1
               AND (at_ms < ?3
                 OR (at_ms < ?2
                     AND at_ms + ?4 < coalesce(
                       (SELECT last_commit_ms FROM positions WHERE provider = ?1), 0)))",
            params![
                provider,
                now - max_age_ms,
                now - INTENT_MAX_AGE_MS,
                INTENT_SKEW_MS
            ],
        )?;
        Ok(n as u64)
    }

    /// Records that `provider` durably holds `written` (a written document's
    /// waiting letter goes: [`crate::waiting`]), keeps the writes it rejected
    /// as dead letters (a document's waiting letter counts one more try),
    /// and moves its sink cursor to `upto_seq`, in one transaction. Returns
    /// what became of each rejected write.
    pub fn sink_committed(
        &mut self,
        provider: &str,
        upto_seq: i64,
        written: &[Pending],
        rejected: &[NewDeadLetter],
    ) -> Result<Vec<Kept>> {
        self.sink_committed_at(provider, upto_seq, written, rejected, now_millis())
    }

    /// [`Store::sink_committed`] at the time `now` (a waiting letter refused
    /// again a day after its first refusal gives up: tests pass the day).
    pub fn sink_committed_at(
        &mut self,
        provider: &str,
        upto_seq: i64,
        written: &[Pending],
        rejected: &[NewDeadLetter],
        now: i64,
    ) -> Result<Vec<Kept>> {
        let tx = self.write()?;
        let mut kept = Vec::with_capacity(rejected.len());
        for dl in rejected {
            kept.push(keep_sink_letter(&tx, provider, dl, now)?);
        }
        if !written.is_empty() && any_waiting(&tx, provider)? {
            for p in written {
                resolve_waiting(&tx, provider, &p.write.collection, &p.key)?;
            }
        }
        for p in written {
            save_held(
                &tx,
                provider,
                &p.write.collection,
                &p.key,
                &p.shadow,
                p.seen.as_ref(),
            )?;
        }
        upsert_cursor(&tx, &sink_cursor(provider), upto_seq)?;
        tx.prepare_cached(
            "INSERT INTO provider_stats (provider, sink_writes) VALUES (?1, ?2)
             ON CONFLICT (provider) DO UPDATE SET sink_writes = sink_writes + excluded.sink_writes",
        )?
        .execute(params![provider, written.len() as i64])?;
        tx.commit()?;
        Ok(kept)
    }

    /// Whether a sink whose cursor is `cursor` has missed log entries that
    /// compaction deleted (the sink was added, or left behind, after them):
    /// it must then compare every document instead of reading the log.
    pub fn missed_compacted(&self, cursor: i64) -> Result<bool> {
        let first: Option<i64> =
            self.conn()
                .query_row("SELECT min(seq) FROM change_log", [], |r| r.get(0))?;
        let next = match first {
            Some(f) => f,
            None => self.last_seq()? + 1,
        };
        Ok(next > cursor + 1)
    }

    /// Every document after `after` (collection, id key) in that order, at
    /// most `limit`, as log entries for [`Store::pending_writes`]: the
    /// backfill of a sink that missed compacted entries.
    pub fn document_entries(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<LogEntry>> {
        let (c, i) = after.unwrap_or(("", ""));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT collection, id, updated_seq, updated_ms FROM documents
             WHERE (collection, id) > (?1, ?2) ORDER BY collection, id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![c, i, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (collection, id, seq, at_ms) = row?;
            out.push(LogEntry {
                seq,
                collection,
                id: serde_json::from_str(&id)?,
                key: id,
                origin: String::new(),
                write: crate::apply::touch_write(),
                at_ms,
                source_ts_ms: None,
                origin_holds: false,
            });
        }
        Ok(out)
    }

    /// Deletes log entries every named cursor has passed. Returns how many.
    pub fn compact_log(&mut self, cursors: &[String]) -> Result<u64> {
        let mut deleted = 0;
        loop {
            match self.compact_log_slice(cursors)? {
                0 => return Ok(deleted),
                n => deleted += n,
            }
        }
    }

    /// Deletes at most [`COMPACT_SLICE`] of the log entries every named
    /// cursor has passed (none while one of them does not exist yet), the
    /// oldest, in one transaction; 0 when none are left. A caller that
    /// loops over slices lets the other tasks of the process have the store
    /// in between (after an initial sync, one transaction deleting 650,000
    /// entries stalled every stream).
    pub fn compact_log_slice(&mut self, cursors: &[String]) -> Result<u64> {
        if cursors.is_empty() {
            return Ok(0);
        }
        let mut upto = i64::MAX;
        for name in cursors {
            upto = upto.min(self.cursor(name)?.unwrap_or(0));
        }
        let tx = self.write()?;
        let first: Option<i64> =
            tx.query_row("SELECT min(seq) FROM change_log", [], |r| r.get(0))?;
        let Some(first) = first.filter(|f| *f <= upto) else {
            return Ok(0);
        };
        let end = upto.min(first.saturating_add(COMPACT_SLICE - 1));
        let n = tx.execute("DELETE FROM change_log WHERE seq <= ?1", [end])?;
        tx.commit()?;
        Ok(n as u64)
    }
}

/// The log entries `sql` selects: columns seq, collection, id, origin,
/// at_ms, source_ts_ms, origin_holds and, optionally, write (else the
/// entries' writes are empty).
fn query_entries(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<LogEntry>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let with_write = stmt.column_count() > 7;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let key: String = r.get(2)?;
        out.push(LogEntry {
            seq: r.get(0)?,
            collection: r.get(1)?,
            id: serde_json::from_str(&key)?,
            key,
            origin: r.get(3)?,
            write: if with_write {
                serde_json::from_str(&r.get::<_, String>(7)?)?
            } else {
                crate::apply::touch_write()
            },
            at_ms: r.get(4)?,
            source_ts_ms: r.get(5)?,
            origin_holds: r.get(6)?,
        });
    }
    Ok(out)
}

fn document_row(conn: &rusqlite::Connection, collection: &str, key: &str) -> Result<DocumentRow> {
    let row: Option<(Option<String>, String)> = conn
        .prepare_cached("SELECT body, state FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        None => (None, Vec::new()),
        Some((body, state)) => {
            // Only counter names are needed here: skip parsing the whole
            // merge state when it cannot hold a counter (no `"c":` key).
            let counters = if state.contains("\"c\":") {
                counter_names(&serde_json::from_str::<DocState>(&state)?)
            } else {
                Vec::new()
            };
            (parse_body(body)?, counters)
        }
    })
}

/// A document's body (`None` when deleted) and its counter fields.
type DocumentRow = (Option<serde_json::Map<String, Value>>, Vec<String>);

fn counter_names(state: &DocState) -> Vec<String> {
    state.counter_names().map(str::to_string).collect()
}

fn upsert_cursor(tx: &rusqlite::Connection, name: &str, seq: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO cursors (name, seq, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET seq = max(seq, excluded.seq), updated_ms = excluded.updated_ms",
    )?
    .execute(params![name, seq, now_millis()])?;
    Ok(())
}
