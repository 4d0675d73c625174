//! How a sink batch is split into statements, for every SQL provider.
//!
//! Rows are grouped by table and operation; upserts further by their set of
//! columns (those the table has), so one statement covers rows of one shape
//! and a document that lacks a column never overwrites it with NULL. Groups
//! come out in a fixed order so a batch always runs its statements the
//! same way: deletes from tables the batch also upserts into, then the
//! upserts (by table and columns), then the other deletes; within each,
//! tables by their foreign keys ([`TableOrder`]: upserts parents first,
//! deletes children first), then by name. A row moved to
//! a new document id (an update of its id columns) is a delete of the old
//! document and an upsert of the new one in the same table, and the upsert
//! would collide with the old row on every other unique key (the primary
//! key, when the id is not the primary key); a parent deleted after its
//! children moved elsewhere must go after those upserts (foreign keys).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::mapping::OutboundRow;
use crate::table_order::TableOrder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    /// Insert or update these columns (sorted; key columns included).
    Upsert { columns: Vec<String> },
    /// Delete by key.
    Delete,
}

/// Batch rows that one statement writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroup {
    pub table: String,
    pub op: GroupOp,
    /// The key columns, in id order.
    pub key: Vec<String>,
    /// Indexes into the batch.
    pub rows: Vec<usize>,
}

/// Groups a batch; `has_column(row, column)` says whether the row's table
/// has the column (an error for a table the sink does not know).
pub fn group_rows(
    rows: &[OutboundRow],
    mut has_column: impl FnMut(&OutboundRow, &str) -> Result<bool>,
    order: &TableOrder,
) -> Result<Vec<RowGroup>> {
    let mut upserts: BTreeMap<(String, Vec<String>), Vec<usize>> = BTreeMap::new();
    let mut deletes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        match &row.row {
            Some(fields) => {
                let mut columns = Vec::with_capacity(fields.len());
                for c in fields.keys() {
                    if has_column(row, c)? {
                        columns.push(c.clone());
                    }
                }
                columns.sort();
                upserts
                    .entry((row.table.clone(), columns))
                    .or_default()
                    .push(i);
            }
            None => {
                has_column(row, "")?;
                deletes.entry(row.table.clone()).or_default().push(i)
            }
        }
    }
    let key = |i: usize| rows[i].key.iter().map(|(k, _)| k.clone()).collect();
    let delete = |(table, idx): (String, Vec<usize>)| RowGroup {
        table,
        op: GroupOp::Delete,
        key: key(idx[0]),
        rows: idx,
    };
    // Deletes go first in the tables the batch also upserts into, and in
    // every table ranked below the highest of those (children, which must
    // lose their rows before the parent does); the rest go last.
    let upserted = |table: &str| upserts.keys().any(|(t, _)| t == table);
    let early_from = deletes
        .keys()
        .filter(|t| upserted(t))
        .map(|t| order.rank(t))
        .min();
    let (mut first, mut last): (Vec<_>, Vec<_>) = deletes.into_iter().partition(|(table, _)| {
        upserted(table) || early_from.is_some_and(|r| order.rank(table) > r)
    });
    // Sorts are stable: tables of one rank stay in name order.
    let children_first = |(table, _): &(String, Vec<usize>)| std::cmp::Reverse(order.rank(table));
    first.sort_by_key(children_first);
    last.sort_by_key(children_first);
    let mut upserts: Vec<_> = upserts.into_iter().collect();
    upserts.sort_by_key(|((table, _), _)| order.rank(table));
    let mut out: Vec<RowGroup> = first.into_iter().map(delete).collect();
    out.extend(upserts.into_iter().map(|((table, columns), idx)| RowGroup {
        table,
        op: GroupOp::Upsert { columns },
        key: key(idx[0]),
        rows: idx,
    }));
    out.extend(last.into_iter().map(delete));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(table: &str, id: i64, fields: Option<serde_json::Value>) -> OutboundRow {
        OutboundRow {
            collection: table.into(),
            table: table.into(),
            schema: None,
            key: vec![("id".into(), json!(id))],
            row: fields.map(|f| f.as_object().unwrap().clone()),
        }
    }

    #[test]
    fn rows_group_by_table_shape_and_operation() {
        let rows = [
            row("t", 1, Some(json!({"id": 1, "a": 1, "ghost": 0}))),
            row("t", 2, None),
            row("t", 3, Some(json!({"a": 2, "id": 3}))),
            row("t", 4, Some(json!({"id": 4}))),
            row("u", 5, None),
        ];
        let groups = group_rows(&rows, |_, c| Ok(c != "ghost"), &TableOrder::default()).unwrap();
        let got: Vec<(&str, GroupOp, Vec<usize>)> = groups
            .iter()
            .map(|g| (g.table.as_str(), g.op.clone(), g.rows.clone()))
            .collect();
        let upsert = |c: &[&str]| GroupOp::Upsert {
            columns: c.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            got,
            vec![
                ("t", GroupOp::Delete, vec![1]),
                ("t", upsert(&["a", "id"]), vec![0, 2]),
                ("t", upsert(&["id"]), vec![3]),
                ("u", GroupOp::Delete, vec![4]),
            ]
        );
        assert!(groups.iter().all(|g| g.key == ["id"]));
    }

    #[test]
    fn parents_are_upserted_first_and_deleted_last() {
        let rows = [
            row("a_child", 1, Some(json!({"id": 1}))),
            row("z_parent", 2, Some(json!({"id": 2}))),
            row("a_child", 3, None),
            row("z_parent", 4, None),
            row("m_parent", 5, None),
            row("other", 6, Some(json!({"id": 6}))),
            row("c_grandchild", 7, None),
        ];
        let order = TableOrder::from_foreign_keys([
            ("a_child", "z_parent"),
            ("a_child", "m_parent"),
            ("c_grandchild", "a_child"),
        ]);
        let groups = group_rows(&rows, |_, _| Ok(true), &order).unwrap();
        let got: Vec<(&str, bool)> = groups
            .iter()
            .map(|g| (g.table.as_str(), g.op == GroupOp::Delete))
            .collect();
        assert_eq!(
            got,
            [
                // Deletes of tables also upserted into (rows moved to a new
                // id), and of their children's tables, children first.
                ("c_grandchild", true),
                ("a_child", true),
                ("z_parent", true),
                // Upserts, parents first.
                ("other", false),
                ("z_parent", false),
                ("a_child", false),
                // The other deletes.
                ("m_parent", true),
            ]
        );
    }
}
