//! The `connector` binary as a user runs it: a clean environment, a
//! temporary working directory, real store files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use connector_core::{DocChange, DocOp};
use connector_store::{NewDeadLetter, SourceApply, Store};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn connector(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_connector"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn retail() -> String {
    repo().join("mappings/retail.yaml").display().to_string()
}

#[test]
fn the_sample_mapping_file_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = connector(dir.path(), &[], &["mappings", "check", &retail()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("9 collection(s): 8 synced, not synced: product_embeddings"),
        "{stdout}"
    );
}

#[test]
fn a_broken_mapping_file_gets_one_located_line_per_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "collections:\n  stores:\n    id: {mode: single_field, field: store_id}\n    filtr: {deleted: false}\n  customers:\n    id:\n      mode: single_field\n  stores:\n    id: {mode: match_ids}\n",
    )
    .unwrap();
    let out = connector(dir.path(), &[], &["mappings", "check", "bad.yaml"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bad.yaml:"))
        .collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with("bad.yaml:4:5: unknown key `filtr`"));
    assert!(lines[1].starts_with("bad.yaml:7:13: ") && lines[1].contains("needs `field"));
    assert!(lines[2].starts_with("bad.yaml:8:3: duplicate collection `stores`"));
    // the default is ./mappings, and a missing directory is an error too
    let out = connector(dir.path(), &[], &["mappings", "check"]);
    assert!(!out.status.success());
}

#[test]
fn status_and_query_on_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = connector(dir.path(), &[], &["status"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("empty: nothing synced yet"), "{stdout}");
    assert!(stdout.contains("no providers configured"), "{stdout}");
    assert!(
        !dir.path().join("data").exists(),
        "status must not create a store"
    );
    let out = connector(dir.path(), &[], &["query", "orders"]);
    assert_eq!(text(&out).0.trim(), "[]");
    let out = connector(dir.path(), &[], &["query", "orders", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("not found"));
    let out = connector(dir.path(), &[], &["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["store"]["exists"], json!(false));
    assert_eq!(v["providers"], json!([]));
}

fn fill(store_path: &Path) {
    let mut s = Store::open(store_path).unwrap();
    let change = |coll: &str, id: Value, fields: Value| DocChange {
        collection: coll.into(),
        id,
        op: DocOp::Upsert,
        fields: fields.as_object().unwrap().clone(),
        before: None,
        commit_ts_ms: Some(connector_store::stamp::now_millis() - 1500),
        counters: Arc::from(Vec::<String>::new()),
        unchanged: vec![],
        unchanged_from: None,
        snapshot: false,
        own_write: false,
    };
    let changes = vec![
        change("orders", json!(1), json!({"order_id": 1, "status": "paid"})),
        change("orders", json!(2), json!({"order_id": 2, "status": "new"})),
        change(
            "store_order_numbers",
            json!({"store_id": 3, "order_no": 17}),
            json!({"store_id": 3, "order_no": 17}),
        ),
        change("categories", json!("c-1"), json!({"name": "Tools"})),
    ];
    let dead = vec![NewDeadLetter {
        collection: Some("stores".into()),
        stage: "mapping".into(),
        field: Some("store_id".into()),
        reason: "id field `store_id` is null".into(),
        record: json!({"table": "stores", "op": "insert", "row": {"store_id": null, "name": "x"}}),
    }];
    s.apply_source(
        "postgres",
        SourceApply {
            changes: &changes,
            dead_letters: &dead,
            position: Some("0/1A2B3C"),
            received: 5,
            ..Default::default()
        },
    )
    .unwrap();
}

const PG: &[(&str, &str)] = &[
    ("DITTO_SYNC_POSTGRES", "true"),
    (
        "POSTGRES_CONNECTION_STRING",
        "postgres://app:Sup3rS3cret@db.internal:5432/hq",
    ),
    (
        "SQLSERVER_CONNECTION_STRING",
        "Server=sql;User Id=sa;Password=Sup3rS3cret;",
    ),
];

#[test]
fn status_and_query_on_a_filled_store_never_show_secrets() {
    let dir = tempfile::tempdir().unwrap();
    fill(&dir.path().join("data/store.db"));
    let out = connector(dir.path(), PG, &["status"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("Sup3rS3cret") && !stderr.contains("Sup3rS3cret"),
        "{stdout}"
    );
    assert!(
        stdout.contains("postgres://app:***@db.internal:5432/hq"),
        "{stdout}"
    );
    assert!(stdout.contains("Password=***"), "{stdout}");
    let pg_line = stdout.lines().find(|l| l.starts_with("postgres ")).unwrap();
    assert!(
        pg_line.contains("0/1A2B3C") && pg_line.contains("yes"),
        "{pg_line}"
    );
    assert!(stdout.contains("1 dead letter(s)"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("orders") && l.contains(" 2 ")),
        "{stdout}"
    );

    let out = connector(dir.path(), PG, &["status", "--json"]);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!raw.contains("Sup3rS3cret"));
    let v: Value = serde_json::from_str(&raw).unwrap();
    let pg = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "postgres")
        .unwrap()
        .clone();
    assert_eq!(pg["applied"], json!(4));
    assert_eq!(pg["dead_letters"], json!(1));
    assert_eq!(pg["position"], json!("0/1A2B3C"));
    assert!(pg["source_lag_ms"].as_i64().unwrap() >= 1000);
    let sql = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sqlserver")
        .unwrap()
        .clone();
    assert_eq!(sql["enabled"], json!(false));

    let out = connector(dir.path(), &[], &["query", "orders", "1"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, json!({"_id": 1, "order_id": 1, "status": "paid"}));
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim_start()
        .starts_with("{\n  \"_id\""));
    let out = connector(
        dir.path(),
        &[],
        &[
            "query",
            "store_order_numbers",
            r#"{"order_no":17,"store_id":3}"#,
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let out = connector(dir.path(), &[], &["query", "categories", "c-1"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["name"],
        json!("Tools")
    );
    let out = connector(dir.path(), &[], &["query", "orders", "--limit", "1"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn dead_letters_can_be_listed_retried_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    fill(&dir.path().join("data/store.db"));
    std::fs::create_dir(dir.path().join("mappings")).unwrap();
    std::fs::copy(retail(), dir.path().join("mappings/retail.yaml")).unwrap();
    let out = connector(dir.path(), PG, &["dead-letters", "list"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("store_id") && stdout.contains("is null"),
        "{stdout}"
    );
    let out = connector(dir.path(), PG, &["dead-letters", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0]["id"].as_i64().unwrap().to_string();
    assert_eq!(list[0]["record"]["row"]["name"], json!("x"));
    // retrying a record whose id is still null fails again and says why
    let out = connector(dir.path(), PG, &["dead-letters", "retry", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).0.contains("still failing"), "{}", text(&out).0);
    let out = connector(dir.path(), PG, &["dead-letters", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()[0]["attempts"],
        json!(2)
    );
    // `-p` with an id of another provider's is refused
    let out = connector(
        dir.path(),
        PG,
        &["dead-letters", "discard", "-p", "shop", &id],
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    // fixed in the mapping? here: discard it
    let out = connector(dir.path(), PG, &["dead-letters", "discard", &id]);
    assert!(text(&out).0.contains("discarded 1"));
    let out = connector(dir.path(), PG, &["dead-letters", "list"]);
    assert!(text(&out).0.contains("no dead letters"));
    // A sink letter of a provider no longer configured: no sink would
    // write it, so retrying fails and keeps it (it said "queued").
    {
        let mut s = Store::open(dir.path().join("data/store.db")).unwrap();
        s.apply_source(
            "gone",
            SourceApply {
                dead_letters: &[NewDeadLetter {
                    collection: Some("orders".into()),
                    stage: connector_store::SINK_STAGE.into(),
                    field: None,
                    reason: "refused".into(),
                    record: json!({"_id": 1}),
                }],
                ..Default::default()
            },
        )
        .unwrap();
    }
    let out = connector(dir.path(), PG, &["dead-letters", "retry", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("provider `gone` is no longer configured"),
        "{:?}",
        text(&out)
    );
    let out = connector(dir.path(), PG, &["dead-letters", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn provider_commands_explain_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = connector(dir.path(), &[], &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("no enabled providers"),
        "{}",
        text(&out).1
    );
    let out = connector(dir.path(), &[("DITTO_SYNC_POSTGRES", "true")], &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out)
        .1
        .contains("POSTGRES_CONNECTION_STRING is not set"));
    let out = connector(dir.path(), PG, &["test-connection", "--provider", "nope"]);
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    assert!(
        text(&out).1.contains("no provider named `nope`"),
        "{}",
        text(&out).1
    );
}

#[test]
fn a_dot_env_file_configures_providers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "CONNECTOR_PROVIDERS=hq=postgres,shop=postgres\nCONNECTOR_HQ_CONNECTION_STRING=postgres://u:pw1@h/hq\nCONNECTOR_SHOP_CONNECTION_STRING=postgres://u:pw2@h/shop\n",
    )
    .unwrap();
    let out = connector(dir.path(), &[], &["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["hq", "shop"]);
    assert_eq!(
        v["providers"][1]["connection"],
        json!("postgres://u:***@h/shop")
    );
}

#[test]
fn help_explains_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = connector(dir.path(), &[], &["--help"]);
    let (stdout, _) = text(&out);
    for cmd in [
        "run",
        "initial-sync",
        "setup",
        "verify",
        "test-connection",
        "status",
        "query",
        "dead-letters",
        "mappings",
    ] {
        assert!(stdout.contains(cmd), "{cmd} missing from --help:\n{stdout}");
    }
}

#[test]
fn a_dot_env_line_that_cannot_be_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Unquoted, the value's spaces stop dotenvy: the lines after it were
    // dropped without a word.
    std::fs::write(
        dir.path().join(".env"),
        "IBMCLOUD_CONNECTION_STRING=Driver={IBM DB2 ODBC DRIVER};Database=x;Pwd=s3cret;\nDITTO_SYNC_POSTGRES=true\n",
    )
    .unwrap();
    let out = connector(dir.path(), &[], &["status"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read the .env file"), "{stderr}");
    assert!(stderr.contains("`IBMCLOUD_CONNECTION_STRING`"), "{stderr}");
    // dotenvy's message quotes the line, password and all.
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// `connector run` of one provider that can never start (MongoDB is not
/// built in), with `more` environment.
fn run_unstartable(dir: &Path, more: &[(&str, &str)]) -> Output {
    let mappings = retail();
    let mut env = vec![
        ("CONNECTOR_PROVIDERS", "m=mongodb"),
        ("CONNECTOR_M_CONNECTION_STRING", "mongodb://localhost:1/x"),
        ("CONNECTOR_MAPPINGS", mappings.as_str()),
    ];
    env.extend_from_slice(more);
    connector(dir, &env, &["run"])
}

#[test]
fn run_exits_3_when_no_provider_can_ever_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_unstartable(dir.path(), &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
}

#[test]
fn a_metrics_address_that_cannot_be_used_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    for (addr, said) in [
        ("9187", "expected host:port"),
        (taken.as_str(), "cannot listen"),
    ] {
        let out = run_unstartable(dir.path(), &[("CONNECTOR_HTTP_ADDR", addr)]);
        let (_, stderr) = text(&out);
        // 2: the unit does not restart it (a port another instance holds
        // exited 1, and systemd cycled through its restarts).
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert!(stderr.contains(said), "{addr}: {stderr}");
    }
}

#[test]
fn mappings_check_resolves_names_per_configured_provider() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "collections:\n  customers:\n    id: {mode: match_ids}\n    providers:\n      shop: {columns: {code: id}}\n",
    )
    .unwrap();
    let out = connector(dir.path(), &[], &["mappings", "check", "m.yaml"]);
    assert!(out.status.success(), "{:?}", text(&out));
    // The global option takes one value: the subcommand after it is one.
    let out = connector(
        dir.path(),
        &[],
        &["--mappings", "m.yaml", "mappings", "check"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let out = connector(
        dir.path(),
        &[
            ("CONNECTOR_PROVIDERS", "shop=postgres"),
            ("CONNECTOR_SHOP_CONNECTION_STRING", "postgres://u@h/shop"),
        ],
        &["mappings", "check", "m.yaml"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fields `_id` and `code` both map to column `id`"),
        "{stderr}"
    );
}
