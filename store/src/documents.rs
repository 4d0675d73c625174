//! Reading documents: `connector query`, and the digests `connector verify`
//! compares with each provider's.

use rusqlite::{params, OptionalExtension};
use serde_json::{Map, Value};

use connector_core::provider::Digest;
use connector_core::value::{doc_hash, id_key};

use crate::error::Result;
use crate::sqlite::{load_state, parse_body, Store, LEFT_FILTER};

impl Store {
    /// One live document (without `_id`), or `None` if absent or deleted.
    pub fn get(&self, collection: &str, id: &Value) -> Result<Option<Map<String, Value>>> {
        let body: Option<Option<String>> = self
            .conn()
            .prepare_cached("SELECT body FROM documents WHERE collection = ?1 AND id = ?2")?
            .query_row(params![collection, id_key(id)], |r| r.get(0))
            .optional()?;
        parse_body(body.flatten())
    }

    /// Whether `origin` changed the document after `commit_ms` (its commit
    /// time): a record of it from then is stale and must not be merged as
    /// its newest (`dead-letters retry`).
    pub fn changed_by_since(
        &self,
        collection: &str,
        id: &Value,
        origin: &str,
        commit_ms: i64,
    ) -> Result<bool> {
        let state = load_state(&self.conn(), collection, &id_key(id))?;
        Ok(state
            .max_stamp_by(origin)
            .is_some_and(|s| s.millis() > commit_ms))
    }

    /// Live documents of a collection in id order, after `after` (a
    /// canonical id key), at most `limit`: `(id, body)` pairs.
    pub fn list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Value, Map<String, Value>)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, body FROM documents
             WHERE collection = ?1 AND body IS NOT NULL AND (?2 IS NULL OR id > ?2)
             ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![collection, after, limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            if let Some(doc) = parse_body(body)? {
                out.push((serde_json::from_str(&id)?, doc));
            }
        }
        Ok(out)
    }

    /// Count and order-independent checksum of a collection's live documents.
    pub fn digest(&self, collection: &str) -> Result<Digest> {
        let mut digest = Digest::default();
        self.for_each_hash(collection, |_, h| digest.add(h))?;
        Ok(digest)
    }

    /// The ids (keys) of the collection's documents whose row in `provider`
    /// left the collection's filter there: the fleet does not write them.
    pub fn left_filter(&self, provider: &str, collection: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM shadows WHERE provider = ?1 AND collection = ?2 AND held = ?3",
        )?;
        let keys = stmt
            .query_map(params![provider, collection, LEFT_FILTER], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(keys)
    }

    /// Calls `f(id_key, doc_hash)` for every live document of a collection.
    pub fn for_each_hash(&self, collection: &str, mut f: impl FnMut(String, u64)) -> Result<()> {
        self.for_each_document(collection, |key, id, doc| f(key, doc_hash(id, doc)))
    }

    /// Calls `f(id_key, id, body)` for every live document of a collection.
    pub fn for_each_document(
        &self,
        collection: &str,
        mut f: impl FnMut(String, &Value, &Map<String, Value>),
    ) -> Result<()> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, body FROM documents WHERE collection = ?1 AND body IS NOT NULL")?;
        let mut rows = stmt.query([collection])?;
        while let Some(r) = rows.next()? {
            let key: String = r.get(0)?;
            let id: Value = serde_json::from_str(&key)?;
            if let Some(doc) = parse_body(r.get(1)?)? {
                f(key, &id, &doc);
            }
        }
        Ok(())
    }
}
