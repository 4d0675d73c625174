//! An UPDATE that changes a row's primary key, as the store sees it.
//!
//! A document's id comes from the row's key, so a row moved to a new key is
//! a new document: the change becomes the delete of the old document and
//! the insert of the new one, both in the same source transaction (so the
//! store applies them together). Without the split the old document would
//! live on in the store and in every other provider.
//!
//! Values the feed left out of the new image as unchanged (PostgreSQL's
//! TOAST) are taken from the old image when it is complete; otherwise the
//! insert names the old key (`RawChange::unchanged_from`) and the store takes
//! them from the old document, whose registers keep their last values under
//! the delete's tombstone.

use crate::change::{Fields, RawChange, RawOp};

/// `update` (an [`RawOp::Update`] whose `row` is the new image) as one
/// change, or as a delete of the old row and an insert when the `key`
/// columns differ between the old and the new image. The old image is
/// `key_image` where the feed sent only the key's columns, else the
/// update's complete `before` (without either, nothing can be told).
pub fn split_key_change(
    mut update: RawChange,
    key: &[String],
    key_image: Option<&Fields>,
) -> Vec<RawChange> {
    let Some(old) = key_image.or(update.before.as_ref()) else {
        return vec![update];
    };
    // A key value stored out of line and left alone comes as unchanged in
    // the new image (with the old one key-only): the same key. Taken for a
    // changed one, the update became a delete everywhere and an insert
    // with no id.
    let old = old.clone();
    for k in key {
        if let (true, Some(v)) = (update.unchanged.contains(k), old.get(k)) {
            update.row.insert(k.clone(), v.clone());
            update.unchanged.retain(|c| c != k);
        }
    }
    let old = &old;
    // A NULL in the old id: the old row had no document (or a key-only
    // image left the id columns out); nothing to delete.
    let old_id_null = key.iter().any(|k| old.get(k).is_none_or(|v| v.is_null()));
    if key.is_empty() || old_id_null || key.iter().all(|k| old.get(k) == update.row.get(k)) {
        return vec![update];
    }
    let old = old.clone();
    let old_complete = key_image.is_none();
    let delete = RawChange {
        op: RawOp::Delete,
        row: old.clone(),
        before: None,
        unchanged: Vec::new(),
        unchanged_from: None,
        ..update.clone()
    };
    let mut insert = update;
    insert.op = RawOp::Insert;
    insert.before = None;
    let mut unchanged = std::mem::take(&mut insert.unchanged);
    if old_complete {
        unchanged.retain(|c| match old.get(c) {
            Some(v) => {
                insert.row.insert(c.clone(), v.clone());
                false
            }
            None => true,
        });
    }
    if !unchanged.is_empty() {
        insert.unchanged_from = Some(
            key.iter()
                .filter_map(|k| Some((k.clone(), old.get(k)?.clone())))
                .collect(),
        );
    }
    insert.unchanged = unchanged;
    vec![delete, insert]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: serde_json::Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    fn update(row: serde_json::Value, unchanged: &[&str]) -> RawChange {
        RawChange {
            table: "stores".into(),
            schema: None,
            op: RawOp::Update,
            row: fields(row),
            before: None,
            commit_ts_ms: Some(7),
            unchanged: unchanged.iter().map(|c| c.to_string()).collect(),
            unchanged_from: None,
            own_write: false,
            txn: Some(3),
        }
    }

    #[test]
    fn an_update_that_keeps_the_key_stays_one_change() {
        let mut u = update(json!({"id": 1, "city": "Oslo"}), &[]);
        u.before = Some(fields(json!({"id": 1, "city": "Bergen"})));
        assert_eq!(split_key_change(u.clone(), &["id".into()], None), vec![u]);
        let u = update(json!({"id": 1, "city": "Oslo"}), &[]);
        assert_eq!(split_key_change(u.clone(), &["id".into()], None), vec![u]);
    }

    #[test]
    fn a_key_stored_out_of_line_and_left_alone_is_the_same_key() {
        // PostgreSQL: the long key comes as unchanged TOAST in the new row,
        // the old image key-only.
        let long = "k".repeat(3000);
        let u = update(json!({"city": "Oslo"}), &["id"]);
        let key_image = fields(json!({"id": long}));
        let out = split_key_change(u, &["id".into()], Some(&key_image));
        assert_eq!(out.len(), 1, "one update, not a delete and an insert");
        assert_eq!(out[0].op, RawOp::Update);
        assert_eq!(out[0].row["id"], json!(long));
        assert!(out[0].unchanged.is_empty());
    }

    #[test]
    fn a_new_key_is_a_delete_and_an_insert_in_the_same_transaction() {
        let old = fields(json!({"id": 1, "name": "a", "city": "Bergen"}));
        let mut u = update(json!({"id": 2, "name": "a"}), &["city"]);
        u.before = Some(old.clone());
        let out = split_key_change(u, &["id".into()], None);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].op, &out[0].row), (RawOp::Delete, &old));
        assert_eq!(out[1].op, RawOp::Insert);
        assert_eq!(
            out[1].row,
            fields(json!({"id": 2, "name": "a", "city": "Bergen"}))
        );
        assert!(out[1].unchanged.is_empty() && out[1].unchanged_from.is_none());
        assert!(out
            .iter()
            .all(|c| c.txn == Some(3) && c.commit_ts_ms == Some(7)));
    }

    #[test]
    fn an_old_id_that_is_null_deletes_nothing() {
        // A key-only image of another key (the id is not the primary key),
        // or an id column that was NULL: no document to delete.
        let old = fields(json!({"id": 7, "serial_no": null}));
        let u = update(json!({"id": 7, "serial_no": "d-2"}), &[]);
        assert_eq!(
            split_key_change(u.clone(), &["serial_no".into()], Some(&old)),
            vec![u]
        );
    }

    #[test]
    fn without_a_complete_old_image_the_insert_names_the_old_key() {
        let old = fields(json!({"id": 1, "name": null, "city": null}));
        let u = update(json!({"id": 2, "name": "a"}), &["city"]);
        let out = split_key_change(u, &["id".into()], Some(&old));
        assert_eq!(out[1].unchanged, vec!["city".to_string()]);
        assert_eq!(out[1].unchanged_from, Some(fields(json!({"id": 1}))));
        assert!(!out[1].row.contains_key("city"));
    }
}
