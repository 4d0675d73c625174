//! Mapping tests against the shipped retail file and deliberately broken ones.

use super::*;
use crate::change::{DocOp, RawChange, RawOp, SinkWrite};
use crate::provider::ProviderKind;
use serde_json::{json, Value};
use std::sync::Arc;

fn retail() -> Arc<MappingSet> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../mappings/retail.yaml");
    Arc::new(MappingSet::load(&[path.into()]).unwrap_or_else(|e| panic!("{e:?}")))
}

fn raw(table: &str, op: RawOp, row: Value) -> RawChange {
    RawChange {
        table: table.into(),
        schema: None,
        op,
        row: row.as_object().unwrap().clone(),
        before: None,
        commit_ts_ms: Some(1_700_000_000_000),
        unchanged: vec![],
        unchanged_from: None,
        own_write: false,
        txn: None,
    }
}

fn change(m: &ProviderMapping, r: RawChange) -> crate::DocChange {
    match m.inbound(&r) {
        Inbound::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn retail_file_describes_the_sample_schema() {
    let set = retail();
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    for c in [
        "stores",
        "customers",
        "categories",
        "products",
        "product_embeddings",
        "inventory",
        "orders",
        "order_items",
        "store_order_numbers",
    ] {
        assert!(names.contains(&c), "{c} missing from {names:?}");
    }
    let emb = set.collection("product_embeddings").unwrap();
    assert!(!emb.sync);
    assert!(emb.reason.as_deref().unwrap().contains("too large"));
    assert_eq!(
        set.collection("stores").unwrap().id,
        IdMode::SingleField("store_id".into())
    );
    assert_eq!(set.collection("categories").unwrap().id, IdMode::MatchIds);
    assert_eq!(
        &*set.collection("inventory").unwrap().counters,
        ["quantity".to_string()]
    );
    assert_eq!(
        set.collection("store_order_numbers").unwrap().id,
        IdMode::MultipleFields(vec!["store_id".into(), "order_no".into()])
    );
}

#[test]
fn single_field_ids_stay_in_the_body() {
    let m = ProviderMapping::new(retail(), "hq", ProviderKind::Postgres);
    let c = change(
        &m,
        raw(
            "stores",
            RawOp::Insert,
            json!({"store_id": 3, "name": "Oslo"}),
        ),
    );
    assert_eq!(c.collection, "stores");
    assert_eq!(c.id, json!(3));
    assert_eq!(c.fields.get("store_id"), Some(&json!(3)));
    assert_eq!(c.op, DocOp::Upsert);
}

#[test]
fn match_ids_takes_the_native_id_of_each_provider_kind() {
    let set = retail();
    let pg = ProviderMapping::new(set.clone(), "hq", ProviderKind::Postgres);
    let c = change(
        &pg,
        raw(
            "categories",
            RawOp::Insert,
            json!({"id": "c-1", "name": "Tools"}),
        ),
    );
    assert_eq!(c.id, json!("c-1"));
    assert!(!c.fields.contains_key("id") && !c.fields.contains_key("_id"));
    let mongo = ProviderMapping::new(set, "m", ProviderKind::MongoDb);
    let c = change(
        &mongo,
        raw(
            "categories",
            RawOp::Insert,
            json!({"_id": "c-1", "name": "Tools"}),
        ),
    );
    assert_eq!(c.id, json!("c-1"));
    // and back out: each provider gets its own id column
    let w = SinkWrite {
        collection: "categories".into(),
        id: json!("c-1"),
        doc: Some(c.fields.clone()),
    };
    assert_eq!(
        pg.outbound(&w).unwrap().row.unwrap().get("id"),
        Some(&json!("c-1"))
    );
    assert_eq!(
        mongo.outbound(&w).unwrap().key,
        vec![("_id".to_string(), json!("c-1"))]
    );
}

#[test]
fn the_old_key_of_a_moved_row_maps_to_its_documents_id() {
    let m = ProviderMapping::new(retail(), "hq", ProviderKind::Postgres);
    let mut r = raw(
        "categories",
        RawOp::Insert,
        json!({"id": "c-2", "name": "Tools"}),
    );
    r.unchanged = vec!["name".into()];
    r.unchanged_from = Some(json!({"id": "c-1"}).as_object().unwrap().clone());
    let c = change(&m, r);
    assert_eq!((c.id, c.unchanged_from), (json!("c-2"), Some(json!("c-1"))));
    let mut r = raw(
        "store_order_numbers",
        RawOp::Insert,
        json!({"store_id": 3, "order_no": 18}),
    );
    r.unchanged_from = Some(
        json!({"order_no": 17, "store_id": 3})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(
        serde_json::to_string(&change(&m, r).unchanged_from).unwrap(),
        r#"{"store_id":3,"order_no":17}"#
    );
}

#[test]
fn composite_ids_follow_the_file_order() {
    let m = ProviderMapping::new(retail(), "hq", ProviderKind::Postgres);
    let c = change(
        &m,
        raw(
            "store_order_numbers",
            RawOp::Insert,
            json!({"order_no": 17, "store_id": 3, "issued_at": "2024-01-02 03:04:05+00"}),
        ),
    );
    assert_eq!(
        serde_json::to_string(&c.id).unwrap(),
        r#"{"store_id":3,"order_no":17}"#
    );
    assert_eq!(c.fields["issued_at"], json!("2024-01-02T03:04:05.000Z"));
    let out = m
        .outbound(&SinkWrite {
            collection: c.collection.clone(),
            id: c.id.clone(),
            doc: None,
        })
        .unwrap();
    assert_eq!(
        out.key,
        vec![
            ("store_id".to_string(), json!(3)),
            ("order_no".to_string(), json!(17))
        ]
    );
    assert!(out.row.is_none());
}

#[test]
fn bad_records_are_rejected_with_collection_field_and_reason() {
    let m = ProviderMapping::new(retail(), "hq", ProviderKind::Postgres);
    let cases = [
        (
            raw("stores", RawOp::Insert, json!({"name": "x"})),
            "store_id",
            "missing",
        ),
        (
            raw("stores", RawOp::Insert, json!({"store_id": null})),
            "store_id",
            "null",
        ),
        (
            raw("stores", RawOp::Insert, json!({"store_id": {"a": 1}})),
            "store_id",
            "object",
        ),
        (
            raw(
                "orders",
                RawOp::Insert,
                json!({"order_id": 1, "order_date": "soon"}),
            ),
            "order_date",
            "ISO",
        ),
        (
            raw("store_order_numbers", RawOp::Insert, json!({"store_id": 1})),
            "order_no",
            "missing",
        ),
        (
            raw("categories", RawOp::Insert, json!({"name": "x"})),
            "_id",
            "no `id`",
        ),
    ];
    for (r, field, reason) in cases {
        match m.inbound(&r) {
            Inbound::Rejected(rej) => {
                assert_eq!(rej.collection, r.table);
                assert_eq!(rej.field.as_deref(), Some(field), "{rej}");
                assert!(rej.reason.contains(reason), "{rej}");
            }
            other => panic!("{r:?} gave {other:?}"),
        }
    }
}

#[test]
fn filters_skip_and_unsynced_tables_are_ignored() {
    let m = ProviderMapping::new(retail(), "hq", ProviderKind::Postgres);
    let r = raw(
        "customers",
        RawOp::Update,
        json!({"customer_id": 1, "deleted": true}),
    );
    assert_eq!(
        m.inbound(&r),
        Inbound::Filtered {
            collection: "customers".into(),
            id: Some(json!(1))
        }
    );
    let r = raw(
        "customers",
        RawOp::Update,
        json!({"customer_id": 1, "deleted": false}),
    );
    assert!(matches!(m.inbound(&r), Inbound::Change(_)));
    // deletes are never filtered: the key image need not hold the filter fields
    let r = raw("customers", RawOp::Delete, json!({"customer_id": 1}));
    assert!(matches!(m.inbound(&r), Inbound::Change(c) if c.op == DocOp::Delete));
    let r = raw("product_embeddings", RawOp::Insert, json!({"id": 1}));
    assert_eq!(m.inbound(&r), Inbound::NotSynced);
    let r = raw("audit_log", RawOp::Insert, json!({"id": 1}));
    assert_eq!(m.inbound(&r), Inbound::NotSynced);
}

#[test]
fn provider_blocks_rename_tables_and_columns() {
    let yaml = "collections:\n  customers:\n    id: {mode: single_field, field: customer_id}\n    providers:\n      shop: {table: clients, schema: crm, columns: {customer_id: client_no}}\n      mongodb: {table: people}\n";
    let set = Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap());
    let shop = ProviderMapping::new(set.clone(), "shop", ProviderKind::Postgres);
    let c = change(
        &shop,
        raw("clients", RawOp::Insert, json!({"client_no": 5, "n": 1})),
    );
    assert_eq!(c.id, json!(5));
    assert_eq!(c.fields.get("customer_id"), Some(&json!(5)));
    let out = shop
        .outbound(&SinkWrite {
            collection: "customers".into(),
            id: json!(5),
            doc: Some(c.fields),
        })
        .unwrap();
    assert_eq!(
        (out.table.as_str(), out.schema.as_deref()),
        ("clients", Some("crm"))
    );
    assert_eq!(out.key, vec![("client_no".to_string(), json!(5))]);
    assert_eq!(out.row.unwrap().get("client_no"), Some(&json!(5)));
    // the kind block applies to every instance of the kind without its own block
    let m = ProviderMapping::new(set.clone(), "mongo-eu", ProviderKind::MongoDb);
    assert_eq!(m.tables().next().unwrap().1, "people");
    let hq = ProviderMapping::new(set, "hq", ProviderKind::Postgres);
    assert_eq!(hq.tables().next().unwrap().1, "customers");
}

fn errors(yaml: &str) -> Vec<String> {
    match MappingSet::from_str("bad.yaml", yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(es) => es.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_typo_a_duplicate_collection_and_a_missing_field_are_three_located_errors() {
    let yaml = "\
collections:
  stores:
    id: {mode: single_field, field: store_id}
    filtr: {deleted: false}
  customers:
    id:
      mode: single_field
  stores:
    id: {mode: match_ids}
";
    let errs = errors(yaml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(
        errs[0],
        "bad.yaml:4:5: unknown key `filtr` in collection `stores`; did you mean `filter`?"
    );
    assert!(errs[1].starts_with("bad.yaml:7:13: "), "{}", errs[1]);
    assert!(errs[1].contains("single_field needs `field"), "{}", errs[1]);
    assert!(
        errs[2].starts_with("bad.yaml:8:3: duplicate collection `stores`"),
        "{}",
        errs[2]
    );
}

#[test]
fn every_kind_of_mistake_is_reported() {
    let cases: &[(&str, &str)] = &[
        ("collections:\n  a:\n    id: {mode: single_feild, field: x}\n", "did you mean `single_field`"),
        ("collections:\n  a:\n    sync: true\n", "missing `id`"),
        ("collections:\n  a:\n    id: {mode: single_field, field: q}\n    counters: [q]\n", "counter `q` is also an id field"),
        ("collections:\n  a:\n    id: {mode: match_ids}\n    transforms: [{uppercase: x}]\n", "unknown transform `uppercase`"),
        ("collections:\n  a:\n    id: {mode: match_ids}\n    sync: maybe\n", "`sync` must be true or false"),
        ("collections:\n  a:\n    id: {mode: multiple_fields, fields: [x, x]}\n", "listed twice"),
        ("collections:\n  a:\n    id: {mode: match_ids, field: x}\n", "not used with mode match_ids"),
        ("collections:\n  a:\n    id: {mode: single_field, field: x}\n    transforms: [{drop: x}]\n", "dropped by a transform"),
        ("collections:\n  a:\n    id: {mode: match_ids}\n  b:\n    id: {mode: match_ids}\n    providers: {pg: {table: a}}\n", "already reads"),
        ("colections: {}\n", "did you mean `collections`"),
        ("collections:\n  a: [1\n", "YAML syntax error"),
        ("collections:\n  a:\n    id: {mode: match_ids}\n    id: {mode: match_ids}\n", "duplicate key `id`"),
        ("", "empty"),
    ];
    for (yaml, want) in cases {
        let errs = errors(yaml);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{yaml:?}: wanted {want:?} in {errs:#?}"
        );
        assert!(
            errs.iter().all(|e| e.starts_with("bad.yaml:")
                && e.split(':').nth(1).unwrap().parse::<usize>().is_ok()),
            "{errs:?}"
        );
    }
}

#[test]
fn duplicate_collections_across_files_are_reported() {
    let dir = std::env::temp_dir().join(format!("mapping-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        "collections:\n  x: {id: {mode: match_ids}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yml"),
        "collections:\n  y: {id: {mode: match_ids}}\n  x: {id: {mode: match_ids}}\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
    let errs = MappingSet::load(std::slice::from_ref(&dir)).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0]
        .to_string()
        .contains("b.yml:3:3: duplicate collection `x` (first defined at"));
}

#[test]
fn truncate_propagates_only_where_the_mapping_opts_in() {
    let yaml = "collections:\n  a: {id: {mode: match_ids}, propagate_truncate: true}\n  b: {id: {mode: match_ids}}\n";
    let m = ProviderMapping::new(
        Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap()),
        "hq",
        ProviderKind::Postgres,
    );
    let t = |table: &str| raw(table, RawOp::Truncate, json!({}));
    assert!(
        matches!(m.inbound(&t("a")), Inbound::Change(c) if c.op == DocOp::Truncate && c.collection == "a")
    );
    assert_eq!(
        m.inbound(&t("b")),
        Inbound::TruncateSkipped {
            collection: "b".into(),
            table: "b".into()
        }
    );
}

#[test]
fn two_collections_on_one_table_of_an_instance_are_refused() {
    // One names the table for the kind, the other for the instance: each
    // alone is fine, but `shop` (a postgres) would read both from `x`.
    let yaml = "collections:\n  a:\n    id: {mode: match_ids}\n    providers: {postgres: {table: x}}\n  b:\n    id: {mode: match_ids}\n    providers: {shop: {table: x}}\n";
    let set = Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap());
    let shop = ProviderMapping::new(set.clone(), "shop", ProviderKind::Postgres);
    let err = shop.check().unwrap_err();
    assert!(err.contains("`a` and `b` both map to table `x`"), "{err}");
    let hq = ProviderMapping::new(set, "hq", ProviderKind::Postgres);
    assert_eq!(hq.check(), Ok(()));
}

#[test]
fn an_unchanged_column_is_named_as_its_value_would_be() {
    // `description` is renamed to `details`; `secret` is dropped.
    let yaml = "collections:\n  products:\n    id: {mode: single_field, field: product_id}\n    transforms:\n      - rename: {from: description, to: details}\n      - drop: [secret]\n";
    let set = Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap());
    let m = ProviderMapping::new(set, "hq", ProviderKind::Postgres);
    let mut r = raw(
        "products",
        RawOp::Update,
        json!({"product_id": 1, "name": "x"}),
    );
    r.unchanged = vec!["description".into(), "secret".into()];
    match m.inbound(&r) {
        Inbound::Change(c) => assert_eq!(c.unchanged, vec!["details".to_string()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn columns_that_would_land_in_one_field_are_refused() {
    // `description` is renamed to `details`, a column the table has too.
    let yaml = "collections:\n  products:\n    id: {mode: single_field, field: product_id}\n    transforms:\n      - rename: {from: description, to: details}\n      - drop: [secret]\n    providers:\n      lite: {columns: {name: title}}\n";
    let set = Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap());
    let m = ProviderMapping::new(set.clone(), "hq", ProviderKind::Postgres);
    let err = m
        .check_columns("products", ["product_id", "description", "details"])
        .unwrap_err();
    assert!(
        err.contains("columns `description` and `details`") && err.contains("field `details`"),
        "{err}"
    );
    // Without the clash, or with the clashing column dropped, it is fine.
    assert_eq!(
        m.check_columns("products", ["product_id", "description", "secret"]),
        Ok(())
    );
    // A provider's column renamed onto a field another column has.
    let lite = ProviderMapping::new(set, "lite", ProviderKind::Odbc);
    let err = lite
        .check_columns("products", ["product_id", "title", "name"])
        .unwrap_err();
    assert!(err.contains("columns `title` and `name`"), "{err}");
    assert_eq!(
        lite.check_columns("products", ["product_id", "title"]),
        Ok(())
    );
}

#[test]
fn a_field_whose_column_holds_another_field_is_not_written_there() {
    // shop's `name` column holds the document's city.
    let yaml = "collections:\n  stores:\n    id: {mode: single_field, field: store_id}\n    providers:\n      shop: {columns: {city: name}}\n";
    let set = Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap());
    let shop = ProviderMapping::new(set, "shop", ProviderKind::Postgres);
    for doc in [
        json!({"store_id": 1, "name": "Main St", "city": "Oslo"}),
        json!({"store_id": 1, "city": "Oslo", "name": "Main St"}),
    ] {
        let out = shop
            .outbound(&SinkWrite {
                collection: "stores".into(),
                id: json!(1),
                doc: Some(doc.as_object().unwrap().clone()),
            })
            .unwrap();
        let row = out.row.unwrap();
        assert_eq!(row.get("name"), Some(&json!("Oslo")), "{row:?}");
        assert_eq!(row.len(), 2, "{row:?}");
    }
}

#[test]
fn an_id_field_renamed_from_a_column_is_written_back_by_that_column() {
    // The table's key column `oid` becomes the document's id field `order_id`.
    let yaml = "collections:\n  orders:\n    id: {mode: single_field, field: order_id}\n    transforms:\n      - rename: {from: oid, to: order_id}\n";
    let set = Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap());
    let hq = ProviderMapping::new(set, "hq", ProviderKind::Postgres);
    let c = change(
        &hq,
        raw("orders", RawOp::Insert, json!({"oid": 7, "total": 3})),
    );
    assert_eq!(c.id, json!(7));
    assert_eq!(hq.key_columns("orders"), Some(vec!["oid".to_string()]));
    let out = hq
        .outbound(&SinkWrite {
            collection: "orders".into(),
            id: c.id.clone(),
            doc: Some(c.fields.clone()),
        })
        .unwrap();
    assert_eq!(out.key, vec![("oid".to_string(), json!(7))]);
    let row = out.row.unwrap();
    assert_eq!(row.get("oid"), Some(&json!(7)), "{row:?}");
    assert!(!row.contains_key("order_id"), "{row:?}");
}

#[test]
fn an_id_field_renamed_away_is_refused() {
    let yaml = "collections:\n  orders:\n    id: {mode: multiple_fields, fields: [order_id, line]}\n    transforms:\n      - rename: {from: line, to: line_no}\n";
    let err = format!("{:?}", MappingSet::from_str("t.yaml", yaml).unwrap_err());
    assert!(
        err.contains("id field `line` is renamed to `line_no`"),
        "{err}"
    );
}

#[test]
fn two_fields_on_one_column_are_refused() {
    let yaml = "collections:\n  customers:\n    id: {mode: single_field, field: customer_id}\n    providers:\n      shop: {columns: {customer_id: id, legacy_id: id}}\n";
    let err = format!("{:?}", MappingSet::from_str("t.yaml", yaml).unwrap_err());
    assert!(
        err.contains("fields `customer_id` and `legacy_id` both map to column `id`"),
        "{err}"
    );
    // match_ids reads `_id` from the provider's `id` column already.
    let yaml = "collections:\n  customers:\n    id: {mode: match_ids}\n    providers:\n      shop: {columns: {code: id}}\n";
    let set = Arc::new(MappingSet::from_str("t.yaml", yaml).unwrap());
    let shop = ProviderMapping::new(set, "shop", ProviderKind::Postgres);
    let err = shop.check().unwrap_err();
    assert!(
        err.contains("fields `_id` and `code` both map to column `id`"),
        "{err}"
    );
}
