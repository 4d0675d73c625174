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
//! at once. Tries are capped at four per row of the batch in all (a chain
//! of rows each waiting for the next would otherwise take a pass per row,
//! n² statements): past the cap, every row still waiting is rejected.

use std::collections::VecDeque;

use crate::Refused;

/// The rows still to try and the rejected ones.
#[derive(Debug)]
pub struct RowPasses {
    todo: VecDeque<usize>,
    /// Put back in this pass, with their errors.
    later: Vec<Refused>,
    /// The last refusal of rows put back into `todo` (given if the cap
    /// stops them).
    refused_before: Vec<Refused>,
    wrote_in_pass: bool,
    rejected: Vec<Refused>,
    /// Tries left before every waiting row is rejected.
    tries_left: usize,
}

impl RowPasses {
    pub fn new(rows: impl IntoIterator<Item = usize>) -> RowPasses {
        let todo: VecDeque<usize> = rows.into_iter().collect();
        RowPasses {
            tries_left: todo.len() * 4,
            todo,
            later: Vec::new(),
            refused_before: Vec::new(),
            wrote_in_pass: false,
            rejected: Vec::new(),
        }
    }

    /// The next row to try, or `None` when every row is written or given up.
    pub fn next_row(&mut self) -> Option<usize> {
        if self.tries_left == 0 {
            self.rejected.append(&mut self.later);
            let mut before = std::mem::take(&mut self.refused_before);
            self.rejected.extend(self.todo.drain(..).map(|row| {
                match before.iter().position(|r| r.row == row) {
                    Some(i) => before.swap_remove(i),
                    None => Refused {
                        row,
                        reason: "not tried: the batch's rows wait on each other too long"
                            .to_string(),
                        awaits_reference: false,
                    },
                }
            }));
            return None;
        }
        self.tries_left -= 1;
        if self.todo.is_empty() && !self.later.is_empty() {
            if self.wrote_in_pass {
                self.todo.extend(self.later.iter().map(|r| r.row));
                self.refused_before = std::mem::take(&mut self.later);
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
    pub fn failed(&mut self, refused: Refused, constraint: bool) {
        if constraint {
            self.later.push(refused);
        } else {
            self.rejected.push(refused);
        }
    }

    /// The rejected rows and why, in row order.
    pub fn rejected(mut self) -> Vec<Refused> {
        self.rejected.sort_by_key(|r| r.row);
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
            let refused = |reason: &str| Refused {
                row: i,
                reason: reason.into(),
                awaits_reference: false,
            };
            if bad.contains(&i) {
                passes.failed(refused("bad"), false);
            } else if needs[i].is_some_and(|p| !written.contains(&p)) {
                passes.failed(refused("parent missing"), true);
            } else {
                written.push(i);
                passes.written();
            }
        }
        (
            written,
            passes.rejected().into_iter().map(|r| r.row).collect(),
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
    fn rows_the_cap_stops_keep_their_last_refusal() {
        // Row i needs row i + 1, refused by a foreign key each time.
        let n = 100;
        let mut passes = RowPasses::new(0..n);
        let mut written = Vec::new();
        while let Some(i) = passes.next_row() {
            if i + 1 < n && !written.contains(&(i + 1)) {
                let refused = Refused {
                    row: i,
                    reason: "foreign key".into(),
                    awaits_reference: true,
                };
                passes.failed(refused, true);
            } else {
                written.push(i);
                passes.written();
            }
        }
        let rejected = passes.rejected();
        assert_eq!(written.len() + rejected.len(), n);
        assert!(
            rejected
                .iter()
                .all(|r| r.awaits_reference && r.reason == "foreign key"),
            "{rejected:?}"
        );
    }

    #[test]
    fn a_long_chain_stops_at_the_cap() {
        // Row i needs row i + 1: one row written per pass.
        let n = 100;
        let needs: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n).then_some(i + 1)).collect();
        let (written, rejected) = run(&needs, &[]);
        assert!(
            written.len() < n && !written.is_empty(),
            "{}",
            written.len()
        );
        assert_eq!(written.len() + rejected.len(), n);
    }

    #[test]
    fn rows_that_wait_on_each_other_or_on_nothing_present_are_rejected() {
        // 0 and 1 need each other; 2 needs a row that failed for good.
        let (written, rejected) = run(&[Some(1), Some(0), Some(3), None, None], &[3]);
        assert_eq!(written, [4]);
        assert_eq!(rejected, [0, 1, 2, 3]);
    }
}
