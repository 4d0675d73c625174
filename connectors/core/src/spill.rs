//! A source transaction too large to hold in memory, kept on disk until its
//! commit.
//!
//! A source transaction is merged whole, in one store transaction, with the
//! position after it (never split: the store's merge of an image against
//! its before image is exactly-once only if a crash replays all of the
//! transaction or none of it). A feed that holds a transaction's changes
//! until its commit (PostgreSQL's pgoutput v1) would hold an `UPDATE` of a
//! million rows in memory; past a bound the changes are appended here
//! instead, one JSON line each, to an unnamed temporary file (`TMPDIR`; the
//! systemd unit gives each provider a private one). At the commit the
//! worker reads them back in chunks and merges every chunk inside the same
//! store transaction.
//!
//! Crash/restart: the file has no name and vanishes with the process; the
//! position was not saved, so the feed sends the whole transaction again.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};

use crate::change::RawChange;
use crate::error::{ConnectorError, Result, Stage};

/// Changes appended to a temporary file, read back in order.
pub struct Spill {
    out: BufWriter<File>,
    len: usize,
}

impl fmt::Debug for Spill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spill").field("len", &self.len).finish()
    }
}

fn io_error(doing: &str, e: impl fmt::Display) -> ConnectorError {
    // A full or unwritable temporary directory is the machine's state, not
    // the record's: retried, and said.
    ConnectorError::transient(
        Stage::Source,
        format!("{doing} the temporary file of a large transaction (TMPDIR): {e}"),
    )
}

impl Spill {
    pub fn new() -> Result<Spill> {
        let file = tempfile::tempfile().map_err(|e| io_error("creating", e))?;
        Ok(Spill {
            out: BufWriter::with_capacity(1 << 16, file),
            len: 0,
        })
    }

    /// Appends changes, in order.
    pub fn extend(&mut self, changes: impl IntoIterator<Item = RawChange>) -> Result<()> {
        for change in changes {
            serde_json::to_writer(&mut self.out, &change).map_err(|e| io_error("writing", e))?;
            self.out
                .write_all(b"\n")
                .map_err(|e| io_error("writing", e))?;
            self.len += 1;
        }
        Ok(())
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The changes, in order, `chunk` at a time.
    pub fn chunks(self, chunk: usize) -> Result<Chunks> {
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| io_error("writing", e.error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error("reading", e))?;
        Ok(Chunks {
            lines: BufReader::with_capacity(1 << 16, file),
            left: self.len,
            chunk: chunk.max(1),
        })
    }
}

/// The reader of a [`Spill`].
pub struct Chunks {
    lines: BufReader<File>,
    left: usize,
    chunk: usize,
}

impl Iterator for Chunks {
    type Item = Result<Vec<RawChange>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let n = self.chunk.min(self.left);
        let mut out = Vec::with_capacity(n);
        let mut line = String::new();
        for _ in 0..n {
            line.clear();
            let read = self
                .lines
                .read_line(&mut line)
                .map_err(|e| io_error("reading", e))
                .and_then(|_| {
                    serde_json::from_str::<RawChange>(&line).map_err(|e| io_error("reading", e))
                });
            match read {
                Ok(c) => out.push(c),
                Err(e) => {
                    self.left = 0;
                    return Some(Err(e));
                }
            }
        }
        self.left -= n;
        Some(Ok(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RawOp;
    use serde_json::json;

    fn change(i: i64) -> RawChange {
        RawChange {
            table: "orders".into(),
            schema: Some("public".into()),
            op: if i % 3 == 0 {
                RawOp::Delete
            } else {
                RawOp::Update
            },
            row: json!({"order_id": i, "total": 12.5, "note": format!("line\n{i}\u{e9}"), "big": 18446744073709551615u64})
                .as_object()
                .unwrap()
                .clone(),
            before: (i % 2 == 0).then(|| json!({"order_id": i, "total": 1}).as_object().unwrap().clone()),
            commit_ts_ms: Some(1_700_000_000_000),
            unchanged: if i % 5 == 0 { vec!["note".into()] } else { vec![] },
            unchanged_from: None,
            own_write: i % 7 == 0,
            txn: Some(42),
        }
    }

    #[test]
    fn changes_come_back_whole_and_in_order_in_chunks() {
        let all: Vec<RawChange> = (0..25).map(change).collect();
        let mut spill = Spill::new().unwrap();
        spill.extend(all[..10].iter().cloned()).unwrap();
        spill.extend(all[10..].iter().cloned()).unwrap();
        assert_eq!(spill.len(), 25);
        let chunks: Vec<Vec<RawChange>> = spill.chunks(8).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![8, 8, 8, 1]
        );
        assert_eq!(chunks.concat(), all);
    }

    #[test]
    fn an_empty_spill_reads_nothing() {
        assert_eq!(Spill::new().unwrap().chunks(10).unwrap().count(), 0);
    }
}
