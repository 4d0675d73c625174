//! Row-by-row writing after a batch failed: which rows to try, in what
//! order, and which to give up on.
//!
//! When a batch statement fails for a row's own fault, the sink writes the
//! batch again one row at a time (each under a savepoint, or committed
//! alone) to find the rows the database rejects. A row that breaks an
//! integrity constraint may only be early: its parent row comes later in
//! the same batch (a cycle of foreign keys, or an order the catalog did not
//! tell). Such a row is put back and tried again after the others, pass
//! after pass while a pass writes something; what still fails then is
//! rejected with its last error. Any other bad-record error rejects the row
//! at once.

use std::collections::VecDeque;

/// The rows still to try and the rejected ones.
#[derive(Debug)]
pub struct RowPasses {
    todo: VecDeque<usize>,
    /// Put back in this pass, with their errors.
    later: Vec<(usize, String)>,
    wrote_in_pass: bool,
    rejected: Vec<(usize, String)>,
}

impl RowPasses {
    pub fn new(rows: impl IntoIterator<Item = usize>) -> RowPasses {
        RowPasses {
            todo: rows.into_iter().collect(),
            later: Vec::new(),
            wrote_in_pass: false,
            rejected: Vec::new(),
        }
    }

    /// The next row to try, or `None` when every row is written or given up.
    pub fn next_row(&mut self) -> Option<usize> {
        if self.todo.is_empty() && !self.later.is_empty() {
            if self.wrote_in_pass {
                self.todo.extend(self.later.drain(..).map(|(i, _)| i));
                self.wrote_in_pass = false;
            } else {
                self.rejected.append(&mut self.later);
            }
        }
        self.todo.pop_front()
    }

    pub fn written(&mut self) {
        self.wrote_in_pass = true;
    }

    /// The row failed; `constraint`: an integrity constraint another row
    /// of the batch may satisfy (tried again after the others).
    pub fn failed(&mut self, row: usize, constraint: bool, error: String) {
        if constraint {
            self.later.push((row, error));
        } else {
            self.rejected.push((row, error));
        }
    }

    /// The rejected rows and why, in batch order.
    pub fn rejected(mut self) -> Vec<(usize, String)> {
        self.rejected.sort_by_key(|(i, _)| *i);
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows 0..n; row `i` needs row `needs[i]` written first.
    fn run(needs: &[Option<usize>], bad: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let mut passes = RowPasses::new(0..needs.len());
        let mut written = Vec::new();
        while let Some(i) = passes.next_row() {
            if bad.contains(&i) {
                passes.failed(i, false, "bad".into());
            } else if needs[i].is_some_and(|p| !written.contains(&p)) {
                passes.failed(i, true, "parent missing".into());
            } else {
                written.push(i);
                passes.written();
            }
        }
        (
            written,
            passes.rejected().into_iter().map(|(i, _)| i).collect(),
        )
    }

    #[test]
    fn children_before_parents_are_written_in_later_passes() {
        // 0 needs 1, 1 needs 2, 2 needs nothing, 3 is bad.
        let (written, rejected) = run(&[Some(1), Some(2), None, None], &[3]);
        assert_eq!(written, [2, 1, 0]);
        assert_eq!(rejected, [3]);
    }

    #[test]
    fn rows_that_wait_on_each_other_or_on_nothing_present_are_rejected() {
        // 0 and 1 need each other; 2 needs a row that failed for good.
        let (written, rejected) = run(&[Some(1), Some(0), Some(3), None, None], &[3]);
        assert_eq!(written, [4]);
        assert_eq!(rejected, [0, 1, 2, 3]);
    }
}
