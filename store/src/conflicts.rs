//! Conflicts: two providers changed the same field of a document without
//! either having seen the other's value.
//!
//! The merge resolves them (per field, the later stamp wins, everywhere
//! alike); this keeps them visible. A provider's change of a field is a
//! conflict when the store's value of it came from another provider, the
//! two values differ, and the value the provider changed from (its before
//! image, else the image it last showed) is not the store's: it never saw
//! that value, so one of the two changes is lost. Which one is decided by
//! the stamps as the merge decides it. A copy's rows (initial sync) are not
//! counted: two databases that held different values before they were
//! synced did not change them concurrently. Counters merge, never conflict.
//!
//! Each conflict is kept, with both values, in the same transaction as the
//! merge, for [`RETENTION_MS`] (`connector conflicts` lists them; `status`
//! counts each provider's lost changes).

use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;
use crate::sqlite::Store;

/// Conflicts are kept this long (7 days).
pub const RETENTION_MS: i64 = 7 * 24 * 3_600_000;
/// A value kept is cut to this many characters.
const VALUE_CHARS: usize = 200;

/// One field two providers changed concurrently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub at_ms: i64,
    pub collection: String,
    /// The document's id key.
    pub id: String,
    pub field: String,
    /// The provider whose value the document keeps, and that value.
    pub kept_from: String,
    pub kept: Value,
    /// The provider whose change was overwritten or discarded, and its value.
    pub lost_from: String,
    pub lost: Value,
}

fn cut(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(VALUE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Keeps `c`.
pub(crate) fn insert_conflict(tx: &Connection, c: &Conflict) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO conflicts (at_ms, collection, id, field, kept_from, kept, lost_from, lost)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        c.at_ms,
        c.collection,
        c.id,
        c.field,
        c.kept_from,
        cut(&c.kept),
        c.lost_from,
        cut(&c.lost)
    ])?;
    Ok(())
}

/// Lets conflicts past the retention go (once per batch that kept any).
pub(crate) fn prune_conflicts(tx: &Connection, now: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM conflicts WHERE at_ms < ?1")?
        .execute([now - RETENTION_MS])?;
    Ok(())
}

impl Store {
    /// The latest conflicts, newest first; of `provider` (kept or lost)
    /// when given.
    pub fn recent_conflicts(&self, provider: Option<&str>, limit: usize) -> Result<Vec<Conflict>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at_ms, collection, id, field, kept_from, kept, lost_from, lost FROM conflicts
             WHERE ?1 IS NULL OR kept_from = ?1 OR lost_from = ?1
             ORDER BY rowid DESC LIMIT ?2",
        )?;
        let value = |text: String| serde_json::from_str(&text).unwrap_or(Value::String(text));
        let rows = stmt.query_map(params![provider, limit as i64], |r| {
            Ok(Conflict {
                at_ms: r.get(0)?,
                collection: r.get(1)?,
                id: r.get(2)?,
                field: r.get(3)?,
                kept_from: r.get(4)?,
                kept: value(r.get(5)?),
                lost_from: r.get(6)?,
                lost: value(r.get(7)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many of `provider`'s changes lost a conflict since `since_ms`.
    pub fn conflicts_lost(&self, provider: &str, since_ms: i64) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM conflicts WHERE lost_from = ?1 AND at_ms >= ?2",
            params![provider, since_ms],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}
