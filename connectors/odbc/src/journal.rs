//! The poller's position in the change journal, and why it is more than a
//! number.
//!
//! Journal rows are numbered when the trigger runs, but become visible when
//! their transaction commits: transaction A may take sequence 10, B take 11
//! and commit first. A poller that only remembered "11" would never read 10.
//! So the position is the highest sequence read *plus the numbers below it
//! not seen yet* (gaps), each with the time it was first missed. Every poll
//! reads the rows after the highest sequence and the rows whose numbers are
//! gaps; a gap that fills is read then. A gap that stays empty longer than
//! the gap timeout is a rolled-back transaction (or an identity value a
//! restart skipped) and is forgotten. A fresh position (the journal was
//! empty, or never read) takes the [`FRESH_GAPS`] numbers below the first
//! row it reads for gaps: it cannot know what is below, and a transaction
//! holding one of them may still commit.
//!
//! The position is saved in the store together with the changes it covers,
//! so a restart re-reads exactly what was not merged. Pruning deletes only
//! journal rows that were read: those below the highest sequence and below
//! the lowest open gap. The row at the highest sequence read stays, so the
//! journal's highest number is never below the position unless the journal
//! started over (see the source).

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// At most this many open gaps are remembered (the oldest go first).
pub const MAX_GAPS: usize = 10_000;
/// A fresh position (nothing read yet, e.g. the journal was empty when the
/// copy began) takes this many numbers below the first row it reads for
/// gaps: a transaction that took one of them and commits later is still
/// read. Numbers that were pruned or rolled back expire after the timeout.
pub const FRESH_GAPS: i64 = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalPosition {
    /// The highest sequence read.
    pub seq: i64,
    /// Missing sequences below `seq` → when first missed (ms).
    pub gaps: BTreeMap<i64, i64>,
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
        let gaps = v
            .get("gaps")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| Some((g.get(0)?.as_i64()?, g.get(1)?.as_i64()?)))
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
            let gaps: Vec<Value> = self.gaps.iter().map(|(s, t)| json!([s, t])).collect();
            v["gaps"] = Value::Array(gaps);
        }
        v.to_string()
    }

    /// Whether a row with this sequence has not been read yet.
    pub fn is_unread(&self, seq: i64) -> bool {
        seq > self.seq || self.gaps.contains_key(&seq)
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
            if self.gaps.remove(&s).is_some() || s <= self.seq {
                continue;
            }
            // A fresh position knows nothing below its first row but the
            // last FRESH_GAPS numbers; a jump larger than the gap limit
            // keeps only its top end.
            let from = if self.seq == 0 {
                (s - FRESH_GAPS).max(1)
            } else {
                (self.seq + 1).max(s - MAX_GAPS as i64)
            };
            for missing in from..s {
                self.gaps.insert(missing, now_ms);
            }
            self.seq = s;
        }
        while self.gaps.len() > MAX_GAPS {
            self.gaps.pop_first();
        }
        apply
    }

    /// Forgets gaps missed since before `now_ms - timeout_ms`; returns them.
    pub fn expire(&mut self, now_ms: i64, timeout_ms: i64) -> Vec<i64> {
        let expired: Vec<i64> = self
            .gaps
            .iter()
            .filter(|(_, t)| now_ms - **t >= timeout_ms)
            .map(|(s, _)| *s)
            .collect();
        for s in &expired {
            self.gaps.remove(s);
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
        assert_eq!(p.gaps.len(), FRESH_GAPS as usize);
        assert_eq!(p.prune_upto(), 1_006 - FRESH_GAPS - 1);
        p.read(&[1_005], 1_000);
        assert!(!p.is_unread(1_005));
        assert_eq!(p.expire(301_000, 300_000).len(), FRESH_GAPS as usize - 1);
        assert_eq!(p.prune_upto(), 1_006);
    }

    #[test]
    fn a_gap_that_never_fills_expires() {
        let mut p = JournalPosition::default();
        p.read(&[1], 0);
        p.read(&[4], 1_000);
        assert_eq!(p.gaps.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert!(p.expire(60_000, 300_000).is_empty());
        assert_eq!(p.expire(301_000, 300_000), vec![2, 3]);
        assert_eq!(p.prune_upto(), 4);
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
        // Positions saved before marks existed read without one.
        assert_eq!(
            JournalPosition::parse(r#"{"seq": 7, "gaps": [[5, 1]]}"#)
                .unwrap()
                .mark,
            None
        );
        assert_eq!(JournalPosition::parse("42").unwrap().seq, 42);
        assert!(JournalPosition::parse("0/16B3748").is_none());
    }
}
