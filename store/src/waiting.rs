//! Sink writes a foreign key refused, tried again until the row they wait
//! for lands.
//!
//! A target whose foreign keys the source lacks may be sent a child before
//! its parent: the parent was committed after the child, in another source
//! transaction; or it comes from another provider, later; or the target is
//! to delete a parent whose children's deletes are still to come. The sink
//! keeps such a refused write as a dead letter of stage [`WAITING_STAGE`],
//! and [`Store::requeue_waiting`] puts its document back on the log when it
//! is due: 2 s after the first failure, then waiting twice as long after
//! each try up to 5 minutes, for 24 hours. A try refused again is a new
//! letter that carries the first failure's time and the count ([`Tries`]).
//! After 24 hours the letter becomes an ordinary sink dead letter, left for
//! `connector dead-letters retry`.
//!
//! Crash story: the letter is deleted and its document put back on the log
//! in one store transaction. After a crash either the letter is still there
//! (tried when due) or the log entry is (the sink writes the document;
//! refused again, it is a letter again, its age starting over). Several
//! letters for one document (a later change refused too before the first
//! was tried) are tried once, together: the sink writes the document as it
//! is now, never an old image of it.

use std::collections::BTreeMap;

use rusqlite::params;
use serde_json::Value;

use connector_core::value::id_key;

use crate::dead_letters::{requeue_letter, Tries, SINK_STAGE, WAITING_STAGE};
use crate::error::Result;
use crate::sqlite::Store;

/// The wait before the first try.
const FIRST_WAIT_MS: i64 = 2_000;
/// The longest wait between two tries.
const MAX_WAIT_MS: i64 = 300_000;
/// How long a write may wait for its row before a person has to look.
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;

/// A waiting document put back on the log, with its tries so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeued {
    pub collection: String,
    pub key: String,
    pub tries: Tries,
}

/// When a letter refused `tries.attempts` times is tried next.
pub fn due_at(tries: Tries) -> i64 {
    let mut at = tries.since_ms;
    let mut wait = FIRST_WAIT_MS;
    for _ in 0..tries.attempts.max(1) {
        at += wait;
        wait = (wait * 2).min(MAX_WAIT_MS);
    }
    at
}

impl Store {
    /// Puts the documents of `provider`'s waiting letters that are due at
    /// `now` back on the log, deleting the letters, in one transaction;
    /// letters waiting for longer than [`GIVE_UP_AFTER_MS`] become ordinary
    /// sink dead letters instead. Returns what it put back.
    pub fn requeue_waiting(&mut self, provider: &str, now: i64) -> Result<Vec<Requeued>> {
        // (collection, key) → (letter ids, tries); read outside any write.
        let mut due: BTreeMap<(String, String), (Vec<i64>, Tries)> = BTreeMap::new();
        let mut expired = Vec::new();
        {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT id, at_ms, attempts, collection, record FROM dead_letters
                  WHERE provider = ?1 AND stage = ?2",
            )?;
            let mut rows = stmt.query(params![provider, WAITING_STAGE])?;
            while let Some(r) = rows.next()? {
                let (id, tries) = (
                    r.get::<_, i64>(0)?,
                    Tries {
                        since_ms: r.get(1)?,
                        attempts: r.get(2)?,
                    },
                );
                if now - tries.since_ms > GIVE_UP_AFTER_MS {
                    expired.push(id);
                    continue;
                }
                if due_at(tries) > now {
                    continue;
                }
                let collection: Option<String> = r.get(3)?;
                let record: Value = serde_json::from_str(&r.get::<_, String>(4)?)?;
                let (Some(collection), Some(doc_id)) = (collection, record.get("_id")) else {
                    expired.push(id);
                    continue;
                };
                let entry = due
                    .entry((collection, id_key(doc_id)))
                    .or_insert((Vec::new(), tries));
                entry.0.push(id);
                entry.1 = Tries {
                    since_ms: entry.1.since_ms.min(tries.since_ms),
                    attempts: entry.1.attempts.max(tries.attempts),
                };
            }
        }
        if due.is_empty() && expired.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.write()?;
        for id in &expired {
            tx.prepare_cached(
                "UPDATE dead_letters SET stage = ?2,
                        reason = reason || ' (waited 24 h for the row it references; retry it once that row is there)'
                  WHERE id = ?1",
            )?
            .execute(params![id, SINK_STAGE])?;
        }
        let mut out = Vec::with_capacity(due.len());
        for ((collection, key), (ids, tries)) in due {
            requeue_letter(&tx, provider, &collection, &key, now)?;
            for id in ids {
                tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                    .execute([id])?;
            }
            out.push(Requeued {
                collection,
                key,
                tries,
            });
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
    fn tries_wait_twice_as_long_each_time_up_to_five_minutes() {
        let at = |attempts| {
            due_at(Tries {
                since_ms: 0,
                attempts,
            })
        };
        assert_eq!(at(1), 2_000);
        assert_eq!(at(2), 6_000);
        assert_eq!(at(3), 14_000);
        let steps: Vec<i64> = (1..30).map(|a| at(a + 1) - at(a)).collect();
        assert!(steps.windows(2).all(|w| w[1] >= w[0]), "{steps:?}");
        assert_eq!(*steps.last().unwrap(), MAX_WAIT_MS);
    }
}
