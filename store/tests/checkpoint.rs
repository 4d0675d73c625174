//! The background checkpointer: it copies the WAL into the database file
//! while a writer goes on, so the WAL starts over instead of growing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_core::{DocChange, DocOp};
use connector_store::{SourceApply, Store};
use serde_json::json;

fn batch(round: usize) -> Vec<DocChange> {
    (0..50)
        .map(|i| DocChange {
            collection: "orders".into(),
            id: json!(round * 50 + i),
            op: DocOp::Upsert,
            fields: json!({"order_id": round * 50 + i, "status": "new", "note": "x".repeat(200)})
                .as_object()
                .unwrap()
                .clone(),
            before: None,
            commit_ts_ms: Some(1_700_000_000_000 + round as i64),
            counters: Arc::from(Vec::<String>::new()),
            unchanged: vec![],
            unchanged_from: None,
            snapshot: false,
            own_write: false,
        })
        .collect()
}

fn write_rounds(store: &mut Store, rounds: std::ops::Range<usize>) {
    for round in rounds {
        let changes = batch(round);
        store
            .apply_source(
                "hq",
                SourceApply {
                    changes: &changes,
                    position: Some(&round.to_string()),
                    ..Default::default()
                },
            )
            .unwrap();
    }
}

fn wal_bytes(store: &Store) -> u64 {
    let mut wal = store.path().as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn the_wal_is_copied_in_the_background_and_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("store.db")).unwrap();
    let checkpointer = store
        .checkpoint_in_background(Duration::from_millis(5))
        .unwrap();
    write_rounds(&mut store, 0..100);
    let first = wal_bytes(&store);
    assert!(
        first > 1_000_000,
        "100 batches should fill the WAL: {first} bytes"
    );

    // 13 MB of WAL: below the writer's own checkpoint (128 MB), which has
    // not run; the background thread copies every frame.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (runs, log, copied) = checkpointer.progress();
        if runs > 0 && log > 0 && copied == log {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpointer did not catch up: {runs} runs, {copied}/{log} frames"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // The WAL starts over once the writer pauses (the worker's tasks wait on
    // their databases) and finds every frame copied: 300 more batches
    // (40 MB) do not make the file grow by as much.
    for round in (100..400).step_by(10) {
        write_rounds(&mut store, round..round + 10);
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = wal_bytes(&store);
    assert!(
        second < 2 * first,
        "the WAL grew from {first} to {second} bytes instead of starting over"
    );
    assert!(store.get("orders", &json!(19_999)).unwrap().is_some());
    assert_eq!(store.position("hq").unwrap().as_deref(), Some("399"));
    drop(checkpointer);
}
