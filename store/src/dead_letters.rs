//! Dead letters: records that could not be synced, kept with the reason.
//!
//! A source-side dead letter (mapping rejected the record, a counter was not
//! a number) is written in the same transaction as the batch it came from,
//! so the source position never moves past a record that was not either
//! merged or kept here. A sink-side dead letter (the provider rejected the
//! write: a constraint, a type) records the document; retrying it makes the
//! sink write the document again.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use connector_core::value::id_key;

use crate::apply::requeue;
use crate::error::Result;
use crate::sqlite::{Store, LEFT_FILTER};
use crate::stamp::now_millis;

/// The stage of a write the provider refused.
pub const SINK_STAGE: &str = "sink";
/// The stage of a write a foreign key refused: retried by the sink until
/// the row it waits for lands ([`crate::waiting`]).
pub const WAITING_STAGE: &str = "sink-waiting";

/// A record to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub collection: Option<String>,
    /// Pipeline stage (`mapping`, `store`, `sink`, …).
    pub stage: String,
    pub field: Option<String>,
    pub reason: String,
    /// The raw record (source side) or `{"_id": …, "doc": …}` (sink side).
    pub record: Value,
}

/// A kept record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub at_ms: i64,
    pub provider: String,
    pub collection: Option<String>,
    pub stage: String,
    pub field: Option<String>,
    pub reason: String,
    pub record: Value,
    pub attempts: i64,
}

pub(crate) fn insert_dead_letter(
    tx: &Connection,
    provider: &str,
    dl: &NewDeadLetter,
    now: i64,
) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO dead_letters (at_ms, provider, collection, stage, field, reason, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        now,
        provider,
        dl.collection,
        dl.stage,
        dl.field,
        dl.reason,
        serde_json::to_string(&dl.record)?
    ])?;
    Ok(tx.last_insert_rowid())
}

const COLUMNS: &str = "id, at_ms, provider, collection, stage, field, reason, record, attempts";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(DeadLetter, String)> {
    Ok((
        DeadLetter {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            provider: r.get(2)?,
            collection: r.get(3)?,
            stage: r.get(4)?,
            field: r.get(5)?,
            reason: r.get(6)?,
            record: Value::Null,
            attempts: r.get(8)?,
        },
        r.get(7)?,
    ))
}

impl Store {
    /// Keeps one record (its own transaction; source batches use `apply_source`).
    pub fn add_dead_letter(&mut self, provider: &str, dl: &NewDeadLetter) -> Result<i64> {
        let tx = self.write()?;
        let id = insert_dead_letter(&tx, provider, dl, now_millis())?;
        tx.commit()?;
        Ok(id)
    }

    /// Dead letters, oldest first, optionally of one provider.
    pub fn dead_letters(&self, provider: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM dead_letters WHERE ?1 IS NULL OR provider = ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![provider, limit as i64], from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut dl, record) = row?;
            dl.record = serde_json::from_str(&record)?;
            out.push(dl);
        }
        Ok(out)
    }

    pub fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?;
        Ok(match row {
            Some((mut dl, record)) => {
                dl.record = serde_json::from_str(&record)?;
                Some(dl)
            }
            None => None,
        })
    }

    pub fn dead_letter_count(&self, provider: Option<&str>) -> Result<u64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM dead_letters WHERE ?1 IS NULL OR provider = ?1",
            [provider],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Removes dead letters by id. Returns how many existed.
    pub fn discard_dead_letters(&mut self, ids: &[i64]) -> Result<u64> {
        let tx = self.write()?;
        let mut n = 0;
        for id in ids {
            n += tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])? as u64;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Notes a failed retry: the new reason, one more attempt.
    pub fn dead_letter_failed_again(&mut self, id: i64, reason: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE dead_letters SET reason = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, reason],
        )?;
        Ok(())
    }

    /// Retries a sink-side dead letter: forgets what `provider` is thought to
    /// hold of the document and puts it back on the log, so the sink writes
    /// it again; the dead letter is removed in the same transaction.
    pub fn requeue_for_sink(&mut self, dead_letter: &DeadLetter) -> Result<bool> {
        let (Some(collection), Some(id)) = (&dead_letter.collection, dead_letter.record.get("_id"))
        else {
            return Ok(false);
        };
        let tx = self.write()?;
        requeue_letter(
            &tx,
            &dead_letter.provider,
            collection,
            &id_key(id),
            now_millis(),
        )?;
        tx.execute("DELETE FROM dead_letters WHERE id = ?1", [dead_letter.id])?;
        tx.commit()?;
        Ok(true)
    }
}

/// Forgets what `provider` is thought to hold of the document and puts it
/// back on the log: its sink writes it whatever it is, a delete too (one
/// the provider never held excepted: no shadow, nothing to delete).
pub(crate) fn requeue_letter(
    tx: &Connection,
    provider: &str,
    collection: &str,
    key: &str,
    now: i64,
) -> Result<()> {
    // (Not over a left-filter mark: the fleet does not write that row.)
    tx.prepare_cached(
        "UPDATE shadows SET held = x''
          WHERE provider = ?1 AND collection = ?2 AND id = ?3 AND held IS NOT ?4",
    )?
    .execute(params![provider, collection, key, LEFT_FILTER])?;
    requeue(tx, collection, key, now)?;
    Ok(())
}
