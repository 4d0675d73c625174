//! The poller's position in the change journal, and why it is more than a
//! number.
//!
//! Journal rows are numbered when the trigger runs, but become visible when
//! their transaction commits: transaction A may take sequence 10, B take 11
//! and commit first. A poller that only remembered "11" would never read 10.
//! So the position is the highest sequence read *plus the numbers below it
//! not seen yet* (gaps, kept as ranges: one transaction of 50,000 rows still
//! open is one range, however many numbers), each with the time it was
//! first missed; no gap is dropped for lack of room, only by time. Every poll
//! reads the rows after the highest sequence and the rows whose numbers are
//! gaps; a gap that fills is read then. A gap that stays empty longer than
//! the gap timeout is a rolled-back transaction (or an identity value a
//! restart skipped) and is forgotten. A fresh position (the journal was
//! empty, or never read) takes every number below the first row it reads
//! for a gap: it cannot know what is below, and a transaction holding any
//! of them may still commit (a batch job that took numbers 1..=1,000 and
//! commits after another session's 1,001 was read). Numbers that were
//! pruned or rolled back expire with the timeout; as one range they cost
//! one `BETWEEN` per poll meanwhile. (A window of the 200 numbers below
//! the first row, as first built, lost the rest of such a transaction.)
//!
//! The position is saved in the store together with the changes it covers,
//! so a restart re-reads exactly what was not merged. Pruning deletes only
//! journal rows that were read: those below the highest sequence and below
//! the lowest open gap. The row at the highest sequence read stays, so the
//! journal's highest number is never below the position unless the journal
//! started over (see the source).

use std::collections::BTreeMap;

use odbc_api::Connection;
use serde_json::{json, Value};

use connector_core::{Result, Stage};

use crate::catalog::{integer, query_value};

/// The change time of the journal row numbered `seq`, if there is one: a
/// saved position's `mark` is compared with it (another time, or no row,
/// is a journal that started over: the prune always keeps that row).
pub fn row_time(c: &Connection<'_>, journal: &str, seq: i64, stage: Stage) -> Result<Option<i64>> {
    Ok(query_value(
        c,
        &format!("SELECT changed_ms FROM {journal} WHERE seq = ?"),
        &[seq.to_string()],
        stage,
        "reading the journal's row at the position",
    )?
    .and_then(|t| integer(&t)))
}

/// How far below the journal's highest number a copy looks for numbers
/// still uncommitted when it begins (see the snapshot).
pub const MAX_GAPS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalPosition {
    /// The highest sequence read.
    pub seq: i64,
    /// Missing sequences below `seq`, as ranges: first → (last, when
    /// first missed, ms).
    pub gaps: BTreeMap<i64, (i64, i64)>,
    /// The change time of the row numbered `seq`, where it was read: a row
    /// of another time under that number is a journal that started over.
    pub mark: Option<i64>,
}

impl JournalPosition {
    /// Parses a saved position; a bare number is a position without gaps.
    pub fn parse(text: &str) -> Option<JournalPosition> {
        if let Ok(seq) = text.trim().parse::<i64>() {
            return Some(JournalPosition {
                seq,
                ..Default::default()
            });
        }
        let v: Value = serde_json::from_str(text).ok()?;
        let seq = v.get("seq")?.as_i64()?;
        // `[first, last, time]`, or `[number, time]` as saved before ranges.
        let gaps = v
            .get("gaps")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| {
                        let n: Vec<i64> = g
                            .as_array()?
                            .iter()
                            .map(Value::as_i64)
                            .collect::<Option<_>>()?;
                        match n[..] {
                            [first, last, t] => Some((first, (last, t))),
                            [one, t] => Some((one, (one, t))),
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mark = v.get("mark").and_then(Value::as_i64);
        Some(JournalPosition { seq, gaps, mark })
    }

    pub fn encode(&self) -> String {
        let mut v = json!({"seq": self.seq});
        if let Some(mark) = self.mark {
            v["mark"] = json!(mark);
        }
        if !self.gaps.is_empty() {
            let gaps: Vec<Value> = self
                .gaps
                .iter()
                .map(|(first, (last, t))| json!([first, last, t]))
                .collect();
            v["gaps"] = Value::Array(gaps);
        }
        v.to_string()
    }

    /// A position at `seq` whose numbers `missing` (ascending) are open gaps.
    pub fn with_missing(seq: i64, missing: &[i64], now_ms: i64) -> JournalPosition {
        let mut p = JournalPosition {
            seq,
            ..Default::default()
        };
        for &s in missing {
            match p.gaps.last_entry() {
                Some(mut last) if last.get().0 + 1 == s => last.get_mut().0 = s,
                _ => {
                    p.gaps.insert(s, (s, now_ms));
                }
            }
        }
        p
    }

    /// The gap holding `seq`, if one does: its first number.
    fn gap_of(&self, seq: i64) -> Option<i64> {
        self.gaps
            .range(..=seq)
            .next_back()
            .filter(|(_, (last, _))| seq <= *last)
            .map(|(first, _)| *first)
    }

    /// Takes `seq` out of its gap; whether it was in one.
    fn fill(&mut self, seq: i64) -> bool {
        let Some(first) = self.gap_of(seq) else {
            return false;
        };
        let (last, t) = self.gaps.remove(&first).expect("the gap just found");
        if first < seq {
            self.gaps.insert(first, (seq - 1, t));
        }
        if seq < last {
            self.gaps.insert(seq + 1, (last, t));
        }
        true
    }

    /// How many numbers the open gaps hold.
    pub fn open_gaps(&self) -> i64 {
        self.gaps
            .iter()
            .map(|(first, (last, _))| last - first + 1)
            .sum()
    }

    /// The open gaps as `(first, last)` ranges, in order.
    pub fn gap_ranges(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.gaps.iter().map(|(first, (last, _))| (*first, *last))
    }

    /// Whether a row with this sequence has not been read yet.
    pub fn is_unread(&self, seq: i64) -> bool {
        seq > self.seq || self.gap_of(seq).is_some()
    }

    /// Records the sequences of one poll: gap rows that appeared, then new
    /// rows in ascending order (every number skipped becomes a gap).
    /// Returns whether the row with each sequence is to be applied.
    pub fn read(&mut self, seqs: &[i64], now_ms: i64) -> Vec<bool> {
        let mut seen = std::collections::HashSet::new();
        let apply: Vec<bool> = seqs
            .iter()
            .map(|s| self.is_unread(*s) && seen.insert(*s))
            .collect();
        let mut sorted: Vec<i64> = seqs.to_vec();
        sorted.sort_unstable();
        for &s in &sorted {
            if self.fill(s) || s <= self.seq {
                continue;
            }
            // (A fresh position's gap starts at 1: see the module docs.)
            let from = self.seq + 1;
            if from < s {
                self.gaps.insert(from, (s - 1, now_ms));
            }
            self.seq = s;
        }
        apply
    }

    /// Forgets gaps missed since before `now_ms - timeout_ms`; returns
    /// them as `(first, last)` ranges.
    pub fn expire(&mut self, now_ms: i64, timeout_ms: i64) -> Vec<(i64, i64)> {
        let expired: Vec<(i64, i64)> = self
            .gaps
            .iter()
            .filter(|(_, (_, t))| now_ms - *t >= timeout_ms)
            .map(|(first, (last, _))| (*first, *last))
            .collect();
        for (first, _) in &expired {
            self.gaps.remove(first);
        }
        expired
    }

    /// Journal rows at or below this sequence were all read; those below it
    /// may go (the source keeps the row at it).
    pub fn prune_upto(&self) -> i64 {
        match self.gaps.keys().next() {
            Some(first) => (first - 1).min(self.seq),
            None => self.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(p: &JournalPosition) -> Vec<i64> {
        p.gap_ranges().flat_map(|(a, b)| a..=b).collect()
    }

    #[test]
    fn a_late_commit_below_the_highest_sequence_is_still_read() {
        let mut p = JournalPosition::default();
        // B (11) committed before A (10): 1..9 were read earlier.
        p.read(&(1..=9).collect::<Vec<_>>(), 0);
        p.read(&[11], 1_000);
        assert_eq!(p.seq, 11);
        assert!(p.is_unread(10));
        assert_eq!(p.prune_upto(), 9, "row 11 may not go before 10 is read");
        p.read(&[10, 12], 2_000);
        assert!(p.gaps.is_empty());
        assert_eq!(p.prune_upto(), 12);
    }

    #[test]
    fn a_fresh_position_waits_for_numbers_just_below_its_first_row() {
        // The journal was empty; 1,000 numbers were pruned before. B took
        // 1,006 and committed; A took 1,005 and has not yet.
        let mut p = JournalPosition::default();
        p.read(&[1_006], 0);
        assert!(p.is_unread(1_005));
        assert_eq!(p.open_gaps(), 1_005);
        assert_eq!(p.prune_upto(), 0);
        p.read(&[1_005], 1_000);
        assert!(!p.is_unread(1_005));
        let expired = p.expire(301_000, 300_000);
        assert_eq!(expired, vec![(1, 1_004)]);
        assert_eq!(p.prune_upto(), 1_006);
    }

    #[test]
    fn a_fresh_position_reads_a_whole_batch_job_that_commits_after_its_first_row() {
        // The copy found the journal empty. A batch job took 1..=1,000 and
        // is still open; another session's 1,001 is read first.
        let mut p = JournalPosition::default();
        p.read(&[1_001], 0);
        assert!((1..=1_000).all(|s| p.is_unread(s)));
        let apply = p.read(&(1..=1_000).collect::<Vec<_>>(), 1_000);
        assert!(apply.iter().all(|a| *a), "every row of the job is applied");
        assert!(p.gaps.is_empty());
    }

    #[test]
    fn a_gap_that_never_fills_expires() {
        let mut p = JournalPosition::default();
        p.read(&[1], 0);
        p.read(&[4], 1_000);
        assert_eq!(numbers(&p), vec![2, 3]);
        assert!(p.expire(60_000, 300_000).is_empty());
        assert_eq!(p.expire(301_000, 300_000), vec![(2, 3)]);
        assert_eq!(p.prune_upto(), 4);
    }

    #[test]
    fn a_transaction_of_fifty_thousand_rows_committed_late_is_read_whole() {
        // A batch job took 1,001..=51,000 and is still open; another
        // session's row 51,001 is read first.
        let mut p = JournalPosition::default();
        p.read(&(1..=1_000).collect::<Vec<_>>(), 0);
        p.read(&[51_001], 1_000);
        assert_eq!(p.open_gaps(), 50_000);
        assert_eq!(p.prune_upto(), 1_000);
        // It commits: its rows come back in pieces, in any order.
        let late: Vec<i64> = (1_001..=51_000).rev().collect();
        for chunk in late.chunks(7_000) {
            let apply = p.read(chunk, 2_000);
            assert!(apply.iter().all(|a| *a), "each row once");
        }
        assert!(p.gaps.is_empty());
        assert_eq!(p.prune_upto(), 51_001);
        assert!(!p.read(&[1_001], 3_000)[0], "not twice");
    }

    #[test]
    fn a_gap_filled_in_its_middle_splits() {
        let mut p = JournalPosition::default();
        p.read(&[1], 0);
        p.read(&[10], 5);
        p.read(&[5], 6);
        assert_eq!(p.gap_ranges().collect::<Vec<_>>(), vec![(2, 4), (6, 9)]);
        p.read(&[2, 9], 7);
        assert_eq!(p.gap_ranges().collect::<Vec<_>>(), vec![(3, 4), (6, 8)]);
        assert_eq!(
            JournalPosition::with_missing(10, &[3, 4, 6, 7, 8], 5)
                .gap_ranges()
                .collect::<Vec<_>>(),
            vec![(3, 4), (6, 8)]
        );
    }

    #[test]
    fn positions_round_trip_through_text() {
        let mut p = JournalPosition::default();
        p.read(&[1], 0);
        p.read(&[3, 7], 5);
        let again = JournalPosition::parse(&p.encode()).unwrap();
        assert_eq!(again, p);
        p.mark = Some(1_700_000_000_123);
        assert_eq!(JournalPosition::parse(&p.encode()).unwrap(), p);
        // Positions saved before marks and ranges existed.
        let old = JournalPosition::parse(r#"{"seq": 7, "gaps": [[5, 1], [6, 1]]}"#).unwrap();
        assert_eq!(old.mark, None);
        assert!(old.is_unread(5) && old.is_unread(6) && !old.is_unread(4));
        assert_eq!(JournalPosition::parse("42").unwrap().seq, 42);
        assert!(JournalPosition::parse("0/16B3748").is_none());
    }
}
