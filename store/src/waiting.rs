//! Sink writes a foreign key refused, tried again until the row they wait
//! for lands.
//!
//! A target whose foreign keys the source lacks may be sent a child before
//! its parent: the parent was committed after the child, in another source
//! transaction; or it comes from another provider, later; or the target is
//! to delete a parent whose children's deletes are still to come. Such a
//! refusal is kept as one dead letter per document, of stage
//! [`WAITING_STAGE`], with the time of its next try (`due_ms`): 2 s after
//! the first refusal, then twice as long after each refusal, up to 5
//! minutes. [`Store::requeue_waiting`] puts due documents back on the log
//! (the sink then writes them whatever it believes the provider holds);
//! the sink's commit deletes the letter of a document it wrote (looked up
//! only while the provider has letters waiting), or counts one more try.
//! Refused more than 24 hours after its first refusal, a letter is tried
//! once more the longest wait later (after a stop of a day the first try
//! comes at once, before the parent in another database's backlog is
//! merged), and refused then it becomes an ordinary sink dead letter, left
//! for `connector dead-letters retry`; a refusal
//! for any other reason replaces it at once.
//!
//! Crash story: the letter stays until the sink's commit of a write of its
//! document deletes it (one transaction with the write's shadows), and a
//! document put back on the log is written by the sink whatever it is. A
//! crash in between leaves the letter, tried again when due; the write is
//! idempotent.

use rusqlite::{params, Connection, OptionalExtension};

use connector_core::value::id_key;

use crate::dead_letters::{
    insert_dead_letter, requeue_letter, NewDeadLetter, SINK_STAGE, WAITING_STAGE,
};
use crate::error::Result;
use crate::sqlite::{Store, LEFT_FILTER};

/// The wait after the first refusal.
const FIRST_WAIT_MS: i64 = 2_000;
/// The longest wait between two tries.
const MAX_WAIT_MS: i64 = 300_000;
/// How long a write may wait for its row before a person has to look.
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// The end of a waiting letter's reason once it is on its last try.
const LAST_TRY: &str = " (waited 24 h: one more try)";
/// Documents put back on the log per call: one store transaction.
const REQUEUE_AT_MOST: i64 = 2_000;

/// The wait after a letter's `attempts`-th refusal.
pub fn wait_after(attempts: i64) -> i64 {
    let doublings = (attempts - 1).clamp(0, 16) as u32;
    (FIRST_WAIT_MS << doublings).min(MAX_WAIT_MS)
}

/// What became of a refused write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// A dead letter a person has to look at.
    DeadLetter,
    /// Waits for a row it references, for the first time.
    Waits,
    /// Its document waited already: one more try counted.
    WaitsAgain,
}

/// What [`Store::requeue_waiting`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Requeued {
    /// Documents put back on the log, as (collection, id key).
    pub documents: Vec<(String, String)>,
    /// Letters with nothing left to write (their documents deleted and
    /// never held there, out of the provider's filter, or no longer
    /// synced): gone.
    pub moot: Vec<(String, String)>,
}

/// The document a sink letter is about: (collection, id key).
fn document_of(dl: &NewDeadLetter) -> Option<(&str, String)> {
    Some((dl.collection.as_deref()?, id_key(dl.record.get("_id")?)))
}

/// Keeps a sink's refused write, in the sink's commit. A foreign key's
/// refusal of a document that waits already counts one more try on its
/// letter; any other refusal replaces the document's waiting letter.
pub(crate) fn keep_sink_letter(
    tx: &Connection,
    provider: &str,
    dl: &NewDeadLetter,
    now: i64,
) -> Result<Kept> {
    let Some((collection, key)) = document_of(dl) else {
        insert_dead_letter(tx, provider, dl, now)?;
        return Ok(Kept::DeadLetter);
    };
    let waiting = letter_of(tx, provider, WAITING_STAGE, collection, &key)?;
    let record = serde_json::to_string(&dl.record)?;
    if dl.stage == WAITING_STAGE {
        // Refused a day after the first refusal: one more try, the longest
        // wait later (after a stop of a day the first try comes at once,
        // before the other databases' backlogs, its parent among them, are
        // merged); refused then too, a person's now.
        if let Some(w) = waiting
            .as_ref()
            .filter(|w| now - w.at_ms > GIVE_UP_AFTER_MS)
        {
            if !w.reason.ends_with(LAST_TRY) {
                tx.prepare_cached(
                    "UPDATE dead_letters SET reason = ?2 || ?5, record = ?3, attempts = ?4, due_ms = ?6
                      WHERE id = ?1",
                )?
                .execute(params![w.id, dl.reason, record, w.attempts + 1, LAST_TRY, now + MAX_WAIT_MS])?;
                return Ok(Kept::WaitsAgain);
            }
            tx.prepare_cached(
                "UPDATE dead_letters SET stage = ?2, due_ms = NULL, record = ?4, attempts = ?5,
                        reason = ?3 || ' (waited 24 h for the row it references; retry it once that row is there)'
                  WHERE id = ?1",
            )?
            .execute(params![w.id, SINK_STAGE, dl.reason, record, w.attempts + 1])?;
            return Ok(Kept::DeadLetter);
        }
        if let Some(w) = waiting {
            tx.prepare_cached(
                "UPDATE dead_letters SET reason = ?2, record = ?3, attempts = ?4, due_ms = ?5
                  WHERE id = ?1",
            )?
            .execute(params![
                w.id,
                dl.reason,
                record,
                w.attempts + 1,
                now + wait_after(w.attempts + 1)
            ])?;
            return Ok(Kept::WaitsAgain);
        }
    } else {
        if let Some(w) = waiting {
            tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                .execute([w.id])?;
        }
        // One letter per document: a refusal again (each change of the
        // document, each backfill) counts a try on it, with the newest
        // reason; one letter per refusal grew by a thousand a day.
        if let Some(w) = letter_of(tx, provider, &dl.stage, collection, &key)? {
            tx.prepare_cached(
                "UPDATE dead_letters SET reason = ?2, record = ?3, field = ?4, attempts = ?5 WHERE id = ?1",
            )?
            .execute(params![w.id, dl.reason, record, dl.field, w.attempts + 1])?;
            return Ok(Kept::DeadLetter);
        }
    }
    tx.prepare_cached(
        "INSERT INTO dead_letters (at_ms, provider, collection, stage, field, reason, record, doc_key, due_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        now,
        provider,
        collection,
        dl.stage,
        dl.field,
        dl.reason,
        record,
        key,
        (dl.stage == WAITING_STAGE).then(|| now + wait_after(1))
    ])?;
    Ok(if dl.stage == WAITING_STAGE {
        Kept::Waits
    } else {
        Kept::DeadLetter
    })
}

/// A document's letter of one stage (there is at most one).
struct Letter {
    id: i64,
    attempts: i64,
    at_ms: i64,
    reason: String,
}

fn letter_of(
    tx: &Connection,
    provider: &str,
    stage: &str,
    collection: &str,
    key: &str,
) -> Result<Option<Letter>> {
    Ok(tx
        .prepare_cached(
            "SELECT id, attempts, at_ms, reason FROM dead_letters
              WHERE provider = ?1 AND stage = ?2 AND collection = ?3 AND doc_key = ?4",
        )?
        .query_row(params![provider, stage, collection, key], |r| {
            Ok(Letter {
                id: r.get(0)?,
                attempts: r.get(1)?,
                at_ms: r.get(2)?,
                reason: r.get(3)?,
            })
        })
        .optional()?)
}

/// Whether `provider`'s sink would write nothing for a document put back
/// on the log: deleted (or gone) and never held there, or out of the
/// provider's filter (the fleet leaves its row alone).
fn nothing_to_write(tx: &Connection, provider: &str, collection: &str, key: &str) -> Result<bool> {
    let present: Option<bool> = tx
        .prepare_cached("SELECT body IS NOT NULL FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, key], |r| r.get(0))
        .optional()?;
    let held: Option<Option<Vec<u8>>> = tx
        .prepare_cached(
            "SELECT held FROM shadows WHERE provider = ?1 AND collection = ?2 AND id = ?3",
        )?
        .query_row(params![provider, collection, key], |r| r.get(0))
        .optional()?;
    Ok(match held {
        None => present != Some(true),
        Some(held) => held.as_deref() == Some(LEFT_FILTER),
    })
}

/// Whether `provider` has any letter of a document its sink refused,
/// waiting or not (then the sink's commit looks for the written documents'
/// letters; else it costs nothing).
pub(crate) fn any_waiting(tx: &Connection, provider: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE provider = ?1 AND stage IN (?2, ?3)
               AND doc_key IS NOT NULL)",
        )?
        .query_row(params![provider, WAITING_STAGE, SINK_STAGE], |r| r.get(0))?)
}

/// The sink wrote a document it had refused before (it waited, or its
/// value was fixed): the letter goes, the database holds the document now.
pub(crate) fn resolve_waiting(
    tx: &Connection,
    provider: &str,
    collection: &str,
    key: &str,
) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM dead_letters WHERE provider = ?1 AND doc_key = ?4 AND collection = ?3
           AND stage IN (?2, ?5)",
    )?
    .execute(params![
        provider,
        WAITING_STAGE,
        collection,
        key,
        SINK_STAGE
    ])?;
    Ok(())
}

impl Store {
    /// Puts the documents of `provider`'s waiting letters that are due at
    /// `now` back on the log (at most a few thousand, oldest due first),
    /// and deletes those the sink would write nothing
    /// for (see [`Requeued::moot`]; `syncs`: whether the provider syncs a
    /// collection); one transaction. A letter put back stays until the
    /// sink's commit resolves it or counts another try (which sets its
    /// next due time); until then it is due again only after the longest
    /// wait, so a sink far behind is not sent the document again and again.
    pub fn requeue_waiting(
        &mut self,
        provider: &str,
        now: i64,
        syncs: impl Fn(&str) -> bool,
    ) -> Result<Requeued> {
        let any_due: bool = self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM dead_letters
                WHERE provider = ?1 AND stage = ?2 AND due_ms <= ?3)",
            params![provider, WAITING_STAGE, now],
            |r| r.get(0),
        )?;
        if !any_due {
            return Ok(Requeued::default());
        }
        let tx = self.write()?;
        // (id, collection, doc_key)
        type Due = (i64, Option<String>, Option<String>);
        let due: Vec<Due> = tx
            .prepare_cached(
                "SELECT id, collection, doc_key FROM dead_letters
                  WHERE provider = ?1 AND stage = ?2 AND due_ms <= ?3
                  ORDER BY due_ms LIMIT ?4",
            )?
            .query_map(
                params![provider, WAITING_STAGE, now, REQUEUE_AT_MOST],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Requeued::default();
        for (id, collection, key) in due {
            let (Some(collection), Some(key)) = (collection, key) else {
                continue;
            };
            if !syncs(&collection) || nothing_to_write(&tx, provider, &collection, &key)? {
                tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                    .execute([id])?;
                out.moot.push((collection, key));
                continue;
            }
            requeue_letter(&tx, provider, &collection, &key, now)?;
            tx.prepare_cached("UPDATE dead_letters SET due_ms = ?2 WHERE id = ?1")?
                .execute(params![id, now + MAX_WAIT_MS])?;
            out.documents.push((collection, key));
        }
        tx.commit()?;
        Ok(out)
    }

    /// How many of `provider`'s dead letters wait for a row they reference.
    pub fn waiting_count(&self, provider: &str) -> Result<u64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM dead_letters WHERE provider = ?1 AND stage = ?2",
            params![provider, WAITING_STAGE],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wait_is_twice_the_last_up_to_five_minutes() {
        assert_eq!(wait_after(1), 2_000);
        assert_eq!(wait_after(2), 4_000);
        assert_eq!(wait_after(3), 8_000);
        let waits: Vec<i64> = (1..300).map(wait_after).collect();
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), MAX_WAIT_MS);
    }
}
