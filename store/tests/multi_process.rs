//! Two worker processes writing one store file lose nothing and produce a
//! gap-free change log. The test binary re-runs itself as the children.

use std::process::Command;
use std::sync::Arc;

use connector_core::{DocChange, DocOp};
use connector_store::{SourceApply, Store};
use serde_json::json;

const BATCHES: usize = 500;
const PER_BATCH: usize = 4;

#[test]
#[ignore = "runs as a child process of two_processes_share_one_store"]
fn child_writer() {
    let (Ok(path), Ok(origin)) = (std::env::var("CHILD_STORE"), std::env::var("CHILD_ORIGIN"))
    else {
        return;
    };
    let mut store = Store::open(&path).unwrap();
    // Start together: announce readiness, wait for the parent's go.
    let dir = std::path::Path::new(&path).parent().unwrap().to_path_buf();
    std::fs::write(dir.join(format!("ready-{origin}")), "").unwrap();
    while !dir.join("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for b in 0..BATCHES {
        // A worker reads its feed between batches; SQLite's busy handler
        // then finds the lock free (a writer in a tight loop would starve
        // the other until it finished).
        std::thread::sleep(std::time::Duration::from_micros(500));
        let changes: Vec<DocChange> = (0..PER_BATCH)
            .map(|i| DocChange {
                collection: "orders".into(),
                id: json!(format!("{origin}-{b}-{i}")),
                op: DocOp::Upsert,
                fields: json!({"n": b * PER_BATCH + i, "by": origin})
                    .as_object()
                    .unwrap()
                    .clone(),
                before: None,
                commit_ts_ms: None,
                counters: Arc::from(Vec::<String>::new()),
                unchanged: vec![],
                unchanged_from: None,
                snapshot: false,
                own_write: false,
            })
            .collect();
        store
            .apply_source(
                &origin,
                SourceApply {
                    changes: &changes,
                    position: Some(&b.to_string()),
                    received: PER_BATCH as u64,
                    ..Default::default()
                },
            )
            .unwrap();
    }
}

#[test]
fn two_processes_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    Store::open(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|origin| {
            Command::new(&exe)
                .args(["--ignored", "--exact", "child_writer", "--test-threads=1"])
                .env("CHILD_STORE", &path)
                .env("CHILD_ORIGIN", origin)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !["p1", "p2"]
        .iter()
        .all(|o| dir.path().join(format!("ready-{o}")).exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "writers did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::write(dir.path().join("go"), "").unwrap();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a writer process failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = Store::open(&path).unwrap();
    let total = (2 * BATCHES * PER_BATCH) as i64;
    assert_eq!(store.last_seq().unwrap(), total);
    let log = store.read_log(0, total as usize + 10).unwrap();
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "the log has gaps or duplicates"
    );
    let switches = log
        .windows(2)
        .filter(|w| w[0].origin != w[1].origin)
        .count();
    assert!(
        switches > 1,
        "the writers did not overlap ({switches} switches)"
    );
    // every document and both positions are there
    let docs = store.list("orders", None, total as usize + 10).unwrap();
    assert_eq!(docs.len() as i64, total);
    for origin in ["p1", "p2"] {
        assert_eq!(
            store.position(origin).unwrap(),
            Some((BATCHES - 1).to_string())
        );
        assert_eq!(
            store.provider_stats(origin).unwrap().applied,
            (BATCHES * PER_BATCH) as u64
        );
    }
}
