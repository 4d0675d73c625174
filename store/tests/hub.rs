//! The hub path: source changes in, echo suppression, field-level diffs,
//! counters, the change log and sink bookkeeping.

use std::sync::Arc;

use connector_core::{DocChange, DocOp, SinkWrite};
use connector_store::{Durability, NewDeadLetter, SourceApply, Store};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path().join("store.db"), Durability::Normal).unwrap();
    (dir, s)
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn upsert(coll: &str, id: Value, fields: Value, before: Option<Value>, ts: i64) -> DocChange {
    DocChange {
        collection: coll.into(),
        id,
        op: DocOp::Upsert,
        fields: obj(fields),
        before: before.map(obj),
        commit_ts_ms: Some(ts),
        counters: Arc::from(Vec::<String>::new()),
        unchanged: vec![],
        unchanged_from: None,
        snapshot: false,
        own_write: false,
    }
}

/// A new order `id` with only its id field, committed at 1000.
fn order(id: i64) -> DocChange {
    upsert("orders", json!(id), json!({"order_id": id}), None, 1000)
}

/// The change as the provider's feed reports a write of our own sink.
fn own(mut c: DocChange) -> DocChange {
    c.own_write = true;
    c
}

fn counted(mut c: DocChange) -> DocChange {
    c.counters = Arc::from(vec!["quantity".to_string()]);
    c
}

/// An inventory row's counted `quantity`, with the one before it if any.
fn stock(id: &str, quantity: Value, before: Option<Value>, ts: i64) -> DocChange {
    counted(upsert(
        "inventory",
        json!(id),
        json!({ "quantity": quantity }),
        before.map(|b| json!({ "quantity": b })),
        ts,
    ))
}

fn delete(coll: &str, id: Value, ts: i64) -> DocChange {
    DocChange {
        collection: coll.into(),
        id,
        op: DocOp::Delete,
        fields: Map::new(),
        before: None,
        commit_ts_ms: Some(ts),
        counters: Arc::from(Vec::<String>::new()),
        unchanged: vec![],
        unchanged_from: None,
        snapshot: false,
        own_write: false,
    }
}

fn apply(
    s: &mut Store,
    origin: &str,
    changes: &[DocChange],
    pos: &str,
) -> connector_store::Applied {
    s.apply_source(
        origin,
        SourceApply {
            changes,
            position: Some(pos),
            received: changes.len() as u64,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Runs provider `p`'s sink once over the whole log, pretending the
/// provider committed: returns what it would have written.
fn drain_sink(s: &mut Store, p: &str) -> Vec<SinkWrite> {
    run_sink(s, p, true)
}

/// As [`drain_sink`] for a provider whose feed tags our writes: no intents.
fn drain_tagged_sink(s: &mut Store, p: &str) -> Vec<SinkWrite> {
    run_sink(s, p, false)
}

fn run_sink(s: &mut Store, p: &str, intents: bool) -> Vec<SinkWrite> {
    let after = s
        .cursor(&connector_store::sink_cursor(p))
        .unwrap()
        .unwrap_or(0);
    let read = s.read_log_for_sink(p, after, 10_000).unwrap();
    if read.upto == after {
        return vec![];
    }
    let writes = s.pending_writes(p, &read.entries, |_| true).unwrap();
    // as the runtime does: intents before the provider write, then commit
    if intents {
        s.record_intents(p, &writes.iter().collect::<Vec<_>>())
            .unwrap();
    }
    s.sink_committed(p, read.upto, &writes, &[]).unwrap();
    writes.into_iter().map(|w| w.write).collect()
}

/// Like [`drain_sink`], then `p`'s feed reports the written rows, as a real
/// provider's does: each must be recognised as our echo.
fn deliver(s: &mut Store, p: &str) -> Vec<SinkWrite> {
    let writes = drain_sink(s, p);
    for w in &writes {
        let counters: Arc<[String]> = Arc::from(vec!["quantity".to_string()]);
        let change = match &w.doc {
            Some(doc) => DocChange {
                counters,
                ..upsert(
                    &w.collection,
                    w.id.clone(),
                    Value::Object(doc.clone()),
                    None,
                    1,
                )
            },
            None => delete(&w.collection, w.id.clone(), 1),
        };
        let out = apply(s, p, &[change], "echo");
        assert_eq!(out.echoes, 1, "the echo of {w:?} was not recognised");
    }
    writes
}

#[test]
fn position_and_changes_commit_together_and_resume() {
    let (dir, mut s) = store();
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "new"}),
            None,
            1000,
        )],
        "0/10",
    );
    drop(s);
    let s = Store::open(dir.path().join("store.db")).unwrap();
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("0/10"));
    assert_eq!(
        s.get("orders", &json!(1)).unwrap(),
        Some(obj(json!({"order_id": 1, "status": "new"})))
    );
    assert_eq!(s.last_seq().unwrap(), 1);
    let st = s.provider_stats("hq").unwrap();
    assert_eq!((st.received, st.applied, st.echoes), (1, 1, 0));
}

#[test]
fn beginning_an_initial_sync_never_overwrites_a_position_or_progress() {
    let (_dir, mut s) = store();
    let progress = |rows: u64| {
        vec![
            (
                "initial-sync:hq:stores".to_string(),
                format!("{{\"rows\":{rows}}}"),
            ),
            (
                "initial-sync:hq:orders".to_string(),
                format!("{{\"rows\":{rows}}}"),
            ),
        ]
    };
    s.begin_initial_sync("hq", Some("0/20"), false, false, &progress(0))
        .unwrap();
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("0/20"));
    assert_eq!(
        s.position("initial-sync:hq:orders").unwrap().as_deref(),
        Some("{\"rows\":0}")
    );
    // A later begin (a resumed copy, or a re-created feed) keeps both.
    s.begin_initial_sync("hq", Some("0/99"), false, false, &progress(7))
        .unwrap();
    s.begin_initial_sync("hq", None, true, false, &progress(8))
        .unwrap();
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("0/20"));
    assert_eq!(
        s.position("initial-sync:hq:stores").unwrap().as_deref(),
        Some("{\"rows\":0}")
    );
    // After forgetting (a lost feed being re-snapshotted) it starts afresh.
    s.forget_positions("hq", &[]).unwrap();
    s.begin_initial_sync("hq", Some("0/99"), false, false, &progress(0))
        .unwrap();
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("0/99"));
    // A copy of everything again (--restart) that started a new feed
    // streams from there.
    s.begin_initial_sync("hq", Some("0/A0"), true, false, &progress(0))
        .unwrap();
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("0/A0"));
    // Its progress starts over with it: a copy killed before it reached a
    // collection must not find the old copy's mark there.
    s.update_position("initial-sync:hq:orders", |_| "{\"done\":true}".into())
        .unwrap();
    s.begin_initial_sync("hq", Some("0/B0"), true, true, &progress(0))
        .unwrap();
    assert_eq!(
        s.position("initial-sync:hq:orders").unwrap().as_deref(),
        Some("{\"rows\":0}")
    );
}

#[test]
fn a_sink_behind_compaction_is_told_and_can_read_every_document() {
    let (_dir, mut s) = store();
    for i in 1..=3 {
        apply(&mut s, "hq", &[order(i)], &format!("0/{i}"));
    }
    assert!(!s.missed_compacted(0).unwrap(), "nothing compacted yet");
    s.sink_committed("hq", 2, &[], &[]).unwrap();
    assert_eq!(s.compact_log(&["sink:hq".to_string()]).unwrap(), 2);
    assert!(
        s.missed_compacted(0).unwrap(),
        "a new sink missed entries 1 and 2"
    );
    assert!(!s.missed_compacted(2).unwrap(), "hq's sink missed nothing");
    let first = s.document_entries(None, 2).unwrap();
    let ids: Vec<Value> = first.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, vec![json!(1), json!(2)]);
    let key = connector_core::value::id_key(&first[1].id);
    let rest = s.document_entries(Some(("orders", &key)), 2).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, json!(3));
    let pending = s.pending_writes("shop", &first, |_| true).unwrap();
    assert_eq!(pending.len(), 2, "shop holds none of them");
}

#[test]
fn a_sink_batch_never_committed_is_read_and_written_again_after_a_crash() {
    let (dir, mut s) = store();
    apply(&mut s, "hq", &[order(1), order(2)], "0/10");
    // The sink reads and plans its batch, writes it to the provider, and
    // the process dies before `sink_committed`.
    let read = s.read_log_for_sink("shop", 0, 100).unwrap();
    let planned = s.pending_writes("shop", &read.entries, |_| true).unwrap();
    assert_eq!(planned.len(), 2);
    drop(s);
    let mut s = Store::open_with(dir.path().join("store.db"), Durability::Normal).unwrap();
    // Nothing moved: the same writes are owed (at least once).
    assert_eq!(
        s.cursor(&connector_store::sink_cursor("shop")).unwrap(),
        None
    );
    let again = drain_sink(&mut s, "shop");
    let ids: Vec<Value> = again.iter().map(|w| w.id.clone()).collect();
    assert_eq!(ids, vec![json!(1), json!(2)]);
    // Committed now: owed no more.
    assert!(drain_sink(&mut s, "shop").is_empty());
}

#[test]
fn replaying_a_batch_after_a_crash_changes_nothing() {
    let (_d, mut s) = store();
    let batch = [
        upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "new"}),
            None,
            1000,
        ),
        upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "paid"}),
            None,
            1001,
        ),
    ];
    let sale = stock("a", json!(7), Some(json!(10)), 1002);
    apply(&mut s, "hq", &[stock("a", json!(10), None, 999)], "0/10");
    apply(
        &mut s,
        "hq",
        &[batch[0].clone(), batch[1].clone(), sale.clone()],
        "0/20",
    );
    let doc = s.get("orders", &json!(1)).unwrap();
    assert_eq!(drain_sink(&mut s, "shop").len(), 2);
    apply(
        &mut s,
        "hq",
        &[batch[0].clone(), batch[1].clone(), sale],
        "0/20",
    );
    assert_eq!(s.get("orders", &json!(1)).unwrap(), doc);
    assert_eq!(doc.unwrap()["status"], json!("paid"));
    // The sale's delta counts once.
    assert_eq!(
        s.get("inventory", &json!("a")).unwrap().unwrap()["quantity"],
        json!(7)
    );
    // (Its older stamps lose; whatever it logs, no sink has anything new.)
    assert!(drain_sink(&mut s, "shop").is_empty());
    // hq's shadow ends at its last image: nothing to write back to it
    assert!(drain_sink(&mut s, "hq").is_empty());
}

#[test]
fn our_own_write_coming_back_is_an_echo() {
    let (_d, mut s) = store();
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(7),
            json!({"order_id": 7, "total": 5}),
            None,
            1000,
        )],
        "1",
    );
    let writes = drain_sink(&mut s, "shop");
    assert_eq!(writes.len(), 1);
    // shop's feed reports the row we just wrote
    let back = apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(7),
            json!({"order_id": 7, "total": 5}),
            None,
            1100,
        )],
        "a",
    );
    assert_eq!((back.applied, back.echoes), (0, 1));
    // and nothing new needs writing anywhere
    assert!(drain_sink(&mut s, "shop").is_empty());
    assert!(drain_sink(&mut s, "hq").is_empty());
}

#[test]
fn concurrent_edits_of_different_fields_both_survive() {
    let (_d, mut s) = store();
    let row = json!({"order_id": 1, "status": "new", "total": 10});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(1), row.clone(), None, 1000)],
        "1",
    );
    deliver(&mut s, "shop");
    // at the same moment: hq changes status, shop changes total (full images)
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "paid", "total": 10}),
            Some(row.clone()),
            2000,
        )],
        "2",
    );
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "new", "total": 12}),
            None,
            2001,
        )],
        "b",
    );
    assert_eq!(
        s.get("orders", &json!(1)).unwrap().unwrap(),
        obj(json!({"order_id": 1, "status": "paid", "total": 12}))
    );
    // both providers get the merged row
    let to_hq = drain_sink(&mut s, "hq");
    let to_shop = drain_sink(&mut s, "shop");
    assert_eq!(to_hq.len(), 1);
    assert_eq!(to_shop.len(), 1);
    assert_eq!(to_hq[0].doc, to_shop[0].doc);
}

#[test]
fn the_later_commit_wins_and_the_loser_is_overwritten() {
    let (_d, mut s) = store();
    let row = json!({"order_id": 1, "status": "new"});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(1), row.clone(), None, 1000)],
        "1",
    );
    deliver(&mut s, "shop");
    // shop's commit is later but arrives first
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "void"}),
            None,
            3000,
        )],
        "b",
    );
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "paid"}),
            Some(row),
            2000,
        )],
        "2",
    );
    assert_eq!(
        s.get("orders", &json!(1)).unwrap().unwrap()["status"],
        json!("void")
    );
    let to_hq = drain_sink(&mut s, "hq");
    assert_eq!(
        to_hq.len(),
        1,
        "hq holds the losing value and must be corrected"
    );
    assert_eq!(to_hq[0].doc.as_ref().unwrap()["status"], json!("void"));
    assert!(
        drain_sink(&mut s, "shop").is_empty(),
        "shop already holds the winner"
    );
}

#[test]
fn a_causally_later_write_wins_even_with_an_older_clock() {
    let (_d, mut s) = store();
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "new"}),
            None,
            5000,
        )],
        "1",
    );
    deliver(&mut s, "shop");
    // shop's clock is behind, but shop edited the value we gave it
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "paid"}),
            None,
            4000,
        )],
        "b",
    );
    assert_eq!(
        s.get("orders", &json!(1)).unwrap().unwrap()["status"],
        json!("paid")
    );
}

#[test]
fn deletes_tombstone_and_fan_out_once() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(1)], "1");
    deliver(&mut s, "shop");
    apply(&mut s, "hq", &[delete("orders", json!(1), 2000)], "2");
    assert_eq!(s.get("orders", &json!(1)).unwrap(), None);
    let w = drain_sink(&mut s, "shop");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].doc, None);
    // shop reports the delete we made: echo
    let back = apply(&mut s, "shop", &[delete("orders", json!(1), 2100)], "c");
    assert_eq!(back.echoes, 1);
    // a provider that never had the document gets no delete
    assert!(drain_sink(&mut s, "mongo").iter().all(|w| w.doc.is_some()));
    // an older write does not resurrect; a newer one does, with its whole image
    apply(
        &mut s,
        "mongo",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "x": 1}),
            None,
            1500,
        )],
        "m1",
    );
    assert_eq!(s.get("orders", &json!(1)).unwrap(), None);
    apply(
        &mut s,
        "mongo",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "x": 2}),
            None,
            2500,
        )],
        "m2",
    );
    assert_eq!(
        s.get("orders", &json!(1)).unwrap(),
        Some(obj(json!({"order_id": 1, "x": 2})))
    );
}

#[test]
fn concurrent_decrements_in_two_databases_both_count() {
    let (_d, mut s) = store();
    let id = json!("inv-1");
    apply(
        &mut s,
        "hq",
        &[counted(upsert(
            "inventory",
            id.clone(),
            json!({"sku": "a", "quantity": 10}),
            None,
            1000,
        ))],
        "1",
    );
    assert_eq!(deliver(&mut s, "shop").len(), 1);
    // both sell at once: hq 10→9 (with before image), shop 10→8 (without)
    apply(
        &mut s,
        "hq",
        &[counted(upsert(
            "inventory",
            id.clone(),
            json!({"sku": "a", "quantity": 9}),
            Some(json!({"sku": "a", "quantity": 10})),
            2000,
        ))],
        "2",
    );
    apply(
        &mut s,
        "shop",
        &[counted(upsert(
            "inventory",
            id.clone(),
            json!({"sku": "a", "quantity": 8}),
            None,
            2000,
        ))],
        "b",
    );
    assert_eq!(
        s.get("inventory", &id).unwrap().unwrap()["quantity"],
        json!(7)
    );
    let to_hq = drain_sink(&mut s, "hq");
    let to_shop = drain_sink(&mut s, "shop");
    assert_eq!(to_hq[0].doc.as_ref().unwrap()["quantity"], json!(7));
    assert_eq!(to_shop[0].doc.as_ref().unwrap()["quantity"], json!(7));
    // the fan-out coming back is an echo, not another delta
    let back = apply(
        &mut s,
        "shop",
        &[counted(upsert(
            "inventory",
            id.clone(),
            json!({"sku": "a", "quantity": 7}),
            Some(json!({"sku": "a", "quantity": 8})),
            2100,
        ))],
        "c",
    );
    assert_eq!(back.echoes, 1);
    assert_eq!(
        s.get("inventory", &id).unwrap().unwrap()["quantity"],
        json!(7)
    );
}

#[test]
fn the_same_rows_snapshotted_from_two_providers_do_not_double_a_counter() {
    let (_d, mut s) = store();
    let id = json!("inv-1");
    let mut a = counted(upsert(
        "inventory",
        id.clone(),
        json!({"quantity": 10}),
        None,
        1000,
    ));
    a.snapshot = true;
    apply(&mut s, "hq", &[a.clone()], "1");
    apply(&mut s, "shop", &[a], "b");
    assert_eq!(
        s.get("inventory", &id).unwrap().unwrap()["quantity"],
        json!(10)
    );
}

#[test]
fn a_counter_brought_back_over_a_delete_is_the_image_s_count() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[stock("a", json!(10), None, 1000)], "1");
    deliver(&mut s, "shop");
    apply(&mut s, "hq", &[delete("inventory", json!("a"), 2000)], "2");
    // shop, not yet told of the delete, sells one: its update wins.
    apply(
        &mut s,
        "shop",
        &[stock("a", json!(9), Some(json!(10)), 3000)],
        "a",
    );
    let doc = s.get("inventory", &json!("a")).unwrap().unwrap();
    assert_eq!(doc["quantity"], json!(9), "counted as its delta alone");
    // A third database's later sale counts from there.
    apply(
        &mut s,
        "mart",
        &[stock("a", json!(8), Some(json!(9)), 4000)],
        "m",
    );
    let doc = s.get("inventory", &json!("a")).unwrap().unwrap();
    assert_eq!(doc["quantity"], json!(8));
}

#[test]
fn a_counter_new_to_a_document_is_the_image_s_count() {
    // `counters:` added to the mapping of a collection with data: the
    // first update with a before image is not a delta from nothing.
    let (_d, mut s) = store();
    apply(
        &mut s,
        "hq",
        &[upsert(
            "inventory",
            json!("a"),
            json!({"quantity": 10}),
            None,
            1000,
        )],
        "1",
    );
    apply(
        &mut s,
        "hq",
        &[stock("a", json!(9), Some(json!(10)), 2000)],
        "2",
    );
    let doc = s.get("inventory", &json!("a")).unwrap().unwrap();
    assert_eq!(doc["quantity"], json!(9));
}

#[test]
fn a_counter_created_at_zero_is_in_the_document() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[stock("x", json!(0), None, 1000)], "1");
    let doc = s.get("inventory", &json!("x")).unwrap().unwrap();
    assert_eq!(doc["quantity"], json!(0), "{doc:?}");
    let w = drain_sink(&mut s, "shop");
    assert_eq!(w[0].doc.as_ref().unwrap()["quantity"], json!(0));
}

#[test]
fn an_update_with_unchanged_values_that_revives_a_deleted_document_keeps_them() {
    let (_d, mut s) = store();
    let notes = "a long text the feed leaves out when unchanged";
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "a", "notes": notes}),
            None,
            1000,
        )],
        "1",
    );
    apply(&mut s, "hq", &[delete("orders", json!(1), 2000)], "2");
    // shop updates the row later, unaware of the delete; `notes` unchanged.
    let mut revive = upsert(
        "orders",
        json!(1),
        json!({"order_id": 1, "status": "b"}),
        None,
        3000,
    );
    revive.unchanged = vec!["notes".into()];
    apply(&mut s, "shop", &[revive], "s1");
    let doc = s.get("orders", &json!(1)).unwrap().expect("revived");
    assert_eq!(doc["notes"], json!(notes), "{doc:?}");
    assert_eq!(doc["status"], json!("b"));
}

#[test]
fn a_non_numeric_counter_is_a_dead_letter_and_the_batch_goes_on() {
    let (_d, mut s) = store();
    let bad = stock("x", json!("lots"), None, 1000);
    let good = stock("y", json!(1), None, 1000);
    let out = apply(&mut s, "hq", &[bad, good], "1");
    assert_eq!((out.applied, out.dead_letters), (1, 1));
    let dls = s.dead_letters(Some("hq"), 10).unwrap();
    assert_eq!(dls[0].field.as_deref(), Some("quantity"));
    assert!(dls[0].reason.contains("must be a number"));
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("1"));
}

#[test]
fn a_counter_too_precise_for_a_float_still_counts() {
    // A NUMERIC counter a float cannot spell arrives as its exact text.
    let (_d, mut s) = store();
    let first = stock("x", json!("12345678901234567.25"), None, 1000);
    let out = apply(&mut s, "hq", &[first], "1");
    assert_eq!((out.applied, out.dead_letters), (1, 0));
    let then = stock(
        "x",
        json!("12345678901234569.25"),
        Some(json!("12345678901234567.25")),
        1001,
    );
    let out = apply(&mut s, "hq", &[then], "2");
    assert_eq!((out.applied, out.dead_letters), (1, 0));
    let quantity = s.get("inventory", &json!("x")).unwrap().unwrap()["quantity"].clone();
    assert_eq!(quantity.as_f64(), Some(12345678901234569.25), "{quantity}");
}

#[test]
fn mapping_dead_letters_commit_with_the_batch_and_can_be_discarded() {
    let (_d, mut s) = store();
    let dl = NewDeadLetter {
        collection: Some("stores".into()),
        stage: "mapping".into(),
        field: Some("store_id".into()),
        reason: "id field `store_id` is null".into(),
        record: json!({"table": "stores", "row": {"store_id": null}}),
    };
    s.apply_source(
        "hq",
        SourceApply {
            dead_letters: &[dl],
            position: Some("9"),
            received: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let listed = s.dead_letters(None, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record["row"]["store_id"], Value::Null);
    assert_eq!(s.provider_stats("hq").unwrap().dead_letters, 1);
    assert_eq!(s.discard_dead_letters(&[listed[0].id]).unwrap(), 1);
    assert_eq!(s.dead_letter_count(None).unwrap(), 0);
}

#[test]
fn a_sink_dead_letter_retry_makes_the_sink_write_again() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(3)], "1");
    assert_eq!(drain_sink(&mut s, "shop").len(), 1);
    let id = s
        .add_dead_letter(
            "shop",
            &NewDeadLetter {
                collection: Some("orders".into()),
                stage: "sink".into(),
                field: None,
                reason: "value too long".into(),
                record: json!({"_id": 3, "doc": {"order_id": 3}}),
            },
        )
        .unwrap();
    let dl = s.dead_letter(id).unwrap().unwrap();
    assert!(s.requeue_for_sink(&dl).unwrap());
    let again = drain_sink(&mut s, "shop");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, json!(3));
    assert!(s.dead_letter(id).unwrap().is_none());
}

#[test]
fn a_retried_sink_delete_is_written() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(3)], "1");
    assert_eq!(deliver(&mut s, "shop").len(), 1);
    apply(&mut s, "hq", &[delete("orders", json!(3), 2000)], "2");
    // shop refused the delete (a foreign key): a dead letter, cursor on.
    let read = s
        .read_log_for_sink(
            "shop",
            s.cursor(&connector_store::sink_cursor("shop"))
                .unwrap()
                .unwrap_or(0),
            100,
        )
        .unwrap();
    let writes = s.pending_writes("shop", &read.entries, |_| true).unwrap();
    assert_eq!(writes.len(), 1);
    assert!(writes[0].write.doc.is_none(), "a delete");
    let refused = NewDeadLetter {
        collection: Some("orders".into()),
        stage: "sink".into(),
        field: None,
        reason: "violates foreign key constraint (23503)".into(),
        record: json!({"_id": 3}),
    };
    s.sink_committed("shop", read.upto, &[], &[refused])
        .unwrap();
    let dl = s.dead_letters(Some("shop"), 10).unwrap().remove(0);
    assert!(s.requeue_for_sink(&dl).unwrap());
    let again = drain_sink(&mut s, "shop");
    assert_eq!(again.len(), 1, "the retried delete is written");
    assert!(again[0].doc.is_none());
}

#[test]
fn a_write_a_foreign_key_refused_is_tried_again_when_due_and_given_up_after_a_day() {
    use connector_store::{wait_after, Kept, GIVE_UP_AFTER_MS, SINK_STAGE, WAITING_STAGE};
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(3)], "1");
    let read = s.read_log_for_sink("shop", 0, 100).unwrap();
    let refused = |stage: &str| NewDeadLetter {
        collection: Some("orders".into()),
        stage: stage.into(),
        field: None,
        reason: "violates foreign key constraint (23503)".into(),
        record: json!({"_id": 3, "doc": {"order_id": 3}}),
    };
    let kept = s
        .sink_committed("shop", read.upto, &[], &[refused(WAITING_STAGE)])
        .unwrap();
    assert_eq!(kept, [Kept::Waits]);
    let letter = s.dead_letters(Some("shop"), 10).unwrap().remove(0);
    let first = letter.at_ms;
    // Refused again (a later change of the document): the same letter.
    let kept = s
        .sink_committed("shop", read.upto, &[], &[refused(WAITING_STAGE)])
        .unwrap();
    assert_eq!(kept, [Kept::WaitsAgain]);
    let letters = s.dead_letters(Some("shop"), 10).unwrap();
    assert_eq!(letters.len(), 1, "one letter per document");
    assert_eq!((letters[0].at_ms, letters[0].attempts), (first, 2));
    let stats = s.provider_stats("shop").unwrap();
    assert_eq!((stats.waiting_letters, stats.dead_letters), (1, 0));
    // Due after the wait that follows the second refusal, from it.
    let due = first + wait_after(2);
    assert!(s
        .requeue_waiting("shop", first + 1, |_| true)
        .unwrap()
        .documents
        .is_empty());
    let requeued = s.requeue_waiting("shop", due + 50, |_| true).unwrap();
    assert_eq!(
        requeued.documents,
        [("orders".to_string(), "3".to_string())]
    );
    // The letter stays until the write lands; it is not due again at once.
    assert_eq!(s.waiting_count("shop").unwrap(), 1);
    assert!(s
        .requeue_waiting("shop", due + 100, |_| true)
        .unwrap()
        .documents
        .is_empty());
    // Nor while a sink far behind has not reached it yet.
    assert!(s
        .requeue_waiting("shop", due + 60_000, |_| true)
        .unwrap()
        .documents
        .is_empty());
    let again = drain_sink(&mut s, "shop");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, json!(3));
    // Written at last: the sink's commit resolved the letter.
    let upto = s.last_seq().unwrap();
    assert_eq!(s.dead_letter_count(Some("shop")).unwrap(), 0);
    // Another refusal waits; a day later (a stop, an outage) it is tried
    // once more, its parent may be in the backlog; refused then, it waits
    // no more.
    s.sink_committed("shop", upto, &[], &[refused(WAITING_STAGE)])
        .unwrap();
    let at = s.dead_letters(Some("shop"), 10).unwrap()[0].at_ms;
    let later = s
        .requeue_waiting("shop", at + GIVE_UP_AFTER_MS + 1, |_| true)
        .unwrap();
    assert_eq!(later.documents.len(), 1, "tried again after the day");
    let day = at + GIVE_UP_AFTER_MS + 2;
    let kept = s
        .sink_committed_at("shop", upto, &[], &[refused(WAITING_STAGE)], day)
        .unwrap();
    // Right after a stop of a day the parent may still be in another
    // database's backlog: one more try, the longest wait later.
    assert_eq!(kept, [Kept::WaitsAgain]);
    assert!(s
        .requeue_waiting("shop", day + 1000, |_| true)
        .unwrap()
        .documents
        .is_empty());
    let last = day + wait_after(100) + 1;
    assert_eq!(
        s.requeue_waiting("shop", last, |_| true)
            .unwrap()
            .documents
            .len(),
        1
    );
    let kept = s
        .sink_committed_at("shop", upto, &[], &[refused(WAITING_STAGE)], last + 1)
        .unwrap();
    assert_eq!(kept, [Kept::DeadLetter]);
    let letter = s.dead_letters(Some("shop"), 10).unwrap().remove(0);
    assert_eq!(letter.stage, SINK_STAGE);
    assert!(letter.reason.contains("waited 24 h"), "{}", letter.reason);
    assert_eq!(s.waiting_count("shop").unwrap(), 0);
    // Refused for another reason while waiting: replaced, a person's now.
    s.discard_dead_letters(&[letter.id]).unwrap();
    s.sink_committed("shop", upto, &[], &[refused(WAITING_STAGE)])
        .unwrap();
    let kept = s
        .sink_committed("shop", upto, &[], &[refused(SINK_STAGE)])
        .unwrap();
    assert_eq!(kept, [Kept::DeadLetter]);
    let letters = s.dead_letters(Some("shop"), 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].stage, SINK_STAGE);
}

#[test]
fn a_document_refused_again_keeps_one_letter_and_its_write_resolves_it() {
    use connector_store::SINK_STAGE;
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(3)], "1");
    let read = s.read_log_for_sink("shop", 0, 100).unwrap();
    let refused = |reason: &str| NewDeadLetter {
        collection: Some("orders".into()),
        stage: SINK_STAGE.into(),
        field: Some("status".into()),
        reason: reason.into(),
        record: json!({"_id": 3, "doc": {"order_id": 3}}),
    };
    // Refused by a check only shop has, on each change of the document.
    for reason in ["check (23514) once", "check (23514) again"] {
        s.sink_committed("shop", read.upto, &[], &[refused(reason)])
            .unwrap();
    }
    let letters = s.dead_letters(Some("shop"), 10).unwrap();
    assert_eq!(letters.len(), 1, "one letter per document");
    assert_eq!(
        (letters[0].attempts, letters[0].reason.as_str()),
        (2, "check (23514) again")
    );
    // Fixed at the source: the next write lands, and the letter goes.
    let fixed = upsert(
        "orders",
        json!(3),
        json!({"order_id": 3, "status": "fixed"}),
        None,
        5000,
    );
    apply(&mut s, "hq", &[fixed], "2");
    assert_eq!(drain_sink(&mut s, "shop").len(), 1);
    assert_eq!(s.dead_letter_count(Some("shop")).unwrap(), 0);
}

#[test]
fn a_waiting_write_with_nothing_left_to_write_is_dropped() {
    use connector_store::{wait_after, WAITING_STAGE};
    let (_d, mut s) = store();
    let refused = |id: i64| NewDeadLetter {
        collection: Some("orders".into()),
        stage: WAITING_STAGE.into(),
        field: None,
        reason: "violates foreign key constraint (23503)".into(),
        record: json!({"_id": id, "doc": {"order_id": id}}),
    };
    // 5: refused, then deleted in hq; shop never held it.
    apply(&mut s, "hq", &[order(5)], "1");
    let read = s.read_log_for_sink("shop", 0, 100).unwrap();
    s.sink_committed("shop", read.upto, &[], &[refused(5)])
        .unwrap();
    apply(&mut s, "hq", &[delete("orders", json!(5), 2000)], "2");
    // 6: refused, and no longer synced by shop.
    apply(&mut s, "hq", &[order(6)], "3");
    s.sink_committed("shop", read.upto, &[], &[refused(6)])
        .unwrap();
    let later = connector_store::stamp::now_millis() + wait_after(1) + 1_000;
    let r = s.requeue_waiting("shop", later, |c| c != "orders").unwrap();
    assert!(r.documents.is_empty(), "{r:?}");
    assert_eq!(r.moot.len(), 2, "{r:?}");
    assert_eq!(s.waiting_count("shop").unwrap(), 0);
    // 7: refused while shop's row is out of the filter: left alone.
    apply(&mut s, "hq", &[order(7)], "4");
    deliver(&mut s, "shop");
    s.apply_source(
        "shop",
        SourceApply {
            left_filter: &[("orders".to_string(), json!(7))],
            position: Some("s1"),
            received: 1,
            ..Default::default()
        },
    )
    .unwrap();
    s.sink_committed("shop", s.last_seq().unwrap(), &[], &[refused(7)])
        .unwrap();
    let r = s.requeue_waiting("shop", later, |_| true).unwrap();
    assert_eq!((r.documents.len(), r.moot.len()), (0, 1), "{r:?}");
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(7),
            json!({"order_id": 7, "status": "x"}),
            None,
            5000,
        )],
        "5",
    );
    assert!(drain_sink(&mut s, "shop").is_empty(), "the mark stands");
}

#[test]
fn a_row_that_left_its_filter_is_not_written_until_it_is_back() {
    let (_d, mut s) = store();
    let customer = |fields: Value, ts| upsert("customers", json!(1), fields, None, ts);
    apply(
        &mut s,
        "hq",
        &[customer(json!({"name": "a", "deleted": false}), 1000)],
        "1",
    );
    deliver(&mut s, "shop");
    // hq soft-deletes it: its filter (deleted: false) leaves it out.
    s.apply_source(
        "hq",
        SourceApply {
            left_filter: &[("customers".to_string(), json!(1))],
            position: Some("2"),
            received: 1,
            filtered: 1,
            ..Default::default()
        },
    )
    .unwrap();
    // shop edits it: hq's row is not overwritten (its soft delete kept).
    apply(
        &mut s,
        "shop",
        &[customer(json!({"name": "b", "deleted": false}), 3000)],
        "s1",
    );
    assert!(
        drain_sink(&mut s, "hq").is_empty(),
        "hq's row left the filter"
    );
    assert_eq!(s.left_filter("hq", "customers").unwrap(), ["1"]);
    // hq brings it back: merged, and hq is written again from then on.
    apply(
        &mut s,
        "hq",
        &[customer(json!({"name": "c", "deleted": false}), 4000)],
        "3",
    );
    assert!(s.left_filter("hq", "customers").unwrap().is_empty());
    apply(
        &mut s,
        "shop",
        &[customer(json!({"name": "d", "deleted": false}), 5000)],
        "s2",
    );
    let w = drain_sink(&mut s, "hq");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].doc.as_ref().unwrap()["name"], json!("d"));
}

#[test]
fn forgetting_a_providers_positions_leaves_a_similar_names_alone() {
    let (_d, mut s) = store();
    for p in ["a_b", "axb", "A_B"] {
        let key = format!("initial-sync:{p}:orders");
        s.begin_initial_sync(p, Some("0/1"), false, false, &[(key, "{}".into())])
            .unwrap();
    }
    s.forget_positions("a_b", &[]).unwrap();
    assert_eq!(s.position("a_b").unwrap(), None);
    assert_eq!(s.position("initial-sync:a_b:orders").unwrap(), None);
    for p in ["axb", "A_B"] {
        assert!(s.position(p).unwrap().is_some(), "{p}");
        let key = format!("initial-sync:{p}:orders");
        assert!(s.position(&key).unwrap().is_some(), "{key}");
    }
}

#[test]
fn a_record_older_than_its_origins_last_change_is_told_apart() {
    let (_d, mut s) = store();
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "b"}),
            None,
            2000,
        )],
        "1",
    );
    let id = json!(1);
    assert!(s.changed_by_since("orders", &id, "shop", 1000).unwrap());
    assert!(!s.changed_by_since("orders", &id, "shop", 2000).unwrap());
    assert!(!s.changed_by_since("orders", &id, "hq", 1000).unwrap());
    assert!(!s.changed_by_since("orders", &json!(2), "shop", 0).unwrap());
}

#[test]
fn a_tagged_echo_changed_by_the_targets_column_is_not_written_for_ever() {
    let (_d, mut s) = store();
    let total = |t: Value, ts| {
        upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "total": t}),
            None,
            ts,
        )
    };
    apply(&mut s, "hq", &[total(json!(12.345), 1000)], "1");
    // shop's numeric(12,2) keeps 12.35 of every write of 12.345.
    let rounds = rounds_until_shop_is_done(&mut s, false, |r| total(json!(12.35), 2000 + r));
    assert!(rounds >= 1);
}

/// Writes to shop and feeds shop's tagged echo of each write (`echo(round)`)
/// back until shop's sink has nothing left to write; returns how many
/// rounds wrote (more than 3: written for ever).
fn rounds_until_shop_is_done(s: &mut Store, tagged: bool, echo: impl Fn(i64) -> DocChange) -> i64 {
    let mut rounds = 0;
    loop {
        let w = if tagged {
            drain_tagged_sink(s, "shop")
        } else {
            drain_sink(s, "shop")
        };
        if w.is_empty() {
            return rounds;
        }
        rounds += 1;
        assert!(rounds <= 3, "shop is written for ever");
        apply(s, "shop", &[own(echo(rounds))], &format!("s{rounds}"));
    }
}

#[test]
fn a_tagged_echo_stamped_anew_by_a_target_trigger_is_not_written_for_ever() {
    let (_d, mut s) = store();
    let order = |at: i64, ts| {
        upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "new", "updated_at": at}),
            None,
            ts,
        )
    };
    apply(&mut s, "hq", &[order(1, 1000)], "1");
    // shop's trigger sets updated_at to now() in every write of ours.
    let rounds = rounds_until_shop_is_done(&mut s, true, |r| order(5000 + r, 2000 + r));
    assert!(rounds <= 2, "{rounds}");
    // The store's document stays hq's; shop keeps its trigger's value.
    let doc = s.get("orders", &json!(1)).unwrap().unwrap();
    assert_eq!(doc["updated_at"], json!(1));
    // A change of our write that the store had not moved past is still
    // corrected when the store moves on: hq's next change is written.
    apply(&mut s, "hq", &[order(2, 3000)], "2");
    assert_eq!(drain_tagged_sink(&mut s, "shop").len(), 1);
}

#[test]
fn a_column_added_after_the_copy_is_taken_with_the_next_change_of_its_row() {
    let (_d, mut s) = store();
    // Order 1's status `before` → `after` (with `note`, unchanged, where
    // the table has one), by `origin` at `ts`.
    let change =
        |s: &mut Store, origin: &str, before: &str, after: &str, note: Option<&str>, ts: i64| {
            let image = |status: &str| match note {
                Some(n) => json!({"order_id": 1, "status": status, "note": n}),
                None => json!({"order_id": 1, "status": status}),
            };
            let before = (!before.is_empty()).then(|| image(before));
            let c = upsert("orders", json!(1), image(after), before, ts);
            apply(s, origin, &[c], &ts.to_string());
            let doc = s.get("orders", &json!(1)).unwrap().unwrap();
            doc.get("note").cloned()
        };
    change(&mut s, "hq", "", "a", None, 1000);
    // hq adds `note` (filled for every row), then changes the status.
    assert_eq!(
        change(&mut s, "hq", "a", "b", Some("x"), 2000),
        Some(json!("x"))
    );
    // A field another provider unset is not brought back by the rule.
    let unset = upsert(
        "orders",
        json!(1),
        json!({"order_id": 1, "status": "b"}),
        Some(json!({"order_id": 1, "status": "b", "note": "x"})),
        3000,
    );
    apply(&mut s, "shop", &[unset], "s1");
    assert_eq!(change(&mut s, "hq", "b", "c", Some("x"), 4000), None);
    // Deleted, then made again by shop, whose table lacks `note`: the new
    // document never had one (the old one's register is under the delete).
    apply(&mut s, "shop", &[delete("orders", json!(1), 5000)], "s2");
    change(&mut s, "shop", "", "d", None, 6000);
    assert_eq!(
        change(&mut s, "hq", "d", "e", Some("y"), 7000),
        Some(json!("y"))
    );
}

#[test]
fn compaction_keeps_what_a_cursor_still_needs() {
    let (_d, mut s) = store();
    for i in 0..5 {
        apply(&mut s, "hq", &[order(i)], &i.to_string());
    }
    drain_sink(&mut s, "shop");
    let slow = connector_store::sink_cursor("mongo");
    s.set_cursor(&slow, 2).unwrap();
    let removed = s
        .compact_log(&[connector_store::sink_cursor("shop"), slow])
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(s.read_log(0, 100).unwrap().first().map(|e| e.seq), Some(3));
    // sequence numbers are never reused
    apply(&mut s, "hq", &[order(9)], "9");
    assert_eq!(s.last_seq().unwrap(), 6);
}

/// `n` new orders from hq, in batches of 5,000: log entries 1 to `n`.
fn hq_orders(s: &mut Store, n: i64) {
    for chunk in 0..n / 5_000 {
        let changes: Vec<DocChange> = (0..5_000)
            .map(|i| {
                let id = chunk * 5_000 + i;
                order(id)
            })
            .collect();
        apply(s, "hq", &changes, &chunk.to_string());
    }
}

#[test]
fn a_sink_reads_past_its_providers_own_changes_without_returning_them() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(1), order(2)], "1");
    apply(&mut s, "shop", &[order(3)], "1");
    let seqs = |r: &connector_store::SinkRead| r.entries.iter().map(|e| e.seq).collect::<Vec<_>>();

    // hq holds its own changes as merged: its sink sees only shop's.
    let read = s.read_log_for_sink("hq", 0, 100).unwrap();
    assert_eq!((seqs(&read), read.upto), (vec![3], 3));
    let read = s.read_log_for_sink("shop", 0, 100).unwrap();
    assert_eq!((seqs(&read), read.upto), (vec![1, 2], 3));
    // A full batch: the cursor may move only to its last entry.
    let read = s.read_log_for_sink("shop", 0, 1).unwrap();
    assert_eq!((seqs(&read), read.upto), (vec![1], 1));
    // Nothing new.
    let read = s.read_log_for_sink("hq", 3, 100).unwrap();
    assert_eq!((seqs(&read), read.upto), (vec![], 3));
}

#[test]
fn a_sink_scans_a_bounded_window_and_misses_nothing_beyond_it() {
    let (_d, mut s) = store();
    let window = connector_store::SINK_SCAN;
    hq_orders(&mut s, window);
    apply(&mut s, "shop", &[order(-1)], "1");
    let read = s.read_log_for_sink("hq", 0, 100).unwrap();
    assert!(read.entries.is_empty());
    assert_eq!(read.upto, window, "the cursor stops at the window's end");
    let read = s.read_log_for_sink("hq", read.upto, 100).unwrap();
    assert_eq!(read.entries.len(), 1);
    assert_eq!(read.entries[0].seq, window + 1);
    assert_eq!(read.entries[0].origin, "shop");
}

#[test]
fn compaction_of_more_than_one_slice_deletes_every_passed_entry() {
    let (_d, mut s) = store();
    // 25,000 entries: many compaction slices (and not a whole number of them).
    hq_orders(&mut s, 25_000);
    let cursor = connector_store::sink_cursor("shop");
    s.set_cursor(&cursor, 24_000).unwrap();
    assert_eq!(s.compact_log(&[cursor]).unwrap(), 24_000);
    let left = s.read_log(0, 100_000).unwrap();
    assert_eq!(left.len(), 1_000);
    assert_eq!(left.first().map(|e| e.seq), Some(24_001));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Each provider's feed changes a counter row step by step (with or
    /// without before images); the store's value is the start plus the sum
    /// of every delta, and replicas fed the log in any order agree.
    #[test]
    fn counters_equal_the_sum_of_deltas(
        steps in prop::collection::vec((0usize..3, -20i64..20, any::<bool>()), 1..30),
        order in prop::collection::vec(any::<usize>(), 30),
    ) {
        let providers = ["hq", "shop", "mongo"];
        let (_d, mut s) = store();
        let id = json!("inv");
        let start = 100i64;
        apply(&mut s, "hq", &[counted(upsert("inventory", id.clone(), json!({"quantity": start}), None, 1))], "0");
        // what each provider's row holds (each starts from the fanned-out value)
        let mut held = [start; 3];
        for p in &providers[1..] { deliver(&mut s, p); }
        let mut sum = 0;
        for (i, (p, delta, with_before)) in steps.iter().enumerate() {
            let new = held[*p] + delta;
            let before = with_before.then(|| json!({"quantity": held[*p]}));
            apply(&mut s, providers[*p], &[counted(upsert("inventory", id.clone(), json!({"quantity": new}), before, 10 + i as i64))], &i.to_string());
            held[*p] = new;
            sum += delta;
        }
        let value = s.get("inventory", &id).unwrap().unwrap()["quantity"].as_i64().unwrap();
        prop_assert_eq!(value, start + sum);

        // replicate the log to another store in a shuffled order, with duplicates
        let log = s.read_log(0, 1000).unwrap();
        let mut writes: Vec<_> = log.iter().map(|e| (e.collection.clone(), e.id.clone(), e.write.clone())).collect();
        let mut keyed: Vec<_> = writes.iter().cloned().enumerate().collect();
        keyed.sort_by_key(|(i, _)| order[i % order.len()]);
        writes.extend(keyed.into_iter().map(|(_, w)| w));
        let (_d2, mut replica) = store();
        replica.merge_writes(&writes).unwrap();
        prop_assert_eq!(replica.get("inventory", &id).unwrap(), s.get("inventory", &id).unwrap());
    }
}

/// hq inserts product 1 with a 5,000-character `manual` (stored as TOAST
/// in PostgreSQL), returned.
fn drill_with_a_manual(s: &mut Store) -> String {
    let big = "x".repeat(5000);
    apply(
        s,
        "hq",
        &[upsert(
            "products",
            json!(1),
            json!({"product_id": 1, "name": "drill", "manual": big}),
            None,
            1000,
        )],
        "1",
    );
    big
}

#[test]
fn unchanged_toast_values_keep_the_stores_value() {
    let (_d, mut s) = store();
    let big = drill_with_a_manual(&mut s);
    // an update of `name` that leaves the TOASTed `manual` out
    let mut c = upsert(
        "products",
        json!(1),
        json!({"product_id": 1, "name": "hammer drill"}),
        None,
        2000,
    );
    c.unchanged = vec!["manual".into()];
    apply(&mut s, "hq", &[c], "2");
    let doc = s.get("products", &json!(1)).unwrap().unwrap();
    assert_eq!(doc["name"], json!("hammer drill"));
    assert_eq!(
        doc["manual"],
        json!(big),
        "an unchanged TOAST value must never become null or vanish"
    );
}

#[test]
fn an_unchanged_toast_value_the_provider_has_not_been_sent_yet_is_not_its_change() {
    let (_d, mut s) = store();
    drill_with_a_manual(&mut s);
    deliver(&mut s, "shop");
    // hq changes the manual; shop's sink has not written it yet when shop
    // renames the drill, its feed leaving the manual out as unchanged.
    let manual = |m: &str| json!({"product_id": 1, "name": "drill", "manual": m.repeat(5000)});
    apply(
        &mut s,
        "hq",
        &[upsert("products", json!(1), manual("y"), None, 2000)],
        "2",
    );
    let mut c = upsert(
        "products",
        json!(1),
        json!({"product_id": 1, "name": "hammer drill"}),
        None,
        2100,
    );
    c.unchanged = vec!["manual".into()];
    apply(&mut s, "shop", &[c], "a");
    // The manual is still hq's change (a later one from a third database
    // still wins over it), and shop is still sent it.
    apply(
        &mut s,
        "mart",
        &[upsert("products", json!(1), manual("z"), None, 2050)],
        "m",
    );
    let doc = s.get("products", &json!(1)).unwrap().unwrap();
    assert_eq!(doc["name"], json!("hammer drill"));
    assert_eq!(doc["manual"], json!("z".repeat(5000)));
    let writes = drain_sink(&mut s, "shop");
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].doc.as_ref().unwrap()["manual"],
        json!("z".repeat(5000))
    );
}

#[test]
fn a_primary_key_change_takes_unchanged_values_from_the_old_ids_document() {
    let (_d, mut s) = store();
    let big = drill_with_a_manual(&mut s);
    // product_id 1 → 2 in one transaction: the old document is deleted, the
    // new one arrives without the TOASTed `manual` (key-only old image).
    let mut moved = upsert(
        "products",
        json!(2),
        json!({"product_id": 2, "name": "drill"}),
        None,
        2000,
    );
    moved.unchanged = vec!["manual".into()];
    moved.unchanged_from = Some(json!(1));
    apply(
        &mut s,
        "hq",
        &[delete("products", json!(1), 2000), moved],
        "2",
    );
    assert_eq!(s.get("products", &json!(1)).unwrap(), None);
    let doc = s.get("products", &json!(2)).unwrap().unwrap();
    assert_eq!(doc["name"], json!("drill"));
    assert_eq!(doc["manual"], json!(big), "the moved row keeps its value");
}

#[test]
fn a_truncate_deletes_what_came_before_it_and_fans_out() {
    let (_d, mut s) = store();
    for i in 0..3 {
        apply(&mut s, "hq", &[order(i)], "1");
    }
    drain_sink(&mut s, "shop");
    let mut t = delete("orders", Value::Null, 2000);
    t.op = DocOp::Truncate;
    let out = apply(
        &mut s,
        "hq",
        &[
            t,
            upsert("orders", json!(9), json!({"order_id": 9}), None, 2001),
        ],
        "2",
    );
    assert_eq!(out.applied, 4);
    assert_eq!(
        s.list("orders", None, 10).unwrap().len(),
        1,
        "only the row inserted after the truncate"
    );
    let to_shop = drain_sink(&mut s, "shop");
    assert_eq!(to_shop.iter().filter(|w| w.doc.is_none()).count(), 3);
    assert!(
        drain_sink(&mut s, "hq").is_empty(),
        "hq already holds the truncated table"
    );
}

#[test]
fn a_sink_write_echoed_before_its_commit_is_still_an_echo() {
    let (_d, mut s) = store();
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "note": "first"}),
            None,
            1000,
        )],
        "1",
    );
    // hq's sink picks the document up and records what it will write …
    let entries = s.read_log(0, 100).unwrap();
    let writes = s.pending_writes("hq", &entries, |_| true).unwrap();
    s.record_intents("hq", &writes.iter().collect::<Vec<_>>())
        .unwrap();
    // … shop changes it meanwhile …
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "note": "changed"}),
            None,
            2000,
        )],
        "2",
    );
    // … and hq's feed reports our (now stale) write before the sink committed
    let back = apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "note": "first"}),
            None,
            3000,
        )],
        "h1",
    );
    assert_eq!(
        back.echoes, 1,
        "our own write must not win as a newer change"
    );
    assert_eq!(
        s.get("orders", &json!(1)).unwrap().unwrap()["note"],
        json!("changed")
    );
    s.sink_committed("hq", entries.last().unwrap().seq, &writes, &[])
        .unwrap();
    let again = drain_sink(&mut s, "hq");
    assert_eq!(
        again[0].doc.as_ref().unwrap()["note"],
        json!("changed"),
        "hq then gets the newer value"
    );
}

#[test]
fn a_sink_write_landing_after_an_unseen_user_change_loses_neither() {
    let (_d, mut s) = store();
    let a = json!({"order_id": 3, "status": "delivered", "total": 451.36});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(3), a.clone(), None, 1000)],
        "1",
    );
    deliver(&mut s, "shop");
    // hq ships the order; the store sends it to shop …
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(3),
            json!({"order_id": 3, "status": "shipped", "total": 451.36}),
            None,
            2000,
        )],
        "2",
    );
    let written = drain_sink(&mut s, "shop");
    assert_eq!(written.len(), 1);
    // … but shop's user had changed the total just before our write landed:
    // shop's feed reports the user's change first, then our write.
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(3),
            json!({"order_id": 3, "status": "delivered", "total": 99.99}),
            None,
            2100,
        )],
        "b1",
    );
    let echo = apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(3),
            json!({"order_id": 3, "status": "shipped", "total": 451.36}),
            None,
            2200,
        )],
        "b2",
    );
    assert_eq!(echo.echoes, 1);
    let doc = s.get("orders", &json!(3)).unwrap().unwrap();
    assert_eq!(
        (doc["status"].clone(), doc["total"].clone()),
        (json!("shipped"), json!(99.99)),
        "both changes survive"
    );
    // shop holds our stale write: its sink must correct it
    let fix = deliver(&mut s, "shop");
    assert_eq!(fix.len(), 1);
    assert_eq!(fix[0].doc.as_ref().unwrap()["total"], json!(99.99));
    assert_eq!(
        deliver(&mut s, "hq")[0].doc.as_ref().unwrap()["total"],
        json!(99.99)
    );
}

#[test]
fn a_write_the_feed_marks_as_ours_is_an_echo_without_intents() {
    let (_d, mut s) = store();
    let a = json!({"order_id": 3, "status": "delivered", "total": 451.36});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(3), a, None, 1000)],
        "1",
    );
    // shop's sink writes without recording intents (its feed tags our writes)
    assert_eq!(drain_tagged_sink(&mut s, "shop").len(), 1);
    // hq ships the order; shop's sink writes it …
    let shipped = json!({"order_id": 3, "status": "shipped", "total": 451.36});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(3), shipped.clone(), None, 2000)],
        "2",
    );
    assert_eq!(drain_tagged_sink(&mut s, "shop").len(), 1);
    // … while shop's user had changed the total just before our write landed.
    let user = apply(
        &mut s,
        "shop",
        &[
            own(upsert(
                "orders",
                json!(3),
                json!({"order_id": 3, "status": "delivered", "total": 451.36}),
                None,
                1500,
            )),
            upsert(
                "orders",
                json!(3),
                json!({"order_id": 3, "status": "delivered", "total": 99.99}),
                None,
                2100,
            ),
            own(upsert("orders", json!(3), shipped, None, 2200)),
        ],
        "b",
    );
    assert_eq!(
        (user.applied, user.echoes),
        (1, 2),
        "our two writes are echoes, the user's is a change"
    );
    let doc = s.get("orders", &json!(3)).unwrap().unwrap();
    assert_eq!(
        (doc["status"].clone(), doc["total"].clone()),
        (json!("shipped"), json!(99.99)),
        "both changes survive: the user's total was diffed against our first write, not our second"
    );
    // shop holds our stale write: its sink corrects it, hq gets the total
    let fix = drain_sink(&mut s, "shop");
    assert_eq!(fix.len(), 1);
    assert_eq!(fix[0].doc.as_ref().unwrap()["total"], json!(99.99));
    assert_eq!(
        drain_sink(&mut s, "hq")[0].doc.as_ref().unwrap()["total"],
        json!(99.99)
    );
}

#[test]
fn initial_sync_progress_is_not_a_provider() {
    let (_d, mut s) = store();
    for (coll, done) in [("orders", true), ("customers", false)] {
        let key = format!("initial-sync:hq:{coll}");
        let progress = json!({"after": ["9"], "rows": 10, "done": done}).to_string();
        s.apply_source(
            "hq",
            SourceApply {
                position: Some(&progress),
                position_name: Some(&key),
                ..Default::default()
            },
        )
        .unwrap();
    }
    assert_eq!(s.known_providers().unwrap(), vec!["hq".to_string()]);
    assert_eq!(s.initial_sync_progress("hq").unwrap(), (1, 2, 20));
    assert_eq!(s.initial_sync_progress("shop").unwrap(), (0, 0, 0));
}

#[test]
fn a_store_of_schema_1_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let mut s = Store::open(&path).unwrap();
        apply(&mut s, "hq", &[order(1)], "1");
    }
    // as schema 1 left it
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "ALTER TABLE change_log DROP COLUMN origin_holds;
         DROP INDEX dead_letters_due;
         DROP INDEX dead_letters_doc;
         ALTER TABLE dead_letters DROP COLUMN doc_key;
         ALTER TABLE dead_letters DROP COLUMN due_ms;
         INSERT INTO dead_letters (at_ms, provider, collection, stage, reason, record)
           VALUES (1, 'shop', 'orders', 'sink-waiting', 'fk', '{\"_id\": 9}');
         DROP TABLE conflicts;
         UPDATE meta SET value = '1' WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(conn);
    let mut s = Store::open(&path).unwrap();
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(2),
            json!({"order_id": 2}),
            None,
            2000,
        )],
        "2",
    );
    let log = s.read_log(0, 10).unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        !log[0].origin_holds,
        "entries from before the upgrade are checked"
    );
    assert!(log[1].origin_holds);
    // hq holds both (its shadows say so); shop needs both
    assert!(drain_sink(&mut s, "hq").is_empty());
    assert_eq!(drain_sink(&mut s, "shop").len(), 2);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "4");
    assert!(s.recent_conflicts(None, 1).unwrap().is_empty());
    // Schema 3's waiting letters work on the upgraded store.
    let read = s.read_log_for_sink("shop", 0, 10).unwrap();
    let letter = NewDeadLetter {
        collection: Some("orders".into()),
        stage: connector_store::WAITING_STAGE.into(),
        field: None,
        reason: "foreign key".into(),
        record: json!({"_id": 1}),
    };
    // One left waiting by a build without the columns: an ordinary one.
    assert_eq!(s.waiting_count("shop").unwrap(), 0);
    assert_eq!(s.dead_letter_count(Some("shop")).unwrap(), 1);
    s.sink_committed("shop", read.upto, &[], &[letter]).unwrap();
    assert_eq!(s.waiting_count("shop").unwrap(), 1);
}

#[test]
fn the_origins_sink_passes_by_its_own_changes_unless_they_lost() {
    let (_d, mut s) = store();
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(5),
            json!({"order_id": 5, "status": "paid"}),
            None,
            5000,
        )],
        "1",
    );
    // hq's older change, made before it got shop's, loses the field: hq
    // must be corrected, shop not
    let out = apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(5),
            json!({"order_id": 5, "status": "new"}),
            None,
            4000,
        )],
        "h1",
    );
    assert_eq!(out.applied, 1);
    let log = s.read_log(0, 100).unwrap();
    assert!(!log.last().unwrap().origin_holds);
    let fix = drain_sink(&mut s, "hq");
    assert_eq!(fix.len(), 1);
    assert_eq!(fix[0].doc.as_ref().unwrap()["status"], json!("paid"));
    // a winning change: hq holds the result, shop gets it
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(5),
            json!({"order_id": 5, "status": "shipped"}),
            None,
            6000,
        )],
        "h2",
    );
    assert!(s.read_log(0, 100).unwrap().last().unwrap().origin_holds);
    assert!(drain_sink(&mut s, "hq").is_empty());
    assert_eq!(
        drain_sink(&mut s, "shop")[0].doc.as_ref().unwrap()["status"],
        json!("shipped")
    );
}

#[test]
fn a_tagged_echo_that_overwrote_a_newer_own_change_is_corrected() {
    let (_d, mut s) = store();
    let v = |status: &str| json!({"order_id": 4, "status": status});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(4), v("new"), None, 1000)],
        "1",
    );
    drain_tagged_sink(&mut s, "shop");
    apply(
        &mut s,
        "shop",
        &[own(upsert("orders", json!(4), v("new"), None, 1100))],
        "a",
    );
    // hq changes the order; shop's user changes it later, but our sink's
    // write of hq's value lands in shop after the user's commit
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(4), v("hq"), None, 2000)],
        "2",
    );
    let written = drain_tagged_sink(&mut s, "shop");
    assert_eq!(written[0].doc.as_ref().unwrap()["status"], json!("hq"));
    let back = apply(
        &mut s,
        "shop",
        &[
            upsert("orders", json!(4), v("shop-later"), None, 2100),
            own(upsert("orders", json!(4), v("hq"), None, 2200)),
        ],
        "b",
    );
    assert_eq!((back.applied, back.echoes), (1, 1));
    assert_eq!(
        s.get("orders", &json!(4)).unwrap().unwrap()["status"],
        json!("shop-later")
    );
    // shop now holds hq's value: its sink writes the winner back
    let fix = drain_tagged_sink(&mut s, "shop");
    assert_eq!(fix.len(), 1);
    assert_eq!(fix[0].doc.as_ref().unwrap()["status"], json!("shop-later"));
}

#[test]
fn a_tagged_echo_of_our_write_over_a_newer_own_change_is_corrected() {
    let (_d, mut s) = store();
    let v = |total: f64| json!({"order_id": 7, "total": total});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(7), v(1.0), None, 1000)],
        "1",
    );
    drain_tagged_sink(&mut s, "shop");
    apply(
        &mut s,
        "shop",
        &[own(upsert("orders", json!(7), v(1.0), None, 1100))],
        "a",
    );
    // hq sets 2; shop's sink reads it and starts writing …
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(7), v(2.0), None, 2000)],
        "2",
    );
    let after = s
        .cursor(&connector_store::sink_cursor("shop"))
        .unwrap()
        .unwrap();
    let read = s.read_log_for_sink("shop", after, 100).unwrap();
    let writes = s.pending_writes("shop", &read.entries, |_| true).unwrap();
    // … shop's user sets 3 just before our write lands over it; the store
    // takes 3 (the later commit), which shop reported itself …
    let user = apply(
        &mut s,
        "shop",
        &[upsert("orders", json!(7), v(3.0), None, 2100)],
        "b",
    );
    assert_eq!(user.applied, 1);
    // … then our write commits in shop (holding 2) and its echo comes back
    s.sink_committed("shop", read.upto, &writes, &[]).unwrap();
    let echo = apply(
        &mut s,
        "shop",
        &[own(upsert("orders", json!(7), v(2.0), None, 2200))],
        "c",
    );
    assert_eq!(echo.echoes, 1);
    assert_eq!(
        s.get("orders", &json!(7)).unwrap().unwrap()["total"],
        json!(3.0)
    );
    // shop holds 2 while the store holds 3: its sink must write 3 back
    let fix = drain_tagged_sink(&mut s, "shop");
    assert_eq!(fix.len(), 1, "shop is left holding our stale write");
    assert_eq!(fix[0].doc.as_ref().unwrap()["total"], json!(3.0));
}

#[test]
fn a_batch_read_ahead_is_compared_again_where_the_batch_before_wrote() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(9)], "1");
    // batch N: shop's sink plans the new order …
    let n = s.read_log_for_sink("shop", 0, 100).unwrap();
    let planned = s.pending_writes("shop", &n.entries, |_| true).unwrap();
    assert_eq!(planned.len(), 1);
    // … hq deletes it, and batch N+1 is read ahead while N is written
    apply(&mut s, "hq", &[delete("orders", json!(9), 2000)], "2");
    let ahead = s.read_log_for_sink("shop", n.upto, 100).unwrap();
    let early = s.pending_writes("shop", &ahead.entries, |_| true).unwrap();
    assert!(
        early.is_empty(),
        "before N commits, shop seems never to have held the order"
    );
    s.sink_committed("shop", n.upto, &planned, &[]).unwrap();
    let mut touched = std::collections::HashMap::new();
    for p in &planned {
        touched
            .entry(p.write.collection.clone())
            .or_insert_with(std::collections::HashSet::new)
            .insert(p.key.clone());
    }
    let writes = s
        .recheck_pending("shop", &ahead.entries, early, &touched, |_| true)
        .unwrap();
    assert_eq!(writes.len(), 1, "shop must get the delete");
    assert!(writes[0].write.doc.is_none());
}

#[test]
fn a_sink_commit_recorded_after_a_newer_change_of_the_provider_does_not_hide_it() {
    let (_d, mut s) = store();
    let status = |st: &str| json!({"order_id": 7, "status": st});
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(7), status("new"), None, 1000)],
        "1",
    );
    deliver(&mut s, "shop");
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(7), status("open"), None, 2000)],
        "2",
    );
    // shop's sink plans `open` and writes it; before it records the commit,
    // shop's feed brings the echo and then a change of shop's own user.
    let after = s
        .cursor(&connector_store::sink_cursor("shop"))
        .unwrap()
        .unwrap();
    let read = s.read_log_for_sink("shop", after, 100).unwrap();
    let writes = s.pending_writes("shop", &read.entries, |_| true).unwrap();
    assert_eq!(writes.len(), 1);
    apply(
        &mut s,
        "shop",
        &[own(upsert("orders", json!(7), status("open"), None, 2100))],
        "a",
    );
    apply(
        &mut s,
        "shop",
        &[upsert("orders", json!(7), status("closed"), None, 2200)],
        "b",
    );
    s.sink_committed("shop", read.upto, &writes, &[]).unwrap();
    // hq moves on and back to `open` before shop's sink runs again: shop
    // holds `closed`, so its sink must write.
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(7), status("pending"), None, 2500)],
        "3",
    );
    apply(
        &mut s,
        "hq",
        &[upsert("orders", json!(7), status("open"), None, 3000)],
        "4",
    );
    let written = drain_sink(&mut s, "shop");
    assert_eq!(
        written.iter().map(|w| w.doc.clone()).collect::<Vec<_>>(),
        vec![Some(status("open").as_object().unwrap().clone())],
        "shop still holds `closed`"
    );
}

#[test]
fn intents_wait_for_a_feed_that_is_behind() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(1)], "1");
    let written = run_sink(&mut s, "shop", true);
    assert_eq!(written.len(), 1);
    // Older than the age given, but shop's feed has delivered nothing
    // since: the echo may still come.
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(s.expire_intents("shop", 0).unwrap(), 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // A commit of shop's from two minutes after the write, and no echo
    // before it: the write's echo will not come.
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(2),
            json!({"order_id": 2}),
            None,
            now + 120_000,
        )],
        "s1",
    );
    assert_eq!(s.expire_intents("shop", 0).unwrap(), 1);
}

#[test]
fn a_tagged_echo_without_its_unchanged_toast_values_is_still_only_an_echo() {
    let (_d, mut s) = store();
    let notes = "n".repeat(3000);
    let row = |q: i64| json!({"inventory_id": 1, "quantity": q, "notes": notes});
    apply(
        &mut s,
        "hq",
        &[counted(upsert("inventory", json!(1), row(3), None, 1000))],
        "1",
    );
    deliver(&mut s, "shop");
    apply(
        &mut s,
        "hq",
        &[counted(upsert(
            "inventory",
            json!(1),
            row(5),
            Some(row(3)),
            2000,
        ))],
        "2",
    );
    assert_eq!(drain_tagged_sink(&mut s, "shop").len(), 1);
    // shop's feed reports our write (tagged by its replication origin)
    // without `notes`, which PostgreSQL sent as unchanged TOAST.
    let mut echo = own(counted(upsert(
        "inventory",
        json!(1),
        json!({"inventory_id": 1, "quantity": 5}),
        None,
        2100,
    )));
    echo.unchanged = vec!["notes".into()];
    let out = apply(&mut s, "shop", &[echo], "a");
    assert_eq!((out.echoes, out.applied), (1, 0));
    let doc = s.get("inventory", &json!(1)).unwrap().unwrap();
    assert_eq!(
        doc["quantity"],
        json!(5),
        "our own write counted as a delta"
    );
    assert_eq!(doc["notes"], json!(notes));
    assert!(drain_tagged_sink(&mut s, "shop").is_empty());
}

#[test]
fn a_truncate_comes_after_what_its_origin_saw_as_a_delete_does() {
    let (_d, mut s) = store();
    // shop's clock runs ahead: its row is stamped after hq's truncate.
    apply(
        &mut s,
        "shop",
        &[upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": "x"}),
            None,
            5000,
        )],
        "1",
    );
    deliver(&mut s, "hq");
    let mut t = delete("orders", Value::Null, 3000);
    t.op = DocOp::Truncate;
    apply(&mut s, "hq", &[t], "2");
    assert_eq!(
        s.get("orders", &json!(1)).unwrap(),
        None,
        "hq truncated a table holding the row"
    );
}

#[test]
fn a_delete_from_a_table_lacking_a_field_comes_after_what_it_saw() {
    let (_d, mut s) = store();
    // `note` only hq's table has; hq's clock runs ahead of shop's.
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(7),
            json!({"order_id": 7, "status": "new", "note": "x"}),
            None,
            1000,
        )],
        "1",
    );
    drain_sink(&mut s, "shop");
    // shop's echo: its table has no `note`.
    let out = apply(
        &mut s,
        "shop",
        &[own(upsert(
            "orders",
            json!(7),
            json!({"order_id": 7, "status": "new"}),
            None,
            900,
        ))],
        "a",
    );
    assert_eq!(out.echoes, 1);
    apply(
        &mut s,
        "hq",
        &[upsert(
            "orders",
            json!(7),
            json!({"order_id": 7, "status": "paid", "note": "x"}),
            None,
            5000,
        )],
        "2",
    );
    drain_sink(&mut s, "shop");
    apply(
        &mut s,
        "shop",
        &[own(upsert(
            "orders",
            json!(7),
            json!({"order_id": 7, "status": "paid"}),
            None,
            2900,
        ))],
        "b",
    );
    // shop, having seen `paid`, deletes the order by its own (slower) clock.
    apply(&mut s, "shop", &[delete("orders", json!(7), 3000)], "c");
    assert_eq!(
        s.get("orders", &json!(7)).unwrap(),
        None,
        "shop's delete came after everything it saw"
    );
}

#[test]
fn a_refused_writes_intent_is_dropped_and_takes_no_change_for_its_echo() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[order(1)], "1");
    let read = s.read_log_for_sink("shop", 0, 100).unwrap();
    let writes = s.pending_writes("shop", &read.entries, |_| true).unwrap();
    s.record_intents("shop", &writes.iter().collect::<Vec<_>>())
        .unwrap();
    // shop refused the row (a dead letter): no echo will come.
    s.drop_intents("shop", &[&writes[0]]).unwrap();
    s.sink_committed("shop", read.upto, &[], &[]).unwrap();
    // shop's own user then writes exactly that row: a change, not an echo.
    let out = apply(&mut s, "shop", &[order(1)], "a");
    assert_eq!(out.echoes, 0, "taken for the refused write's echo");
}

#[test]
fn a_counter_change_stamped_behind_its_origins_last_one_still_counts() {
    // hq's clock steps back between two sales: its feed order decides.
    let (_d, mut s) = store();
    let row = |q: i64| json!({"inventory_id": 1, "quantity": q});
    apply(
        &mut s,
        "hq",
        &[counted(upsert("inventory", json!(1), row(10), None, 1000))],
        "1",
    );
    apply(
        &mut s,
        "hq",
        &[counted(upsert(
            "inventory",
            json!(1),
            row(7),
            Some(row(10)),
            990,
        ))],
        "2",
    );
    let doc = s.get("inventory", &json!(1)).unwrap().unwrap();
    assert_eq!(doc["quantity"], json!(7), "the second sale was lost");
}

#[test]
fn a_batch_in_parts_commits_whole_or_not_at_all() {
    let (_d, mut s) = store();
    apply(&mut s, "hq", &[stock("a", json!(10), None, 1000)], "p1");
    fn part(c: &[DocChange]) -> SourceApply<'_> {
        SourceApply {
            changes: c,
            received: c.len() as u64,
            ..Default::default()
        }
    }
    // One transaction of two parts fails after its first: nothing of it
    // stays, not even the position the first part carried.
    let first = [stock("a", json!(9), Some(json!(10)), 2000)];
    let second = [order(7)];
    let failed = s.apply_source_parts("hq", |merge| -> Result<(), connector_store::StoreError> {
        merge(SourceApply {
            position: Some("p2"),
            ..part(&first)
        })?;
        merge(part(&second))?;
        Err(connector_store::StoreError::Open {
            path: "spill".into(),
            message: "the temporary file could not be read".into(),
        })
    });
    assert!(failed.is_err());
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("p1"));
    assert_eq!(
        s.get("inventory", &json!("a")).unwrap().unwrap()["quantity"],
        json!(10)
    );
    assert_eq!(s.get("orders", &json!(7)).unwrap(), None);
    // Read again whole (the feed sends it again): the counter moves once.
    let applied = s
        .apply_source_parts("hq", |merge| -> Result<(), connector_store::StoreError> {
            merge(SourceApply {
                position: Some("p2"),
                ..part(&first)
            })?;
            merge(part(&second))
        })
        .unwrap();
    assert_eq!(applied.applied, 2);
    assert_eq!(s.position("hq").unwrap().as_deref(), Some("p2"));
    assert_eq!(
        s.get("inventory", &json!("a")).unwrap().unwrap()["quantity"],
        json!(9)
    );
    assert!(s.get("orders", &json!(7)).unwrap().is_some());
}

#[test]
fn concurrent_changes_of_a_field_are_kept_as_conflicts_and_sequential_ones_are_not() {
    let (_d, mut s) = store();
    let status = |v: &str, ts: i64| {
        upsert(
            "orders",
            json!(1),
            json!({"order_id": 1, "status": v}),
            None,
            ts,
        )
    };
    apply(&mut s, "hq", &[status("a", 1000)], "h1");
    // shop holds what hq wrote (its sink wrote it; the image came back).
    apply(&mut s, "shop", &[status("a", 1000)], "s1");
    apply(&mut s, "hq", &[status("b", 2000)], "h2");
    // shop changes it without having seen b: a conflict, shop's later
    // stamp keeps its value.
    let applied = apply(&mut s, "shop", &[status("c", 3000)], "s2");
    assert_eq!(applied.conflicts, 1);
    // hq changes it from b, not having seen c, at an earlier stamp: hq's
    // change is the one lost.
    apply(&mut s, "hq", &[status("d", 2500)], "h3");
    // shop goes on from its own value: no conflict; nor a copy's row.
    apply(&mut s, "shop", &[status("e", 4000)], "s3");
    let mut copied = status("f", 5000);
    copied.snapshot = true;
    apply(&mut s, "hq", &[copied], "h4");
    let all = s.recent_conflicts(None, 10).unwrap();
    let seen: Vec<(&str, &str, &str, &str)> = all
        .iter()
        .map(|c| {
            (
                c.kept_from.as_str(),
                c.kept.as_str().unwrap(),
                c.lost_from.as_str(),
                c.lost.as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![("shop", "c", "hq", "d"), ("shop", "c", "hq", "b")]
    );
    assert!(all
        .iter()
        .all(|c| c.field == "status" && c.collection == "orders"));
    assert_eq!(s.conflicts_lost("hq", 0).unwrap(), 2);
    assert_eq!(s.conflicts_lost("shop", 0).unwrap(), 0);
    assert_eq!(s.recent_conflicts(Some("shop"), 1).unwrap().len(), 1);
    assert_eq!(
        s.get("orders", &json!(1)).unwrap().unwrap()["status"],
        json!("f")
    );
}

#[test]
fn a_store_of_this_schema_opens_while_a_long_write_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let mut s = Store::open(&path).unwrap();
        apply(&mut s, "hq", &[order(1)], "1");
    }
    // Another process merges a large transaction (one long write).
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    // `status` opens the store and reads: it took the write lock to
    // migrate, and failed after the busy timeout.
    let s = Store::open(&path).unwrap();
    assert_eq!(s.provider_stats("hq").unwrap().applied, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    writer.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_stopped_task_stays_the_last_error_until_it_runs_again() {
    let (_d, mut s) = store();
    let last = |s: &Store| s.provider_stats("shop").unwrap().last_error.unwrap();
    s.record_error(
        "shop",
        "sink",
        "sink STOPPED (restart once fixed): permission denied",
    )
    .unwrap();
    // The source retries a reconnect meanwhile: the sink is still stopped.
    s.record_error("shop", "source", "connection reset")
        .unwrap();
    assert!(last(&s).contains("sink STOPPED"), "{}", last(&s));
    assert_eq!(s.provider_stats("shop").unwrap().errors, 2);
    // The source's session starting again says nothing of the sink's.
    s.note_running("shop", "source").unwrap();
    assert!(last(&s).contains("sink STOPPED"), "{}", last(&s));
    s.note_running("shop", "sink").unwrap();
    assert!(
        last(&s).contains("sink stopped, since started again"),
        "{}",
        last(&s)
    );
    s.record_error("shop", "source", "connection reset")
        .unwrap();
    assert_eq!(last(&s), "source: connection reset");
}
