//! The order a sink writes its tables in: parents before children.
//!
//! A target with foreign keys rejects a child row written before its parent
//! (and a parent deleted before its children). A sink reads the foreign keys
//! among its tables from the catalog; each table's rank is the length of
//! the longest chain of parents above it (0: no parent among the mapped
//! tables). Upserts run by rising rank, deletes by falling rank
//! ([`crate::sink_plan`]). A self-reference is ignored, and a cycle is cut
//! where the walk meets it: no order satisfies a cycle of non-deferrable
//! keys within one statement each; the sink's row-by-row passes
//! ([`crate::row_passes`]) are what writes such rows.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableOrder {
    rank: HashMap<String, usize>,
}

impl TableOrder {
    /// From `(child, parent)` foreign keys between table names.
    pub fn from_foreign_keys<I, S>(keys: I) -> TableOrder
    where
        I: IntoIterator<Item = (S, S)>,
        S: Into<String>,
    {
        let mut parents: HashMap<String, Vec<String>> = HashMap::new();
        for (child, parent) in keys {
            let (child, parent) = (child.into(), parent.into());
            if child != parent {
                parents.entry(child).or_default().push(parent);
            }
        }
        let mut rank = HashMap::new();
        // In name order: where a cycle is cut must not change between runs.
        let mut tables: Vec<String> = parents.keys().cloned().collect();
        tables.sort();
        for t in tables {
            rank_of(&t, &parents, &mut rank, &mut HashSet::new());
        }
        TableOrder { rank }
    }

    /// The table's rank (0 for a table without parents, or unknown).
    pub fn rank(&self, table: &str) -> usize {
        self.rank.get(table).copied().unwrap_or(0)
    }
}

/// Table-level `(child, parent)` keys → the same between the collections
/// mapped onto those tables (`(collection, table)` pairs).
pub fn between_collections<'a>(
    keys: &[(String, String)],
    collections: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    let collections: Vec<(&str, &str)> = collections.into_iter().collect();
    let on = |table: &str| -> Vec<String> {
        collections
            .iter()
            .filter(|(_, t)| *t == table)
            .map(|(c, _)| c.to_string())
            .collect()
    };
    let mut out = Vec::new();
    for (child, parent) in keys {
        for c in on(child) {
            out.extend(on(parent).into_iter().map(|p| (c.clone(), p)));
        }
    }
    out
}

fn rank_of(
    table: &str,
    parents: &HashMap<String, Vec<String>>,
    rank: &mut HashMap<String, usize>,
    walking: &mut HashSet<String>,
) -> usize {
    if let Some(r) = rank.get(table) {
        return *r;
    }
    if !walking.insert(table.to_string()) {
        return 0; // a cycle: cut here
    }
    let r = parents.get(table).map_or(0, |ps| {
        ps.iter()
            .map(|p| 1 + rank_of(p, parents, rank, walking))
            .max()
            .unwrap_or(0)
    });
    walking.remove(table);
    rank.insert(table.to_string(), r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_rank_below_their_children() {
        let order = TableOrder::from_foreign_keys([
            ("order_items", "orders"),
            ("order_items", "products"),
            ("orders", "customers"),
            ("orders", "stores"),
            ("products", "categories"),
            ("customers", "customers"), // referred_by: itself
        ]);
        for (table, rank) in [
            ("customers", 0),
            ("stores", 0),
            ("categories", 0),
            ("unknown", 0),
            ("orders", 1),
            ("products", 1),
            ("order_items", 2),
        ] {
            assert_eq!(order.rank(table), rank, "{table}");
        }
    }

    #[test]
    fn keys_between_tables_become_keys_between_their_collections() {
        let keys = [("order_items".to_string(), "orders".to_string())];
        let pairs = between_collections(
            &keys,
            [
                ("items", "order_items"),
                ("orders", "orders"),
                ("old_orders", "orders"),
            ],
        );
        assert_eq!(
            pairs,
            [
                ("items".to_string(), "orders".to_string()),
                ("items".to_string(), "old_orders".to_string())
            ]
        );
    }

    #[test]
    fn a_cycle_still_gives_every_table_a_rank() {
        let order = TableOrder::from_foreign_keys([("a", "b"), ("b", "a"), ("c", "a")]);
        assert!(order.rank("c") > order.rank("a"));
        assert_ne!(order.rank("a"), order.rank("b"));
    }
}
