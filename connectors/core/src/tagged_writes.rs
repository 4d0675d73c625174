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
//! documents it wrote ([`record`]); the provider's source takes each marked
//! transaction's record once ([`written`]) and looks up its changes'
//! documents there: one it did not write is the database's own change,
//! merged as any other.
//!
//! The registry is per process (a provider's source and sink always run in
//! one) and in memory. A transaction it does not know (written before a
//! restart, or evicted past [`MAX_DOCS`]) is taken as all ours, as before:
//! merging our own echo as the database's change could put an older value
//! over a newer one, while the worst of the other mistake is a trigger's
//! change reverted. For the same reason documents are told apart loosely
//! ([`loose_key`]: the id's parts as lowercase text), so an id the database
//! gives back in another form (`"5"` written into an integer key, a UUID
//! in capitals) is still ours. A batch's transactions are forgotten once
//! the store has merged it ([`forget`]; a batch merged again after a failure
//! still finds them); one whose COMMIT failed is evicted in turn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Documents kept over all of a provider's recorded transactions; the
/// oldest transactions go first.
pub const MAX_DOCS: usize = 20_000;

#[derive(Default)]
struct Written {
    /// Transactions in the order recorded (forgotten ones are skipped when
    /// they come up for eviction).
    order: VecDeque<u64>,
    docs: HashMap<u64, Arc<HashSet<String>>>,
    total: usize,
}

/// A document as both sides can name it: the collection and the id's parts
/// in order (a composite id's values), each as lowercase text.
pub fn loose_key<'a>(collection: &str, parts: impl IntoIterator<Item = &'a Value>) -> String {
    let mut key = collection.to_string();
    for part in parts {
        key.push('\u{1f}');
        match part {
            Value::String(s) => key.push_str(&s.to_lowercase()),
            other => key.push_str(&other.to_string().to_lowercase()),
        }
    }
    key
}

/// The parts of a document id, in order (one for a scalar id).
pub fn id_parts(id: &Value) -> Vec<&Value> {
    match id {
        Value::Object(parts) => parts.values().collect(),
        scalar => vec![scalar],
    }
}

static REGISTRY: Mutex<Option<HashMap<String, Written>>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut HashMap<String, Written>) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Transaction `txn` of `provider`'s sink writes these documents
/// ([`loose_key`]s); called before its COMMIT.
pub fn record(provider: &str, txn: u64, docs: impl IntoIterator<Item = String>) {
    with(|all| {
        let w = all.entry(provider.to_string()).or_default();
        let set = w.docs.entry(txn).or_insert_with(|| {
            w.order.push_back(txn);
            Arc::default()
        });
        let set = Arc::make_mut(set);
        let before = set.len();
        set.extend(docs);
        w.total += set.len() - before;
        while w.total > MAX_DOCS && w.docs.len() > 1 {
            let Some(oldest) = w.order.pop_front() else {
                break;
            };
            if oldest == txn {
                w.order.push_back(txn);
                continue;
            }
            if let Some(gone) = w.docs.remove(&oldest) {
                w.total -= gone.len();
            }
        }
    })
}

/// The documents ([`loose_key`]s) `provider`'s sink transaction `txn`
/// wrote; `None` when the transaction is not known here.
pub fn written(provider: &str, txn: u64) -> Option<Arc<HashSet<String>>> {
    with(|all| all.get(provider)?.docs.get(&txn).cloned())
}

/// The store has merged these transactions' changes.
pub fn forget(provider: &str, txns: impl IntoIterator<Item = u64>) {
    with(|all| {
        let Some(w) = all.get_mut(provider) else {
            return;
        };
        for txn in txns {
            if let Some(gone) = w.docs.remove(&txn) {
                w.total -= gone.len();
            }
        }
        if w.docs.is_empty() {
            w.order.clear();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn doc(id: u32) -> String {
        loose_key("orders", [&json!(id)])
    }

    fn wrote(provider: &str, txn: u64, key: &str) -> Option<bool> {
        written(provider, txn).map(|docs| docs.contains(key))
    }

    #[test]
    fn a_recorded_transaction_tells_its_documents_from_others() {
        record("t-tells", 7, [doc(1), doc(2)]);
        assert_eq!(wrote("t-tells", 7, &doc(1)), Some(true));
        assert_eq!(wrote("t-tells", 7, &doc(3)), Some(false));
        assert_eq!(
            wrote("t-tells", 7, &loose_key("stores", [&json!(1)])),
            Some(false)
        );
        assert_eq!(wrote("t-tells", 8, &doc(1)), None);
        assert_eq!(wrote("other", 7, &doc(1)), None);
        forget("t-tells", [7]);
        assert_eq!(wrote("t-tells", 7, &doc(1)), None);
    }

    #[test]
    fn an_id_given_back_in_another_form_is_the_same_document() {
        let written = loose_key("orders", [&json!("5"), &json!("AB-C")]);
        let read = json!({"order_id": 5, "line": "ab-c"});
        assert_eq!(written, loose_key("orders", id_parts(&read)));
        assert_ne!(written, loose_key("orders", [&json!(5), &json!("ab-d")]));
    }

    #[test]
    fn the_oldest_transactions_go_past_the_bound() {
        let per = MAX_DOCS / 4;
        for txn in 0..6u64 {
            record("t-bound", txn, (0..per as u32).map(doc));
        }
        assert_eq!(wrote("t-bound", 0, &doc(0)), None);
        assert_eq!(wrote("t-bound", 1, &doc(0)), None);
        for txn in 2..6 {
            assert_eq!(wrote("t-bound", txn, &doc(0)), Some(true));
        }
        // Forgotten ones are skipped, not evicted twice.
        forget("t-bound", [3]);
        record("t-bound", 6, (0..per as u32).map(doc));
        assert_eq!(wrote("t-bound", 2, &doc(0)), Some(true));
        // A transaction alone over the bound is kept whole.
        record("t-huge", 1, (0..MAX_DOCS as u32 + 10).map(doc));
        assert_eq!(wrote("t-huge", 1, &doc(5)), Some(true));
    }
}
