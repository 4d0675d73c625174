//! Transactions a copy did not see, kept so that their streamed changes win
//! over it.
//!
//! A snapshot reports the transactions in progress when it was taken, and
//! the stamp of its rows ([`connector_core::Snapshot::in_flight`]). Their
//! changes are not in the copy, yet PostgreSQL stamps a commit before the
//! commit becomes visible (before the WAL flush, and before a synchronous
//! standby confirms it), so such a change can carry an older time than the
//! copied row. Merged as it is, it would lose to the copy, and the provider's
//! own sink would then write the older copied value back over it.
//!
//! The copy saves what it did not see under `in-flight:<provider>` in the
//! store before it merges its first chunk: the listed transactions, and a
//! bound from which on no transaction was seen (PostgreSQL's xmax: a
//! transaction waiting for its commit to become visible may hold an xid at
//! or past it without being listed), each with the highest stamp of a copy
//! that missed it. The provider's source reads it when it starts (copies
//! and the stream of one provider never run side by side:
//! [`super::provider_lock`]) and raises a change of such a transaction to
//! at least that stamp + 1 before the merge.
//!
//! Raising is harmless for anything else an id may name later (a future
//! transaction past a bound): a later commit already
//! carries a later time, and `max(t, stamp + 1)` leaves it as it is. The
//! changes it must never touch are the ones the copy saw, and those are
//! before the bound and not listed. So entries are not expired one by one;
//! the newest [`MAX_ENTRIES`] listed ids (a snapshot sees at most as many
//! running transactions as the server has connections) and [`MAX_BOUNDS`]
//! bounds are kept.
//!
//! Crash and restart: the list is in the store, so a source opened after a
//! crash, or in another process, applies it too.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use connector_core::{ConnectorError, InFlight, RawChange};
use connector_store::Store;

/// Listed transactions kept; the oldest copy stamps go first.
pub const MAX_ENTRIES: usize = 100_000;
/// `from` bounds kept (one per snapshot opened); the oldest go first.
pub const MAX_BOUNDS: usize = 1_000;

pub fn key(provider: &str) -> String {
    format!("in-flight:{provider}")
}

/// The transactions whose changes must be raised above a copy's stamp.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Floors {
    /// Listed transactions: `[txn, stamp]`.
    txns: HashMap<u64, i64>,
    /// Every transaction from `bound` on: `[bound, stamp]`, by bound.
    from: Vec<(u64, i64)>,
    /// Per entry of `from`: the highest stamp of it and every lower bound.
    #[serde(skip)]
    reach: Vec<i64>,
}

impl Floors {
    /// Reads the saved form; anything unreadable is empty.
    pub fn parse(text: Option<&str>) -> Floors {
        let mut floors: Floors = text
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        floors.index();
        floors
    }

    /// Sorts the bounds and computes `reach`.
    fn index(&mut self) {
        self.from.sort_unstable();
        let mut highest = i64::MIN;
        self.reach = self
            .from
            .iter()
            .map(|(_, stamp)| {
                highest = highest.max(*stamp);
                highest
            })
            .collect();
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Adds what a copy did not see, keeping each transaction's highest
    /// stamp and the newest [`MAX_ENTRIES`] and [`MAX_BOUNDS`].
    pub fn add(&mut self, copy: &InFlight) {
        for txn in &copy.txns {
            let stamp = self.txns.entry(*txn).or_insert(copy.as_of_ms);
            *stamp = (*stamp).max(copy.as_of_ms);
        }
        if self.txns.len() > MAX_ENTRIES {
            let mut by_stamp: Vec<(i64, u64)> = self.txns.iter().map(|(t, s)| (*s, *t)).collect();
            by_stamp.sort_unstable();
            let excess = self.txns.len() - MAX_ENTRIES;
            for (_, txn) in &by_stamp[..excess] {
                self.txns.remove(txn);
            }
        }
        if let Some(bound) = copy.from {
            self.from.push((bound, copy.as_of_ms));
            self.from
                .sort_unstable_by_key(|(_, stamp)| std::cmp::Reverse(*stamp));
            self.from.truncate(MAX_BOUNDS);
        }
        self.index();
    }

    /// The stamp a change of `txn` must be raised above, if any.
    fn floor(&self, txn: u64) -> Option<i64> {
        let listed = self.txns.get(&txn).copied();
        let below = self.from.partition_point(|(bound, _)| *bound <= txn);
        let bounded = below.checked_sub(1).map(|i| self.reach[i]);
        listed.max(bounded)
    }

    /// Raises the commit time of every change of a transaction a copy did
    /// not see above the copy's stamp; returns how many changes were raised.
    pub fn raise(&self, changes: &mut [RawChange]) -> usize {
        if self.txns.is_empty() && self.from.is_empty() {
            return 0;
        }
        let mut raised = 0;
        for c in changes {
            let (Some(txn), Some(ts)) = (c.txn, c.commit_ts_ms) else {
                continue;
            };
            if let Some(stamp) = self.floor(txn) {
                if ts <= stamp {
                    c.commit_ts_ms = Some(stamp + 1);
                    raised += 1;
                }
            }
        }
        raised
    }
}

/// Saves a copy's running transactions for `provider`'s sources.
pub fn save(store: &mut Store, provider: &str, copy: &InFlight) -> Result<(), ConnectorError> {
    if copy.txns.is_empty() && copy.from.is_none() {
        return Ok(());
    }
    store
        .update_position(&key(provider), |old| {
            let mut floors = Floors::parse(old.as_deref());
            floors.add(copy);
            floors.to_json()
        })
        .map_err(ConnectorError::from)
}

/// The saved list of `provider`. A source reads it once as it starts: the
/// provider's lock ([`super::provider_lock`]) keeps any copy of the
/// provider from running beside the stream, so it cannot change meanwhile.
pub fn load(store: &Store, provider: &str) -> Result<Floors, ConnectorError> {
    let text = store
        .position(&key(provider))
        .map_err(ConnectorError::from)?;
    Ok(Floors::parse(text.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::RawOp;

    fn change(txn: Option<u64>, ts: i64) -> RawChange {
        RawChange {
            table: "orders".into(),
            schema: None,
            op: RawOp::Update,
            row: Default::default(),
            before: None,
            commit_ts_ms: Some(ts),
            unchanged: Vec::new(),
            unchanged_from: None,
            own_write: false,
            txn,
        }
    }

    #[test]
    fn only_listed_transactions_older_than_the_copy_are_raised() {
        let mut floors = Floors::default();
        floors.add(&InFlight {
            as_of_ms: 1_000,
            txns: vec![7, 9],
            from: None,
        });
        let mut changes = vec![
            change(Some(7), 990),   // committed before the copy's stamp, not in it
            change(Some(9), 1_500), // already later
            change(Some(8), 990),   // visible to the copy: its value is in it
            change(None, 990),
        ];
        assert_eq!(floors.raise(&mut changes), 1);
        let ts: Vec<_> = changes.iter().map(|c| c.commit_ts_ms.unwrap()).collect();
        assert_eq!(ts, vec![1_001, 1_500, 990, 990]);
    }

    #[test]
    fn transactions_from_the_bound_on_are_raised() {
        let mut floors = Floors::default();
        let bound = 1 << 32; // epoch 1, xid 0
        floors.add(&InFlight {
            as_of_ms: 1_000,
            txns: vec![],
            from: Some(bound),
        });
        let mut changes = vec![
            change(Some(bound - 1), 990), // seen by the copy
            change(Some(bound), 990),     // committing as the copy began
            change(Some(bound + 3), 990),
            change(Some(bound + 1), 2_000),
        ];
        assert_eq!(floors.raise(&mut changes), 2);
        let ts: Vec<_> = changes.iter().map(|c| c.commit_ts_ms.unwrap()).collect();
        assert_eq!(ts, vec![990, 1_001, 1_001, 2_000]);
    }

    #[test]
    fn a_transaction_past_several_bounds_takes_the_highest_of_their_stamps() {
        let mut floors = Floors::default();
        for (bound, stamp) in [(20, 50), (10, 100), (30, 70)] {
            floors.add(&InFlight {
                as_of_ms: stamp,
                txns: vec![],
                from: Some(bound),
            });
        }
        let floors = Floors::parse(Some(&floors.to_json()));
        assert_eq!(floors.floor(5), None);
        assert_eq!(floors.floor(10), Some(100));
        assert_eq!(floors.floor(25), Some(100));
        assert_eq!(floors.floor(u64::MAX), Some(100));
    }

    #[test]
    fn a_later_copy_missing_the_same_transaction_raises_it_further() {
        let mut floors = Floors::default();
        floors.add(&InFlight {
            as_of_ms: 2_000,
            txns: vec![7],
            from: None,
        });
        floors.add(&InFlight {
            as_of_ms: 1_000,
            txns: vec![7, 8],
            from: None,
        });
        let back = Floors::parse(Some(&floors.to_json()));
        assert_eq!(back, floors);
        let mut changes = vec![change(Some(7), 500), change(Some(8), 500)];
        back.raise(&mut changes);
        assert_eq!(changes[0].commit_ts_ms, Some(2_001));
        assert_eq!(changes[1].commit_ts_ms, Some(1_001));
    }

    #[test]
    fn the_list_keeps_the_newest_entries() {
        let mut floors = Floors::default();
        floors.add(&InFlight {
            as_of_ms: 1,
            txns: (0..MAX_ENTRIES as u64).collect(),
            from: None,
        });
        floors.add(&InFlight {
            as_of_ms: 2,
            txns: vec![u64::MAX],
            from: None,
        });
        assert_eq!(floors.txns.len(), MAX_ENTRIES);
        assert_eq!(floors.txns.get(&u64::MAX), Some(&2));
        for i in 0..2 * MAX_BOUNDS as i64 {
            floors.add(&InFlight {
                as_of_ms: 100 + i,
                txns: Vec::new(),
                from: Some(1_000),
            });
        }
        assert_eq!(floors.from.len(), MAX_BOUNDS);
        assert_eq!(floors.floor(1_000), Some(100 + 2 * MAX_BOUNDS as i64 - 1));
        assert_eq!(Floors::parse(Some("not json")), Floors::default());
    }

    #[test]
    fn saved_lists_accumulate_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("store.db")).unwrap();
        for (as_of_ms, txn, from) in [(100, 1, None), (200, 2, Some(10))] {
            let copy = InFlight {
                as_of_ms,
                txns: vec![txn],
                from,
            };
            save(&mut store, "hq", &copy).unwrap();
        }
        let floors = load(&store, "hq").unwrap();
        let mut changes = vec![
            change(Some(1), 50),
            change(Some(2), 50),
            change(Some(9), 50),
            change(Some(10), 50),
        ];
        assert_eq!(floors.raise(&mut changes), 3);
        let ts: Vec<_> = changes.iter().map(|c| c.commit_ts_ms.unwrap()).collect();
        assert_eq!(ts, vec![101, 201, 50, 201]);
        // Another provider's list is its own.
        let mut other = vec![change(Some(1), 50)];
        assert_eq!(load(&store, "shop").unwrap().raise(&mut other), 0);
        assert!(store.known_providers().unwrap().is_empty());
    }
}
