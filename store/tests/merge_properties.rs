//! Property tests of the merge: any set of writes, applied to three
//! replicas in different orders and with duplicates, ends in identical
//! documents; deletes and resurrections follow the stamps.

use std::collections::BTreeMap;

use connector_store::{DocState, Durability, Stamp, Store, Write, WriteKind};
use proptest::prelude::*;
use serde_json::{json, Value};

const ORIGINS: [&str; 3] = ["hq", "shop", "mongo"];
const FIELDS: [&str; 4] = ["status", "total", "note", "tags"];

fn value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        any::<i32>().prop_map(|n| Some(json!(n))),
        "[a-c]{0,3}".prop_map(|s| Some(json!(s))),
        Just(Some(json!({"nested": [1, 2]}))),
        Just(Some(Value::Null)),
    ]
}

fn write() -> impl Strategy<Value = Write> {
    let stamp = (0u64..40, 0usize..3).prop_map(|(hlc, o)| Stamp::new(hlc, ORIGINS[o]));
    let set = (
        prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), value(), 0..4),
        prop::collection::btree_map(Just("quantity"), -50.0f64..50.0, 0..2),
    )
        .prop_map(|(fields, counters)| WriteKind::Set {
            unset: fields
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.to_string())
                .collect(),
            fields: fields
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
            counters: counters
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.round()))
                .collect(),
            copied: false,
        });
    let kind = prop_oneof![4 => set, 1 => Just(WriteKind::Delete)];
    (stamp, kind).prop_map(|(stamp, kind)| Write { stamp, kind })
}

/// The writes shuffled by `order`, with the writes picked by `dups` repeated.
fn arrange(writes: &[Write], order: &[usize], dups: &[usize]) -> Vec<Write> {
    let mut idx: Vec<usize> = (0..writes.len()).collect();
    // a deterministic shuffle from the proptest-chosen keys
    idx.sort_by_key(|i| order.get(*i).copied().unwrap_or(*i));
    let mut out: Vec<Write> = idx.iter().map(|i| writes[*i].clone()).collect();
    for d in dups {
        if !writes.is_empty() {
            let w = writes[d % writes.len()].clone();
            out.insert(d % (out.len() + 1), w);
        }
    }
    out
}

fn replay(writes: &[Write]) -> DocState {
    let mut state = DocState::default();
    for w in writes {
        state.apply(w);
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn three_replicas_converge_whatever_the_order(
        writes in prop::collection::vec(write(), 0..24),
        o1 in prop::collection::vec(any::<usize>(), 24),
        o2 in prop::collection::vec(any::<usize>(), 24),
        d1 in prop::collection::vec(any::<usize>(), 0..6),
        d2 in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        // Two writes with the same stamp are the same write in a real system.
        let mut unique: BTreeMap<Stamp, Write> = BTreeMap::new();
        for w in writes { unique.entry(w.stamp.clone()).or_insert(w); }
        let writes: Vec<Write> = unique.into_values().collect();

        let a = replay(&writes);
        let b = replay(&arrange(&writes, &o1, &d1));
        let mut reversed = arrange(&writes, &o2, &d2);
        reversed.reverse();
        let c = replay(&reversed);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c);
        prop_assert_eq!(a.materialize(), c.materialize());
        // Idempotent: everything again changes nothing.
        let mut again = a.clone();
        for w in &writes { prop_assert!(!again.apply(w)); }
        prop_assert_eq!(again, a);
    }

    #[test]
    fn deletes_and_resurrections_follow_the_stamps(
        write_hlc in 0u64..100, delete_hlc in 0u64..100, delete_first in any::<bool>(),
    ) {
        let w = Write {
            stamp: Stamp::new(write_hlc, "hq"),
            kind: WriteKind::Set {
                fields: [("a".to_string(), json!(1))].into_iter().collect(),
                unset: Default::default(),
                counters: Default::default(),
                copied: false,
            },
        };
        let d = Write { stamp: Stamp::new(delete_hlc, "shop"), kind: WriteKind::Delete };
        let order = if delete_first { [&d, &w] } else { [&w, &d] };
        let mut state = DocState::default();
        for x in order { state.apply(x); }
        // Equal hlc: the origin breaks the tie ("hq" < "shop": the delete wins).
        let write_wins = (write_hlc, "hq") > (delete_hlc, "shop");
        prop_assert_eq!(state.exists(), write_wins);
        prop_assert_eq!(state.materialize().is_some(), write_wins);
    }
}

/// The same property through SQLite: three store files merge the same
/// writes in different orders and end with identical documents.
#[test]
fn three_sqlite_stores_converge() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    let strategy = (
        prop::collection::vec((0usize..4, write()), 1..40),
        prop::collection::vec(any::<usize>(), 40),
    );
    runner
        .run(&strategy, |(writes, order)| {
            let dir = tempfile::tempdir().unwrap();
            let mut unique: BTreeMap<Stamp, (usize, Write)> = BTreeMap::new();
            for (doc, w) in writes {
                unique.entry(w.stamp.clone()).or_insert((doc, w));
            }
            let batch: Vec<(String, Value, Write)> = unique
                .into_values()
                .map(|(doc, w)| ("orders".to_string(), json!(doc), w))
                .collect();
            let mut stores: Vec<Store> = (0..3)
                .map(|i| {
                    Store::open_with(dir.path().join(format!("s{i}.db")), Durability::Normal)
                        .unwrap()
                })
                .collect();
            stores[0].merge_writes(&batch).unwrap();
            let mut shuffled: Vec<_> = batch.iter().enumerate().collect();
            shuffled.sort_by_key(|(i, _)| order[*i % order.len()]);
            let shuffled: Vec<_> = shuffled.into_iter().map(|(_, w)| w.clone()).collect();
            // one at a time, then everything again (duplicates)
            for w in &shuffled {
                stores[1].merge_writes(std::slice::from_ref(w)).unwrap();
            }
            stores[1].merge_writes(&batch).unwrap();
            let mut reversed = batch.clone();
            reversed.reverse();
            stores[2].merge_writes(&reversed).unwrap();
            let docs: Vec<_> = stores
                .iter()
                .map(|s| s.list("orders", None, 100).unwrap())
                .collect();
            prop_assert_eq!(&docs[0], &docs[1]);
            prop_assert_eq!(&docs[0], &docs[2]);
            let digests: Vec<_> = stores.iter().map(|s| s.digest("orders").unwrap()).collect();
            prop_assert_eq!(digests[0], digests[1]);
            prop_assert_eq!(digests[0], digests[2]);
            Ok(())
        })
        .unwrap();
}
