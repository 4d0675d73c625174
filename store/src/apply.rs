//! Source → store: merging a provider's changes, effectively once.
//!
//! One call, one SQLite transaction: the changes of a batch (several source
//! transactions, never a part of one), their dead letters, the counters in
//! `provider_stats` and the source position all commit together. After a
//! crash the position is either before the batch (it is read again from the
//! source, and merging is idempotent) or after it (nothing to redo).
//!
//! A change the provider itself marks as written by our sink
//! ([`DocChange::own_write`], e.g. a PostgreSQL replication origin) is an
//! echo by definition: nothing is merged. Its image becomes the origin's
//! `seen` shadow; if it is also the store's document, `held` stays what the
//! sink last wrote, else (the store has moved on, e.g. our write overwrote a
//! change of the provider's own that arrives before it) the provider holds
//! the image and the document is put back on the log for its sink. Otherwise,
//! per change, against the origin's shadows (see the schema: `seen` is the
//! provider's own feed history, `held` what it is believed to hold):
//! 1. an image equal to a write its sink recorded (an intent) is our echo;
//!    an image equal to `seen` is a no-op: both dropped (and if the store's
//!    document differs from what the provider now holds, the document is
//!    put back on the log so the sink corrects it);
//! 2. the changed fields are found by diffing the new image against the
//!    before image where the feed has one, else against `seen` (the
//!    previous image in the same feed: the true before image); a document
//!    the store does not hold (new, or deleted) takes every field;
//! 3. counter fields become the origin's new cumulative contribution
//!    (`old + (new − old)`, old from the before image, the shadow, or the
//!    store's current value), never a plain overwrite;
//! 4. the write is stamped with the source commit time, bumped just past any
//!    stamp the origin had provably seen (its own earlier write in the same
//!    millisecond, another provider's value its shadow shows it held, a
//!    delete it had applied), so a causally later write never loses to what
//!    it overwrote;
//! 5. merged, appended to the change log, and the origin's shadow becomes the
//!    new image.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde_json::{Map, Value};

use connector_core::value::{counter_number, fingerprint, id_key};
use connector_core::{DocChange, DocOp};

use crate::conflicts::{insert_conflict, prune_conflicts, Conflict};
use crate::dead_letters::{insert_dead_letter, NewDeadLetter};
use crate::error::{Result, StoreError};
use crate::merge::{DocState, Write, WriteKind};
use crate::shadow::Shadow;
use crate::sqlite::{
    load_body, load_shadows, load_state, mark_left_filter, save_own_echo, save_seen, save_state,
    Store,
};
use crate::stamp::{base_hlc, now_millis, Stamp};

/// One source batch, as mapped by the worker.
#[derive(Debug, Default)]
pub struct SourceApply<'a> {
    pub changes: &'a [DocChange],
    /// Records the mapping rejected, saved with the batch.
    pub dead_letters: &'a [NewDeadLetter],
    /// `(collection, id)` of the origin's upserts its collection filter
    /// left out: the origin's row left the filter (or never passed it), so
    /// no sink writes it any more; the origin's next change that passes
    /// the filter (or its delete) merges as usual and lifts that.
    pub left_filter: &'a [(String, Value)],
    /// The source position after the batch.
    pub position: Option<&'a str>,
    /// Save the position under this name instead of the origin's (initial
    /// sync keeps its per-collection progress this way).
    pub position_name: Option<&'a str>,
    /// Records read from the feed (including filtered and rejected ones).
    pub received: u64,
    /// Records the collection filters left out.
    pub filtered: u64,
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    pub echoes: u64,
    pub dead_letters: u64,
    /// Fields this batch changed that another provider had changed
    /// concurrently ([`crate::conflicts`]).
    pub conflicts: u64,
    /// The log sequence of the last write, if any was appended.
    pub last_seq: Option<i64>,
}

impl Store {
    /// Merges a batch from provider `origin`; see the module docs.
    pub fn apply_source(&mut self, origin: &str, batch: SourceApply<'_>) -> Result<Applied> {
        self.apply_source_parts(origin, |merge| merge(batch))
    }

    /// Merges a batch handed over in parts, in order, in one store
    /// transaction: a source transaction too large to hold in memory is
    /// read back from disk a part at a time ([`connector_core::spill`]).
    /// `parts` gives each part to `merge`; the position of the last part
    /// that has one is saved. An error from `parts` rolls everything back.
    pub fn apply_source_parts<E: From<StoreError>>(
        &mut self,
        origin: &str,
        parts: impl FnOnce(&mut dyn FnMut(SourceApply<'_>) -> Result<()>) -> Result<(), E>,
    ) -> Result<Applied, E> {
        let now = now_millis();
        let tx = self.write()?;
        let mut out = Applied::default();
        let mut max_commit: Option<i64> = None;
        // Without pending sink writes to this provider, no image can be our
        // echo by intent: skip the per-change lookups.
        let intents: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM sink_intents WHERE provider = ?1)")
            .and_then(|mut s| s.query_row([origin], |r| r.get(0)))
            .map_err(StoreError::from)?;
        let (mut received, mut filtered) = (0u64, 0u64);
        let mut position: Option<(String, Option<String>)> = None;
        parts(&mut |part: SourceApply<'_>| {
            merge_part(&tx, origin, &part, now, intents, &mut out, &mut max_commit)?;
            received += part.received;
            filtered += part.filtered;
            if let Some(p) = part.position {
                position = Some((p.to_string(), part.position_name.map(str::to_string)));
            }
            Ok(())
        })?;
        if let Some((position, name)) = &position {
            tx.prepare_cached(
                "INSERT INTO positions (provider, position, updated_ms, last_commit_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (provider) DO UPDATE SET position = excluded.position,
                   updated_ms = excluded.updated_ms,
                   last_commit_ms = coalesce(excluded.last_commit_ms, positions.last_commit_ms)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    name.as_deref().unwrap_or(origin),
                    position,
                    now,
                    max_commit
                ])
            })
            .map_err(StoreError::from)?;
        }
        tx.prepare_cached(
            "INSERT INTO provider_stats (provider, received, applied, echoes, filtered, last_change_ms, last_source_lag_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (provider) DO UPDATE SET
               received = received + excluded.received,
               applied = applied + excluded.applied,
               echoes = echoes + excluded.echoes,
               filtered = filtered + excluded.filtered,
               last_change_ms = coalesce(excluded.last_change_ms, last_change_ms),
               last_source_lag_ms = coalesce(excluded.last_source_lag_ms, last_source_lag_ms)",
        )
        .and_then(|mut s| {
            s.execute(params![
                origin,
                received as i64,
                out.applied as i64,
                out.echoes as i64,
                filtered as i64,
                (out.applied > 0).then_some(now),
                max_commit.map(|c| (now - c).max(0)),
            ])
        })
        .map_err(StoreError::from)?;
        if out.conflicts > 0 {
            prune_conflicts(&tx, now)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Merges already-stamped writes (from another store, or a test),
    /// logging those that changed something. The replication path.
    pub fn merge_writes(&mut self, writes: &[(String, Value, Write)]) -> Result<u64> {
        let now = now_millis();
        let tx = self.write()?;
        let mut changed = 0;
        for (collection, id, write) in writes {
            let key = id_key(id);
            let mut state = load_state(&tx, collection, &key)?;
            if state.apply(write) {
                let seq = append_log(&tx, collection, &key, write, now, None, false)?;
                let body = state.materialize();
                save_state(&tx, collection, &key, &state, body.as_ref(), seq, now)?;
                changed += 1;
            }
        }
        tx.commit()?;
        Ok(changed)
    }
}

/// Merges one part of a source batch into the open transaction `tx`.
fn merge_part(
    tx: &Connection,
    origin: &str,
    part: &SourceApply<'_>,
    now: i64,
    intents: bool,
    out: &mut Applied,
    max_commit: &mut Option<i64>,
) -> Result<()> {
    for change in part.changes {
        *max_commit = (*max_commit).max(change.commit_ts_ms);
        if change.op == DocOp::Truncate {
            let stamp = Stamp::new(base_hlc(change.commit_ts_ms, now), origin);
            if let Some((n, seq)) = truncate(tx, origin, change, stamp, now)? {
                out.applied += n;
                out.last_seq = Some(seq);
            }
            continue;
        }
        if change.own_write {
            let key = id_key(&change.id);
            let body = load_body(tx, &change.collection, &key)?;
            let (image, holds) = match change.op {
                DocOp::Delete => (Shadow::Deleted, origin_holds(body.as_ref(), change)),
                _ if change.unchanged.is_empty() => (
                    Shadow::of(&change.fields, &change.counters),
                    origin_holds(body.as_ref(), change),
                ),
                // Columns our write left out came back unchanged (TOAST):
                // the provider holds there what it held before.
                _ => {
                    let seen = load_shadows(tx, origin, &change.collection, &key)?.seen;
                    let image = Shadow::of(&change.fields, &change.counters)
                        .keeping_unchanged(seen.as_ref(), &change.unchanged);
                    let doc = Shadow::of_option(body.as_ref(), &change.counters);
                    let holds = image.agrees_with(&doc);
                    (image, holds)
                }
            };
            if holds {
                save_own_echo(tx, origin, &change.collection, &key, &image)?;
            } else {
                // The store moved on (a change of the provider's own that
                // our write overwrote, or a newer one): the provider holds
                // this image; its sink must correct it. Unless the image
                // the provider showed before differed from the document
                // in the same fields: our write came back changed by the
                // target itself (a numeric of a smaller scale, char
                // padding, a trigger stamping now()), and writing again
                // would come back changed again, for ever. (A change of
                // another provider's is on the log: written anyway.)
                // Safe because a change of the provider's own either
                // merged exactly (then `seen` is the document: no
                // disagreement, and a stale echo after it has one) or
                // is on the log for its own sink; and an echo that
                // re-queues sets `seen`, so the next stale one may
                // pass: the document is on the log already.
                let before = load_shadows(tx, origin, &change.collection, &key)?.seen;
                let doc = Shadow::of_option(body.as_ref(), &change.counters);
                let again =
                    before.is_some_and(|s| s.disagreements(&doc) == image.disagreements(&doc));
                save_seen(tx, origin, &change.collection, &key, &image)?;
                if !again {
                    out.last_seq = Some(requeue(tx, &change.collection, &key, now)?);
                }
            }
            out.echoes += 1;
            continue;
        }
        match plan_change(tx, origin, change, now, intents)? {
            Plan::Echo { key, image, touch } => {
                out.echoes += 1;
                save_seen(tx, origin, &change.collection, &key, &image)?;
                if touch {
                    // The provider holds something else than the store:
                    // wake its sink for this document.
                    out.last_seq = Some(requeue(tx, &change.collection, &key, now)?);
                }
            }
            Plan::Reject(dl) => {
                insert_dead_letter(tx, origin, &dl, now)?;
                out.dead_letters += 1;
            }
            Plan::Write {
                key,
                mut state,
                write,
                shadow,
                conflicts,
            } => {
                for conflict in &conflicts {
                    insert_conflict(tx, conflict)?;
                }
                out.conflicts += conflicts.len() as u64;
                state.apply(&write);
                let body = state.materialize();
                let seq = append_log(
                    tx,
                    &change.collection,
                    &key,
                    &write,
                    now,
                    change.commit_ts_ms,
                    origin_holds(body.as_ref(), change),
                )?;
                save_state(
                    tx,
                    &change.collection,
                    &key,
                    &state,
                    body.as_ref(),
                    seq,
                    now,
                )?;
                save_seen(tx, origin, &change.collection, &key, &shadow)?;
                out.applied += 1;
                out.last_seq = Some(seq);
            }
        }
    }
    for dl in part.dead_letters {
        insert_dead_letter(tx, origin, dl, now)?;
        out.dead_letters += 1;
    }
    for (collection, id) in part.left_filter {
        mark_left_filter(tx, origin, collection, &id_key(id))?;
    }
    Ok(())
}

/// Whether the merged document `body` is the origin's image in `change`:
/// then the origin holds it and its sink can pass the log entry by.
fn origin_holds(body: Option<&Map<String, Value>>, change: &DocChange) -> bool {
    match (body, change.op) {
        (None, DocOp::Delete) => true,
        // Equal on every field both have (see `Shadow::agrees_with`).
        (Some(doc), DocOp::Upsert) => {
            change.unchanged.is_empty()
                && change
                    .fields
                    .iter()
                    .all(|(k, v)| doc.get(k).is_none_or(|d| d == v))
        }
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn append_log(
    tx: &Connection,
    collection: &str,
    key: &str,
    write: &Write,
    now: i64,
    source_ts: Option<i64>,
    origin_holds: bool,
) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO change_log (collection, id, origin, write, at_ms, source_ts_ms, origin_holds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        collection,
        key,
        write.stamp.origin,
        serde_json::to_string(write)?,
        now,
        source_ts,
        origin_holds
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Tombstones every live document of the collection at the truncate's
/// stamp: rows written after it survive, as after a real TRUNCATE.
fn truncate(
    tx: &Connection,
    origin: &str,
    c: &DocChange,
    stamp: Stamp,
    now: i64,
) -> Result<Option<(u64, i64)>> {
    let keys: Vec<String> = tx
        .prepare("SELECT id FROM documents WHERE collection = ?1 AND body IS NOT NULL")?
        .query_map([&c.collection], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut last = None;
    for key in &keys {
        let mut state = load_state(tx, &c.collection, key)?;
        // Per row, as a DELETE of it would be stamped.
        let seen = load_shadows(tx, origin, &c.collection, key)?.seen;
        let current = Shadow::of_option(state.materialize().as_ref(), &c.counters);
        let write = Write {
            stamp: Stamp::new(
                past_what_was_seen(stamp.hlc, &state, seen.as_ref(), &current),
                origin,
            ),
            kind: WriteKind::Delete,
        };
        if state.apply(&write) {
            let body = state.materialize();
            let seq = append_log(
                tx,
                &c.collection,
                key,
                &write,
                now,
                c.commit_ts_ms,
                body.is_none(),
            )?;
            save_state(tx, &c.collection, key, &state, body.as_ref(), seq, now)?;
            last = Some(seq);
        }
        save_seen(tx, origin, &c.collection, key, &Shadow::Deleted)?;
    }
    Ok(last.map(|seq| (keys.len() as u64, seq)))
}

/// A delete's stamp `hlc`, moved past every value the origin saw when it
/// saw the document as it is (as far as its table goes): its delete comes
/// after them, and only after those (a field its table lacks it never saw
/// change).
fn past_what_was_seen(hlc: u64, state: &DocState, seen: Option<&Shadow>, current: &Shadow) -> u64 {
    match seen
        .filter(|s| s.agrees_with(current))
        .and_then(|s| state.max_stamp_of(s.fields()))
    {
        Some(m) => hlc.max(m.hlc + 1),
        None => hlc,
    }
}

/// Whether `image` is a write the origin's sink recorded as about to make;
/// if so, that intent (and any older one for the document) is consumed.
fn take_intent(
    tx: &Connection,
    provider: &str,
    collection: &str,
    key: &str,
    image: &Shadow,
) -> Result<bool> {
    // Sorted here, not by `ORDER BY rowid`: with that clause SQLite
    // re-prepares the statement on every use (it was a fifth of an echo's cost).
    let mut intents: Vec<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT rowid, shadow FROM sink_intents WHERE provider = ?1 AND collection = ?2 AND id = ?3",
        )?
        .query_map(params![provider, collection, key], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    intents.sort_unstable_by_key(|(rowid, _)| *rowid);
    for (rowid, bytes) in intents {
        if Shadow::decode(&bytes).is_some_and(|intent| intent.agrees_with(image)) {
            tx.prepare_cached("DELETE FROM sink_intents WHERE provider = ?1 AND collection = ?2 AND id = ?3 AND rowid <= ?4")?
                .execute(params![provider, collection, key, rowid])?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Puts a document back on the log (an empty write: it changes nothing in
/// any replica), so every sink compares it with what its provider holds.
pub(crate) fn requeue(tx: &Connection, collection: &str, key: &str, now: i64) -> Result<i64> {
    append_log(tx, collection, key, &touch_write(), now, None, false)
}

/// The empty write that only puts a document back on the log (it changes
/// nothing in any replica).
pub(crate) fn touch_write() -> Write {
    Write {
        stamp: Stamp::new(0, "connector"),
        kind: WriteKind::Set {
            fields: Default::default(),
            unset: Default::default(),
            counters: Default::default(),
            copied: false,
        },
    }
}

enum Plan {
    /// Dropped: our own write coming back, or a no-op. `image` becomes the
    /// origin's seen and held shadow; `touch` re-queues the document.
    Echo {
        key: String,
        image: Shadow,
        touch: bool,
    },
    Reject(NewDeadLetter),
    Write {
        key: String,
        state: DocState,
        write: Write,
        shadow: Shadow,
        conflicts: Vec<Conflict>,
    },
}

fn plan_change(
    tx: &Connection,
    origin: &str,
    c: &DocChange,
    now: i64,
    intents: bool,
) -> Result<Plan> {
    let key = id_key(&c.id);
    // An image our sink recorded as about to write is our echo, known by
    // the image alone: only the document's body is read (for `touch`), not
    // its merge state or the shadows. Most of an ODBC fan-out's echoes.
    let whole_image = c.op == DocOp::Upsert && c.unchanged.is_empty();
    if intents && whole_image {
        let image = Shadow::of(&c.fields, &c.counters);
        if take_intent(tx, origin, &c.collection, &key, &image)? {
            let body = load_body(tx, &c.collection, &key)?;
            let touch = !image.agrees_with(&Shadow::of_option(body.as_ref(), &c.counters));
            return Ok(Plan::Echo { key, image, touch });
        }
    }
    let state = load_state(tx, &c.collection, &key)?;
    let seen = load_shadows(tx, origin, &c.collection, &key)?.seen;
    let current = state.materialize();
    // Fingerprinting the whole document is needed only for echoes and deletes.
    let current_shadow = || Shadow::of_option(current.as_ref(), &c.counters);
    let mut hlc = base_hlc(c.commit_ts_ms, now);
    let echo = |key: String, image: Shadow| {
        let touch = !image.agrees_with(&current_shadow());
        Plan::Echo { key, image, touch }
    };

    if c.op == DocOp::Delete {
        let noop = match &seen {
            Some(Shadow::Deleted) => true,
            Some(Shadow::Present { .. }) => false,
            None => current.is_none(),
        };
        if noop || (intents && take_intent(tx, origin, &c.collection, &key, &Shadow::Deleted)?) {
            return Ok(echo(key, Shadow::Deleted));
        }
        // The provider saw the document as it is (as far as its table
        // goes): its delete comes after every value it saw, and only those
        // (a field its table lacks it never saw change).
        hlc = past_what_was_seen(hlc, &state, seen.as_ref(), &current_shadow());
        return Ok(Plan::Write {
            key,
            state,
            write: Write {
                stamp: Stamp::new(hlc, origin),
                kind: WriteKind::Delete,
            },
            shadow: Shadow::Deleted,
            conflicts: Vec::new(),
        });
    }

    // Values the feed left out because they did not change: the store's,
    // from the old id's document when the change moved the row to a new id
    // (that document was deleted just before; its registers keep the values).
    let filled;
    let c = if c.unchanged.is_empty() {
        c
    } else {
        let moved_from = match &c.unchanged_from {
            Some(old) => Some(load_state(tx, &c.collection, &id_key(old))?),
            None => None,
        };
        let mut full = c.clone();
        for f in &c.unchanged {
            // A document deleted meanwhile keeps its fields' last values
            // under the tombstone: an update that brings it back has them.
            let kept = match &moved_from {
                Some(old) => old.last_value(f),
                None => current
                    .as_ref()
                    .and_then(|d| d.get(f))
                    .or_else(|| state.last_value(f)),
            };
            match kept {
                Some(v) => {
                    full.fields.insert(f.clone(), v.clone());
                }
                None => {
                    full.fields.shift_remove(f);
                }
            }
        }
        filled = full;
        &filled
    };
    // An intent holds the image our sink wrote, the filled values with it
    // (a column our write left out comes back unchanged); `seen` becomes
    // the provider's image, with the old values of the columns left out.
    let filled_shadow = Shadow::of(&c.fields, &c.counters);
    if intents && !whole_image && take_intent(tx, origin, &c.collection, &key, &filled_shadow)? {
        return Ok(echo(key, filled_shadow));
    }
    let new_shadow = filled_shadow.keeping_unchanged(seen.as_ref(), &c.unchanged);
    if seen.as_ref().is_some_and(|s| s.same_image(&new_shadow)) {
        return Ok(echo(key, new_shadow));
    }
    let shadow = seen;
    // Which fields did the origin change?
    let (mut changed, unset): (Vec<&String>, Vec<String>) = if current.is_none() {
        (c.fields.keys().collect(), Vec::new())
    } else if let Some(before) = &c.before {
        // A value the feed left out did not change: the store's, filled in,
        // may differ from what the provider holds (its sink has not written
        // it yet), and is not the provider's change.
        (
            c.fields
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(v) && !c.unchanged.contains(k))
                .map(|(k, _)| k)
                .collect(),
            before
                .keys()
                .filter(|k| !c.fields.contains_key(*k) && !c.unchanged.contains(k))
                .cloned()
                .collect(),
        )
    } else if let Some(s @ Shadow::Present { .. }) = &shadow {
        (
            c.fields
                .iter()
                .filter(|(k, v)| {
                    s.fingerprint(k) != Some(fingerprint(v)) && !c.unchanged.contains(k)
                })
                .map(|(k, _)| k)
                .collect(),
            s.fields()
                .filter(|k| !c.fields.contains_key(*k) && !c.unchanged.iter().any(|u| u == k))
                .map(str::to_string)
                .collect(),
        )
    } else {
        (c.fields.keys().collect(), Vec::new())
    };
    // A field the document has never had a value for (no register since
    // its last delete) is new to it whatever the diff says: a column added to the provider's table after its rows were
    // copied shows the same value before and after a change of another
    // column, and was never taken until it changed itself.
    if let Some(doc) = &current {
        for (k, _) in c.fields.iter() {
            if !doc.contains_key(k) && !state.has_visible_register(k) && !changed.contains(&k) {
                changed.push(k);
            }
        }
    }

    // Counters merge as deltas turned into the origin's cumulative total.
    let mut counters = BTreeMap::new();
    for name in c.counters.iter() {
        let Some(new) = c.fields.get(name) else {
            continue;
        };
        changed.retain(|f| *f != name);
        let Some(new) = counter_number(new) else {
            if new.is_null() {
                continue;
            }
            return Ok(Plan::Reject(NewDeadLetter {
                collection: Some(c.collection.clone()),
                stage: "store".into(),
                field: Some(name.clone()),
                reason: format!("counter `{name}` must be a number, found {new}"),
                record: serde_json::json!({"_id": c.id, "fields": c.fields}),
            }));
        };
        let old = c
            .before
            .as_ref()
            .and_then(|b| b.get(name))
            .and_then(counter_number)
            .or_else(|| match &shadow {
                Some(Shadow::Deleted) => Some(0.0),
                Some(s) => s.counter(name),
                None => None,
            })
            .or_else(|| state.counter_value(name))
            .unwrap_or(0.0);
        let delta = new - old;
        // A counter the document does not have yet is written even at 0,
        // or a row created with 0 would reach the others without it.
        let visible = state.counter_value(name);
        if delta != 0.0 || visible.is_none() {
            // A document with no visible count (new, brought back over a
            // delete, or counted from now on) takes the image's value whole,
            // as its plain fields: the origin's entries under a tombstone
            // count for nothing, and its delta alone came back as the count.
            let total = match visible {
                None => new,
                Some(_) => state.counter_contribution(name, origin) + delta,
            };
            counters.insert(name.clone(), total);
            // The origin's entry moves forward in its own order (its feed
            // is its commit order): past its own earlier entry, whatever its
            // stamp, except an entry a copy wrote. Only the origin's commits
            // after the copy pass that one (later ones, or those the copy
            // saw in flight, raised above it): a change the copy already
            // holds, streamed again after a fresh-snapshot copy, loses to
            // it, or its delta would count twice.
            if let Some((prev, false)) = state.counter_entry(name, origin) {
                hlc = hlc.max(prev + 1);
            }
        }
    }

    if changed.is_empty() && unset.is_empty() && counters.is_empty() {
        // Nothing differs from what the store knows: a no-op update.
        return Ok(echo(key, new_shadow));
    }

    // Causality: never stamp below what the origin is known to have seen.
    for f in changed
        .iter()
        .map(|f| f.as_str())
        .chain(unset.iter().map(String::as_str))
    {
        if let Some(cur) = state.field_stamp(f) {
            let cur_fp = current.as_ref().and_then(|d| d.get(f)).map(fingerprint);
            // The origin's own earlier write in the same millisecond: feed
            // order decides. (An older commit of the origin's is a replay,
            // which sources skip by position, and must not win.)
            let own_same_ms =
                cur.origin == origin && cur.millis() == Stamp::new(hlc, origin).millis();
            let seen = own_same_ms
                || (cur.origin != origin
                    && cur_fp.is_some()
                    && shadow.as_ref().and_then(|s| s.fingerprint(f)) == cur_fp);
            if seen {
                hlc = hlc.max(cur.hlc + 1);
            }
        }
    }
    if current.is_none() && matches!(shadow, Some(Shadow::Deleted)) {
        if let Some(s) = state.max_stamp() {
            hlc = hlc.max(s.hlc + 1);
        }
    }

    let stamp = Stamp::new(hlc, origin);
    let conflicts = if c.snapshot {
        Vec::new()
    } else {
        conflicts_of(
            c,
            &key,
            &changed,
            &state,
            current.as_ref(),
            shadow.as_ref(),
            &stamp,
            now,
        )
    };
    let fields: BTreeMap<String, Value> = changed
        .into_iter()
        .map(|f| (f.clone(), c.fields[f].clone()))
        .collect();
    Ok(Plan::Write {
        key,
        state,
        conflicts,
        write: Write {
            stamp,
            kind: WriteKind::Set {
                fields,
                unset: unset.into_iter().collect(),
                copied: c.snapshot && !counters.is_empty(),
                counters,
            },
        },
        shadow: new_shadow,
    })
}

/// The fields of `c` (the origin's change, stamped `stamp`) that conflict
/// with another provider's value ([`crate::conflicts`]), and which side
/// each keeps.
#[allow(clippy::too_many_arguments)]
fn conflicts_of(
    c: &DocChange,
    key: &str,
    changed: &[&String],
    state: &DocState,
    current: Option<&Map<String, Value>>,
    seen: Option<&Shadow>,
    stamp: &Stamp,
    now: i64,
) -> Vec<Conflict> {
    // What the origin changed each field from.
    let before = |f: &str| match &c.before {
        Some(b) => b.get(f).map(fingerprint),
        None => seen.and_then(|s| s.fingerprint(f)),
    };
    let mut out = Vec::new();
    for f in changed {
        // The origin's own value (most changes) is never a conflict: no
        // fingerprint is taken for it.
        let Some(cur) = state
            .field_stamp(f)
            .filter(|cur| cur.origin != stamp.origin)
        else {
            continue;
        };
        let Some(cur_value) = current.and_then(|d| d.get(*f)) else {
            continue;
        };
        let new_value = &c.fields[*f];
        let cur_fp = fingerprint(cur_value);
        if fingerprint(new_value) == cur_fp || before(f) == Some(cur_fp) {
            continue;
        }
        let ((kept_from, kept), (lost_from, lost)) = if stamp > cur {
            ((&stamp.origin, new_value), (&cur.origin, cur_value))
        } else {
            ((&cur.origin, cur_value), (&stamp.origin, new_value))
        };
        out.push(Conflict {
            at_ms: now,
            collection: c.collection.clone(),
            id: key.to_string(),
            field: f.to_string(),
            kept_from: kept_from.clone(),
            kept: kept.clone(),
            lost_from: lost_from.clone(),
            lost: lost.clone(),
        });
    }
    out
}
