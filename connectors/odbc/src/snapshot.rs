//! Initial sync: keyset pages by the mapping's id columns.
//!
//! A page is `SELECT … WHERE key > last ORDER BY key` limited to a chunk,
//! the comparison spelled out column by column (`k1 > ? OR (k1 = ? AND
//! k2 > ?)`) because not every database compares row values. Each page is
//! its own statement: there is no exported snapshot as PostgreSQL has, so
//! a row changed during the copy may be copied in either state — its
//! journal entry (read after the copy) carries the later change and a later
//! time, and the store's stamps keep the later one. Resuming after a crash
//! starts after the last key the store saved.
//!
//! The copy is stamped by the database's clock (the journal's times are the
//! database's too), a millisecond before it begins. The journal's time is
//! the trigger's, not the commit's: a transaction that fired before the
//! copy began and committed after the copy read its row carries an older
//! time than the copy. So the copy also reports the journal entries it
//! cannot have seen as it began ([`Snapshot::in_flight`]): every sequence
//! after the highest one then in the journal, and the numbers missing
//! among the last [`GAP_WINDOW`] below it (a transaction that has not
//! committed yet holds them, or a rollback or a prune: never read again).
//! The worker raises their times above the copy's stamp. On a first copy
//! the same reading is the stream's start ([`Snapshot::start_position`]):
//! the highest sequence, with the missing numbers as open gaps, so the
//! poller skips the rows the copy already holds and still reads a
//! transaction below them that commits later. Not covered: a transaction
//! holding a sequence number more than [`GAP_WINDOW`] below the journal's
//! highest when the copy began (the poller's own gap limit).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use connector_core::clock::now_millis;
use connector_core::column_type::text_to_json;
use connector_core::provider::SnapshotChunk;
use connector_core::table_order::between_collections;
use connector_core::{
    ConnectorError, Fields, InFlight, ProviderMapping, RawChange, RawOp, Result, Snapshot, Stage,
};

use crate::catalog::{foreign_keys, integer, mapped_tables, query_text, TableInfo};
use crate::conn::{is_missing_table, OdbcConn, Session};
use crate::dialect::Dialect;
use crate::journal::{row_time, JournalPosition, MAX_GAPS};
use crate::options::OdbcOptions;
use crate::source::open_session;

/// Missing journal sequence numbers looked for below the highest one: as
/// many as the poller keeps open gaps.
pub const GAP_WINDOW: i64 = MAX_GAPS as i64;

pub struct OdbcSnapshot {
    session: Session,
    d: &'static dyn Dialect,
    /// collection → (table, key columns)
    tables: HashMap<String, (TableInfo, Vec<String>)>,
    as_of_ms: i64,
    in_flight: Option<InFlight>,
    /// The journal position the copy is consistent with.
    start_position: Option<String>,
    /// The journal table, qualified.
    journal: String,
    provider: String,
}

impl OdbcSnapshot {
    pub async fn open(
        conn: &OdbcConn,
        o: &OdbcOptions,
        mapping: &Arc<ProviderMapping>,
    ) -> Result<OdbcSnapshot> {
        let d = o.dialect.dialect();
        let mut session = open_session(conn, d, Stage::Snapshot).await?;
        let journal = d.qualified(o.schema.as_deref(), &o.journal);
        let journal_name = journal.clone();
        let mark = session.run(move |c| journal_mark(c, d, &journal)).await?;
        let as_of_ms = mark.as_of_ms;
        // The journal as the copy begins: the stream (on a first copy)
        // starts after the rows the copy holds, with the missing numbers as
        // gaps to read when they commit; those and everything after are
        // raised above the copy.
        let (in_flight, start_position) = match mark.unseen {
            Some((high, missing)) => {
                let now = now_millis();
                let mut start = JournalPosition::with_missing(high, &missing, now);
                start.mark = mark.high_mark;
                let in_flight = InFlight {
                    as_of_ms,
                    txns: missing.into_iter().map(|s| s as u64).collect(),
                    from: Some(high as u64 + 1),
                };
                (Some(in_flight), Some(start.encode()))
            }
            None => (None, None),
        };
        let (m, o) = (mapping.clone(), o.clone());
        let found = session.run(move |c| mapped_tables(c, d, &m, &o)).await?;
        let tables = found
            .into_iter()
            .map(|(collection, info)| {
                let key = mapping.key_columns(&collection).unwrap_or_default();
                (collection, (info, key))
            })
            .collect();
        Ok(OdbcSnapshot {
            session,
            d,
            tables,
            as_of_ms,
            in_flight,
            start_position,
            provider: mapping.provider().to_string(),
            journal: journal_name,
        })
    }

    fn table(&self, collection: &str) -> Result<&(TableInfo, Vec<String>)> {
        self.tables.get(collection).ok_or_else(|| {
            ConnectorError::permanent(
                Stage::Snapshot,
                format!("collection `{collection}` is not synced with this provider"),
            )
        })
    }
}

/// What the copy reads of the journal before its first row.
struct JournalMark {
    /// The copy's stamp.
    as_of_ms: i64,
    /// The highest journal sequence then, and the numbers missing among the
    /// [`GAP_WINDOW`] below it; `None` without a journal.
    unseen: Option<(i64, Vec<i64>)>,
    /// The change time of the row at the highest sequence: the stream's
    /// start position keeps it, so a journal set up again before the
    /// stream read a row is told (as for any position).
    high_mark: Option<i64>,
}

/// The copy's stamp, a millisecond before the database's clock (a change
/// journaled in the copy's first millisecond, which the copy may have read
/// in its old state, still wins), and the journal entries the copy cannot
/// have seen. Read in this order (the journal, then the clock): an entry
/// committed after the highest number was read is listed as unseen or
/// numbered past it (raised above the copy either way), and every entry
/// at or below it was journaled before the clock was read. Without a
/// journal (setup not run: the source stops with that diagnosis) nothing
/// is unseen.
fn journal_mark(
    c: &odbc_api::Connection<'_>,
    d: &dyn Dialect,
    journal: &str,
) -> Result<JournalMark> {
    let unreadable = |what: &str, text: &str| {
        ConnectorError::permanent(
            Stage::Snapshot,
            format!("{what}: `{text}` is not an integer"),
        )
    };
    let first =
        |rows: &[Vec<Option<String>>]| rows.first().and_then(|r| r.first().cloned().flatten());
    let clock = || -> Result<i64> {
        let clock = query_text(
            c,
            &d.clock_query(),
            &[],
            Stage::Snapshot,
            "reading the database's clock",
        )?;
        let clock = first(&clock).unwrap_or_default();
        Ok(integer(&clock).ok_or_else(|| unreadable("the database's clock", &clock))? - 1)
    };
    let high = match query_text(
        c,
        &format!("SELECT MAX(seq) FROM {journal}"),
        &[],
        Stage::Snapshot,
        "reading the journal's highest sequence",
    ) {
        Ok(rows) => match first(&rows) {
            None => 0, // an empty journal
            Some(t) => {
                integer(&t).ok_or_else(|| unreadable("the journal's highest sequence", &t))?
            }
        },
        Err(e) if is_missing_table(&e) => {
            return Ok(JournalMark {
                as_of_ms: clock()?,
                unseen: None,
                high_mark: None,
            })
        }
        Err(e) => return Err(e),
    };
    let low = (high - GAP_WINDOW).max(0);
    let mut present = HashSet::new();
    for row in query_text(
        c,
        &format!("SELECT seq FROM {journal} WHERE seq > ? AND seq <= ?"),
        &[low.to_string(), high.to_string()],
        Stage::Snapshot,
        "reading the journal's recent sequences",
    )? {
        let t = row.into_iter().next().flatten().unwrap_or_default();
        present.insert(integer(&t).ok_or_else(|| unreadable("a journal sequence", &t))?);
    }
    let missing = (low + 1..=high).filter(|s| !present.contains(s)).collect();
    // The clock last: every entry read above was journaled before it, so
    // the copy's stamp is past them (an entry the stream skips as read must
    // not carry a time after the copy's, or an older change from elsewhere
    // would win over the copied value).
    let as_of_ms = clock()?;
    let high_mark = if high > 0 {
        row_time(c, journal, high, Stage::Snapshot)?
    } else {
        None
    };
    Ok(JournalMark {
        as_of_ms,
        unseen: Some((high, missing)),
        high_mark,
    })
}

/// The keyset condition after a key (its parameter texts in key order,
/// `None` for NULL) and its parameters: `k1 > ? OR (k1 = ? AND k2 > ?) …`.
pub fn after_condition(
    d: &dyn Dialect,
    table: &TableInfo,
    key: &[String],
    after: &[Option<String>],
) -> (String, Vec<Option<String>>) {
    let mut alternatives = Vec::new();
    let mut params = Vec::new();
    for i in 0..key.len() {
        let mut terms = Vec::new();
        for (j, k) in key.iter().enumerate().take(i + 1) {
            let op = if j == i { ">" } else { "=" };
            terms.push(format!("{} {op} {}", d.quote(k), d.marker(table, k)));
            params.push(after.get(j).cloned().flatten());
        }
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    (alternatives.join(" OR "), params)
}

/// A chunk's saved resume point → the key's parameter texts. Chunks save
/// the key as the database wrote it (`{"raw": [text, …]}`): compared with
/// the column's own values, in the database's own order. A value read
/// back from its JSON form could compare differently (a UUID stored in
/// upper case, lower-cased here; a timestamp in another zone). An array is
/// a resume point saved before: its JSON values, as parameters.
fn resume_params(
    d: &dyn Dialect,
    table: &TableInfo,
    key: &[String],
    after: &Value,
) -> Vec<Option<String>> {
    let ty = |k: &String| {
        table
            .column(k)
            .map(|c| c.ty)
            .unwrap_or(connector_core::ColumnType::Text)
    };
    if let Some(raw) = after.get("raw").and_then(Value::as_array) {
        return raw
            .iter()
            .zip(key)
            .map(|(v, k)| {
                let text = v.as_str()?;
                // Bytes were read as `\x…` text and are bound as hex
                // (MariaDB's `UNHEX(?)`): the raw text alone was NULL there,
                // and a binary key's copy ended after its first chunk.
                match ty(k) {
                    connector_core::ColumnType::Binary => d.param_text(
                        connector_core::ColumnType::Binary,
                        &Value::String(text.into()),
                    ),
                    _ => Some(text.to_string()),
                }
            })
            .collect();
    }
    let values = after.as_array().map(Vec::as_slice).unwrap_or_default();
    key.iter()
        .enumerate()
        .map(|(j, k)| d.param_text(ty(k), values.get(j).unwrap_or(&Value::Null)))
        .collect()
}

#[async_trait]
impl Snapshot for OdbcSnapshot {
    fn in_flight(&self) -> Option<InFlight> {
        self.in_flight.clone()
    }

    fn start_position(&self) -> Option<String> {
        self.start_position.clone()
    }

    fn feed_missing(&self) -> Option<String> {
        self.start_position.is_none().then(|| {
            format!(
                "the change journal {} does not exist: run `connector setup --provider {}` before the first copy (changes made between a copy and setup would be missed)",
                self.journal, self.provider
            )
        })
    }

    /// The journal started over when its highest number is below the saved
    /// position's, or (its numbers passed the old ones) the row under the
    /// saved number is not the one read there: another change time, or
    /// none (the prune always keeps that row).
    async fn restarts_feed(&mut self, saved: &str) -> Result<bool> {
        let start = self
            .start_position
            .as_deref()
            .and_then(JournalPosition::parse);
        let (Some(start), Some(saved)) = (start, JournalPosition::parse(saved)) else {
            return Ok(false);
        };
        if start.seq < saved.seq {
            return Ok(true);
        }
        let Some(mark) = saved.mark else {
            return Ok(false);
        };
        let journal = self.journal.clone();
        let at = self
            .session
            .run(move |c| row_time(c, &journal, saved.seq, Stage::Snapshot))
            .await?;
        Ok(at != Some(mark))
    }

    async fn foreign_keys(&mut self) -> Result<Vec<(String, String)>> {
        let infos: Vec<(String, TableInfo)> = self
            .tables
            .iter()
            .map(|(c, (t, _))| (c.clone(), t.clone()))
            .collect();
        self.session
            .run(move |c| {
                let tables: Vec<&TableInfo> = infos.iter().map(|(_, t)| t).collect();
                let keys = foreign_keys(c, &tables);
                Ok(between_collections(
                    &keys,
                    infos.iter().map(|(c, t)| (c.as_str(), t.name.as_str())),
                ))
            })
            .await
    }

    async fn estimate_rows(&mut self, collection: &str) -> Result<Option<u64>> {
        let (info, _) = self.table(collection)?;
        let sql = format!("SELECT COUNT(*) FROM {}", info.qualified(self.d));
        let rows = self
            .session
            .run(move |c| query_text(c, &sql, &[], Stage::Snapshot, "counting rows"))
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|n| integer(&n))
            .map(|n| n as u64))
    }

    async fn chunk(
        &mut self,
        collection: &str,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<SnapshotChunk> {
        let d = self.d;
        let (info, key) = self.table(collection)?.clone();
        // A value read through an expression gets a name of its own: named
        // as its column, it would be what ORDER BY sorts a key by (text
        // order, where the key's own order is wanted).
        let cols = info
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let column = d.quote(&c.name);
                match d.read_value(c, column.clone()) {
                    read if read == column => read,
                    read => format!("{read} AS {}", d.quote(&format!("connector_read_{i}"))),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let order = key
            .iter()
            .map(|k| d.quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let (cond, params) = match after {
            Some(after) => {
                let resume = resume_params(d, &info, &key, after);
                let (cond, params) = after_condition(d, &info, &key, &resume);
                (format!(" WHERE {cond}"), params)
            }
            None => (String::new(), Vec::new()),
        };
        let sql = d.limit(
            &format!(
                "SELECT {cols} FROM {}{cond} ORDER BY {order}",
                info.qualified(d)
            ),
            limit,
        );
        let params: Vec<String> = params.into_iter().map(Option::unwrap_or_default).collect();
        let context = format!("reading {}", info.qualified(d));
        let rows = self
            .session
            .run(move |c| query_text(c, &sql, &params, Stage::Snapshot, &context))
            .await?;
        let done = rows.len() < limit;
        let key_at: Vec<Option<usize>> = key
            .iter()
            .map(|k| info.columns.iter().position(|c| &c.name == k))
            .collect();
        let last_key = rows.last().map(|cells| {
            let raw = key_at
                .iter()
                .map(|i| {
                    i.and_then(|i| cells.get(i).cloned().flatten())
                        .map_or(Value::Null, Value::String)
                })
                .collect();
            serde_json::json!({ "raw": Value::Array(raw) })
        });
        let mut out = Vec::with_capacity(rows.len());
        for cells in rows {
            let row: Fields = info
                .columns
                .iter()
                .zip(cells)
                .map(|(col, cell)| {
                    let v = cell.map_or(Value::Null, |text| text_to_json(col.ty, &text));
                    (col.name.clone(), v)
                })
                .collect();
            out.push(RawChange {
                table: info.name.clone(),
                schema: info.schema.clone(),
                op: RawOp::Snapshot,
                row,
                before: None,
                commit_ts_ms: Some(self.as_of_ms),
                unchanged: Vec::new(),
                unchanged_from: None,
                own_write: false,
                txn: None,
            });
        }
        Ok(SnapshotChunk {
            rows: out,
            last_key,
            done,
        })
    }
}
