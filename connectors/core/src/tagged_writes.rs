//! Which documents each of our tagged sink transactions wrote.
//!
//! A sink that tags its transactions (PostgreSQL: a replication origin)
//! makes every change of such a transaction come back through the feed
//! marked as our own write, and the store takes a marked change as an echo
//! without merging it. But a transaction holds more than our rows: a
//! target's trigger updating another mapped row (a stock count lowered by
//! an order line), or an `ON DELETE CASCADE`, runs inside it and carries
//! the tag too. Taken as echoes, those changes were never merged, and the
//! sink then wrote the store's older value back over them.
//!
//! So the sink records, before its COMMIT, the transaction's id and the
//! documents it wrote ([`record`]); the provider's source asks for each
//! marked change whether its transaction wrote that document ([`wrote`]):
//! one it did not write is the database's own change, merged as any other.
//!
//! The registry is per process (a provider's source and sink always run in
//! one) and in memory. A transaction it does not know (written before a
//! restart, or evicted past [`MAX_DOCS`]) is taken as all ours, as before:
//! merging our own echo as the database's change could put an older value
//! over a newer one, while the worst of the other mistake is a trigger's
//! change reverted. A batch's transactions are forgotten once the source
//! has mapped it ([`forget`]); one whose COMMIT failed is evicted in turn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

/// Documents kept over all of a provider's recorded transactions; the
/// oldest transactions go first.
pub const MAX_DOCS: usize = 50_000;

#[derive(Default)]
struct Written {
    /// Transactions in the order recorded.
    order: VecDeque<u64>,
    docs: HashMap<u64, HashSet<(String, String)>>,
    total: usize,
}

static REGISTRY: Mutex<Option<HashMap<String, Written>>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut HashMap<String, Written>) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Transaction `txn` of `provider`'s sink writes these documents
/// (collection, id key); called before its COMMIT.
pub fn record(provider: &str, txn: u64, docs: impl IntoIterator<Item = (String, String)>) {
    with(|all| {
        let w = all.entry(provider.to_string()).or_default();
        let set = w.docs.entry(txn).or_insert_with(|| {
            w.order.push_back(txn);
            HashSet::new()
        });
        let before = set.len();
        set.extend(docs);
        w.total += set.len() - before;
        while w.total > MAX_DOCS && w.order.len() > 1 {
            let oldest = w.order.pop_front().expect("more than one");
            if let Some(gone) = w.docs.remove(&oldest) {
                w.total -= gone.len();
            }
        }
    })
}

/// Whether `provider`'s sink transaction `txn` wrote the document; `None`
/// when the transaction is not known here.
pub fn wrote(provider: &str, txn: u64, collection: &str, id_key: &str) -> Option<bool> {
    with(|all| {
        let set = all.get(provider)?.docs.get(&txn)?;
        Some(set.contains(&(collection.to_string(), id_key.to_string())))
    })
}

/// The source has taken these transactions' changes.
pub fn forget(provider: &str, txns: impl IntoIterator<Item = u64>) {
    with(|all| {
        let Some(w) = all.get_mut(provider) else {
            return;
        };
        for txn in txns {
            if let Some(gone) = w.docs.remove(&txn) {
                w.total -= gone.len();
                w.order.retain(|t| *t != txn);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: u32) -> (String, String) {
        ("orders".to_string(), id.to_string())
    }

    #[test]
    fn a_recorded_transaction_tells_its_documents_from_others() {
        record("t-tells", 7, [doc(1), doc(2)]);
        assert_eq!(wrote("t-tells", 7, "orders", "1"), Some(true));
        assert_eq!(wrote("t-tells", 7, "orders", "3"), Some(false));
        assert_eq!(wrote("t-tells", 7, "stores", "1"), Some(false));
        assert_eq!(wrote("t-tells", 8, "orders", "1"), None);
        assert_eq!(wrote("other", 7, "orders", "1"), None);
        forget("t-tells", [7]);
        assert_eq!(wrote("t-tells", 7, "orders", "1"), None);
    }

    #[test]
    fn the_oldest_transactions_go_past_the_bound() {
        let per = MAX_DOCS / 4;
        for txn in 0..6u64 {
            record("t-bound", txn, (0..per as u32).map(doc));
        }
        assert_eq!(wrote("t-bound", 0, "orders", "0"), None);
        assert_eq!(wrote("t-bound", 1, "orders", "0"), None);
        for txn in 2..6 {
            assert_eq!(wrote("t-bound", txn, "orders", "0"), Some(true));
        }
        // A transaction alone over the bound is kept whole.
        record("t-huge", 1, (0..MAX_DOCS as u32 + 10).map(doc));
        assert_eq!(wrote("t-huge", 1, "orders", "5"), Some(true));
    }
}
