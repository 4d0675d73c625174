//! Journaling the rows a foreign key action changes where the database
//! fires no trigger for them (MariaDB/InnoDB: "cascading foreign key
//! actions do not activate triggers"; PostgreSQL, DB2 and SQLite do fire
//! them).
//!
//! Without this, `DELETE FROM orders WHERE order_id = 7` journals the
//! order's delete only: the order lines `ON DELETE CASCADE` removed stay in
//! the store and in every other database. So `setup` adds, on each table a
//! mapped table's key refers to with an action, triggers of its own that
//! journal the referring rows as the action will leave them, in one
//! `INSERT … SELECT` each:
//!
//! * `BEFORE DELETE`: rows `ON DELETE CASCADE` removes (`D`, their image
//!   before), through any depth of cascades (a line's own cascading
//!   children, joined back to the deleted row), the deepest first, so a
//!   target with foreign keys gets children's deletes before their
//!   parents'; rows `ON DELETE SET NULL` changes (`U`, the key columns
//!   null);
//! * `AFTER UPDATE`, when the referenced columns changed: rows `ON UPDATE
//!   CASCADE` changed (`U`, their new image, and the old one with the old
//!   key: a line whose id holds the key moves to its new document);
//! * `BEFORE UPDATE`, likewise: rows `ON UPDATE SET NULL` changes.
//!
//! The statement's own rollback takes these journal rows with it. Not
//! covered: an update cascade that goes on to a second level (the child's
//! referring columns are themselves referred to), and `SET DEFAULT` (InnoDB
//! refuses it). Triggers of a table whose actions are gone are dropped.
//! The statements are MariaDB's (`CREATE OR REPLACE TRIGGER`, `<=>`,
//! `JSON_OBJECT`), the one dialect that needs them.

use std::collections::{BTreeMap, BTreeSet};

use odbc_api::Connection;

use connector_core::{ConnectorError, Result, Stage};

use crate::catalog::{query_text, TableInfo};
use crate::dialect::{literal, Dialect, TriggerSpec};

/// What a foreign key does to the referring rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cascade,
    SetNull,
    /// Nothing to journal (`RESTRICT`, `NO ACTION`, `SET DEFAULT`).
    None,
}

impl Action {
    fn parse(rule: &str) -> Action {
        match rule.trim().to_ascii_uppercase().as_str() {
            "CASCADE" => Action::Cascade,
            "SET NULL" => Action::SetNull,
            _ => Action::None,
        }
    }
}

/// One foreign key: `child.fk` refers to `parent.refs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub parent: String,
    pub child: String,
    pub fk: Vec<String>,
    pub refs: Vec<String>,
    pub on_delete: Action,
    pub on_update: Action,
}

/// The trigger name suffixes this module owns.
const SUFFIXES: [&str; 3] = ["fkdel", "fkupd", "fkupd_before"];

/// The session's default database, the schema of tables named without one.
pub fn current_database(c: &Connection<'_>) -> Result<String> {
    let rows = query_text(
        c,
        "SELECT DATABASE()",
        &[],
        Stage::Setup,
        "reading the current database",
    )?;
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .ok_or_else(|| {
            ConnectorError::permanent(
                Stage::Setup,
                "no database is selected: name one in the connection string (Database=…) or set the provider's schema",
            )
        })
}

/// The foreign keys with an action among the tables of `schema`.
pub fn read(c: &Connection<'_>, schema: &str) -> Result<Vec<ForeignKey>> {
    let rows = query_text(
        c,
        "SELECT rc.constraint_name, rc.referenced_table_name, rc.table_name, rc.delete_rule, rc.update_rule, \
         k.column_name, k.referenced_column_name \
         FROM information_schema.referential_constraints rc \
         JOIN information_schema.key_column_usage k ON k.constraint_schema = rc.constraint_schema \
           AND k.constraint_name = rc.constraint_name AND k.table_name = rc.table_name \
         WHERE rc.constraint_schema = ? AND rc.unique_constraint_schema = rc.constraint_schema \
           AND (rc.delete_rule IN ('CASCADE', 'SET NULL') OR rc.update_rule IN ('CASCADE', 'SET NULL')) \
         ORDER BY rc.table_name, rc.constraint_name, k.ordinal_position",
        &[schema.to_string()],
        Stage::Setup,
        "reading the foreign keys' actions",
    )?;
    let mut keys: BTreeMap<(String, String), ForeignKey> = BTreeMap::new();
    for row in rows {
        let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let key = keys
            .entry((cell(2), cell(0)))
            .or_insert_with(|| ForeignKey {
                parent: cell(1),
                child: cell(2),
                fk: Vec::new(),
                refs: Vec::new(),
                on_delete: Action::parse(&cell(3)),
                on_update: Action::parse(&cell(4)),
            });
        key.fk.push(cell(5));
        key.refs.push(cell(6));
    }
    Ok(keys.into_values().collect())
}

/// The names of this module's triggers for `journal_name` on the tables
/// of `schema`: exactly `{journal_name}_{their table}_{suffix}` (another
/// provider's journal may be named with this one's as a prefix).
pub fn existing_triggers(
    c: &Connection<'_>,
    schema: &str,
    journal_name: &str,
) -> Result<Vec<String>> {
    let rows = query_text(
        c,
        "SELECT trigger_name, event_object_table FROM information_schema.triggers WHERE trigger_schema = ?",
        &[schema.to_string()],
        Stage::Setup,
        "reading the triggers",
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let mut cells = r.into_iter();
            Some((cells.next().flatten()?, cells.next().flatten()?))
        })
        .filter(|(name, table)| {
            SUFFIXES
                .iter()
                .any(|s| *name == trigger_name(journal_name, table, s))
        })
        .map(|(name, _)| name)
        .collect())
}

fn trigger_name(journal_name: &str, table: &str, suffix: &str) -> String {
    format!("{journal_name}_{table}_{suffix}")
}

/// The journal's trigger names and statements for the actions of `keys`
/// that reach a `mapped` table; `existing` triggers not made again are
/// dropped.
pub fn plan(
    d: &dyn Dialect,
    schema: &str,
    journal: &str,
    journal_name: &str,
    keys: &[ForeignKey],
    mapped: &[TableInfo],
    existing: &[String],
) -> Vec<String> {
    let plan = Plan {
        d,
        schema,
        journal,
        keys,
        mapped,
    };
    let parents: BTreeSet<&str> = keys.iter().map(|k| k.parent.as_str()).collect();
    let mut made = BTreeSet::new();
    let mut out = Vec::new();
    for parent in parents {
        let table = d.qualified(Some(schema), parent);
        let mut deletes = Vec::new();
        plan.deletes(
            parent,
            "OLD",
            &mut Vec::new(),
            &mut Vec::new(),
            &mut deletes,
            0,
        );
        if deletes.len() >= MAX_SELECTS {
            out.push(format!(
                "-- note: the cascades of a delete from {table} take more than {MAX_SELECTS} paths \
                 (keys of a table on itself): the rows of the paths past them are not journaled"
            ));
        }
        let triggers = [
            ("fkdel", "BEFORE DELETE", deletes),
            (
                "fkupd",
                "AFTER UPDATE",
                plan.updates(parent, Action::Cascade),
            ),
            (
                "fkupd_before",
                "BEFORE UPDATE",
                plan.updates(parent, Action::SetNull),
            ),
        ];
        for (suffix, event, selects) in triggers {
            if selects.is_empty() {
                continue;
            }
            let name = trigger_name(journal_name, parent, suffix);
            out.push(format!(
                "CREATE OR REPLACE TRIGGER {} {event} ON {table} FOR EACH ROW INSERT INTO {journal} ({}) {}",
                d.qualified(Some(schema), &name),
                TriggerSpec::COLUMNS,
                selects.join(" UNION ALL ")
            ));
            made.insert(name);
        }
    }
    for name in existing.iter().filter(|n| !made.contains(n.as_str())) {
        out.push(format!(
            "DROP TRIGGER IF EXISTS {}",
            d.qualified(Some(schema), name)
        ));
    }
    out
}

struct Plan<'a> {
    d: &'a dyn Dialect,
    schema: &'a str,
    journal: &'a str,
    keys: &'a [ForeignKey],
    mapped: &'a [TableInfo],
}

/// InnoDB's own limit of nested cascades (deeper, it refuses the delete);
/// it also ends a cycle of keys.
const MAX_DEPTH: usize = 15;
/// Selects one trigger holds at most: two keys of a table on itself would
/// otherwise give 2^15 paths. Past it, setup says the trigger is cut.
pub const MAX_SELECTS: usize = 256;

impl Plan<'_> {
    fn mapped(&self, table: &str) -> Option<&TableInfo> {
        self.mapped
            .iter()
            .find(|t| t.name == table && t.schema.as_deref().is_none_or(|s| s == self.schema))
    }

    /// The journal row selects for the rows a delete of `row` (an alias of
    /// `table`, `OLD` at the top) removes or changes through the keys that
    /// refer to `table`, deepest first. `from` and `conds` reach `row`.
    fn deletes(
        &self,
        table: &str,
        row: &str,
        from: &mut Vec<String>,
        conds: &mut Vec<String>,
        out: &mut Vec<String>,
        depth: usize,
    ) {
        if depth >= MAX_DEPTH || out.len() >= MAX_SELECTS {
            return;
        }
        for key in self.keys.iter().filter(|k| k.parent == table) {
            if key.on_delete == Action::None {
                continue;
            }
            let alias = format!("r{}", depth + 1);
            let (fl, cl) = (from.len(), conds.len());
            from.push(format!("{} {alias}", self.child_table(&key.child)));
            conds.extend(
                key.fk.iter().zip(&key.refs).map(|(f, r)| {
                    format!("{alias}.{} = {row}.{}", self.d.quote(f), self.d.quote(r))
                }),
            );
            match key.on_delete {
                Action::Cascade => {
                    self.deletes(&key.child, &alias, from, conds, out, depth + 1);
                    if let Some(child) = self.mapped(&key.child) {
                        let old = self.image(child, &alias, &[]);
                        out.push(self.select(&key.child, "D", "NULL", &old, from, conds));
                    }
                }
                Action::SetNull => {
                    if let Some(child) = self.mapped(&key.child) {
                        let nulls: Vec<(&str, String)> = key
                            .fk
                            .iter()
                            .map(|f| (f.as_str(), "NULL".to_string()))
                            .collect();
                        let new = self.image(child, &alias, &nulls);
                        let old = self.image(child, &alias, &[]);
                        out.push(self.select(&key.child, "U", &new, &old, from, conds));
                    }
                }
                Action::None => {}
            }
            from.truncate(fl);
            conds.truncate(cl);
        }
    }

    /// The selects for the rows an update of `table`'s referenced columns
    /// changes through keys with `action` on update (one level).
    fn updates(&self, table: &str, action: Action) -> Vec<String> {
        let mut out = Vec::new();
        for key in self
            .keys
            .iter()
            .filter(|k| k.parent == table && k.on_update == action)
        {
            let Some(child) = self.mapped(&key.child) else {
                continue;
            };
            let changed = format!(
                "NOT ({})",
                key.refs
                    .iter()
                    .map(|r| format!("OLD.{q} <=> NEW.{q}", q = self.d.quote(r)))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            );
            let pairs = |row: &str| -> Vec<String> {
                key.fk
                    .iter()
                    .zip(&key.refs)
                    .map(|(f, r)| format!("r1.{} = {row}.{}", self.d.quote(f), self.d.quote(r)))
                    .collect()
            };
            let from = vec![format!("{} r1", self.child_table(&key.child))];
            let (new, old, mut conds) = match action {
                // After the update the rows hold the new key already.
                Action::Cascade => {
                    let old_key: Vec<(&str, String)> = key
                        .fk
                        .iter()
                        .zip(&key.refs)
                        .map(|(f, r)| (f.as_str(), format!("OLD.{}", self.d.quote(r))))
                        .collect();
                    (
                        self.image(child, "r1", &[]),
                        self.image(child, "r1", &old_key),
                        pairs("NEW"),
                    )
                }
                _ => {
                    let nulls: Vec<(&str, String)> = key
                        .fk
                        .iter()
                        .map(|f| (f.as_str(), "NULL".to_string()))
                        .collect();
                    (
                        self.image(child, "r1", &nulls),
                        self.image(child, "r1", &[]),
                        pairs("OLD"),
                    )
                }
            };
            conds.push(changed);
            out.push(self.select(&key.child, "U", &new, &old, &from, &conds));
        }
        out
    }

    fn child_table(&self, child: &str) -> String {
        self.d.qualified(Some(self.schema), child)
    }

    /// `table`'s image from `row`, with some columns' values replaced.
    fn image(&self, table: &TableInfo, row: &str, replaced: &[(&str, String)]) -> String {
        let spec = TriggerSpec {
            table,
            journal: self.journal,
            journal_name: "",
            name: "",
        };
        let mut pairs = spec.pair_list(self.d, row, |k, v| format!("{k}, {v}"));
        for (i, c) in table.columns.iter().enumerate() {
            if let Some((_, value)) = replaced.iter().find(|(name, _)| *name == c.name) {
                // Read into the image as the column's own values are
                // (bytes as `\x…`, times in UTC).
                let value = match value.as_str() {
                    "NULL" => value.clone(),
                    expr => self.d.image_value(c, expr.to_string()),
                };
                pairs[i] = format!("{}, {value}", literal(&c.name));
            }
        }
        format!("JSON_OBJECT({})", pairs.join(", "))
    }

    fn select(
        &self,
        table: &str,
        op: &str,
        new: &str,
        old: &str,
        from: &[String],
        conds: &[String],
    ) -> String {
        format!(
            "SELECT {}, '{op}', {new}, {old}, {} FROM {} WHERE {}",
            literal(table),
            self.d.now_ms(),
            from.join(", "),
            conds.join(" AND ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;
    use crate::dialect::MariaDb;

    fn table(name: &str, columns: &[&str]) -> TableInfo {
        TableInfo {
            schema: None,
            name: name.into(),
            columns: columns
                .iter()
                .map(|c| Column {
                    name: c.to_string(),
                    ty: MariaDb.column_type("int"),
                    sql_type: "int".into(),
                })
                .collect(),
            key_checked: false,
        }
    }

    fn key(
        parent: &str,
        child: &str,
        fk: &str,
        on_delete: Action,
        on_update: Action,
    ) -> ForeignKey {
        ForeignKey {
            parent: parent.into(),
            child: child.into(),
            fk: vec![fk.into()],
            refs: vec!["id".into()],
            on_delete,
            on_update,
        }
    }

    #[test]
    fn a_delete_journals_the_deepest_cascade_first_and_stale_triggers_go() {
        let keys = [
            key(
                "orders",
                "lines",
                "order_id",
                Action::Cascade,
                Action::Cascade,
            ),
            // Through a table nobody maps, to one that is.
            key("lines", "parts", "line_id", Action::Cascade, Action::None),
            key("parts", "notes", "part_id", Action::Cascade, Action::None),
            key("orders", "tags", "order_id", Action::SetNull, Action::None),
        ];
        let mapped = [
            table("lines", &["id", "order_id"]),
            table("notes", &["id", "part_id"]),
            table("tags", &["id", "order_id"]),
        ];
        let existing = ["j_orders_fkdel".to_string(), "j_gone_fkdel".to_string()];
        let out = plan(
            &MariaDb,
            "shop",
            "`shop`.`j`",
            "j",
            &keys,
            &mapped,
            &existing,
        );
        let delete = out
            .iter()
            .find(|s| s.contains("`j_orders_fkdel` BEFORE DELETE"))
            .unwrap();
        let (notes, lines, tags) = (
            delete.find("SELECT 'notes', 'D'").unwrap(),
            delete.find("SELECT 'lines', 'D'").unwrap(),
            delete.find("SELECT 'tags', 'U'").unwrap(),
        );
        assert!(notes < lines && lines < tags, "{delete}");
        assert!(
            delete.contains(
                "FROM `shop`.`lines` r1, `shop`.`parts` r2, `shop`.`notes` r3 \
                 WHERE r1.`order_id` = OLD.`id` AND r2.`line_id` = r1.`id` AND r3.`part_id` = r2.`id`"
            ),
            "{delete}"
        );
        assert!(
            delete.contains("JSON_OBJECT('id', r1.`id`, 'order_id', NULL)"),
            "{delete}"
        );
        // Only the lines follow an update of the order's id.
        let update = out
            .iter()
            .find(|s| s.contains("`j_orders_fkupd` AFTER UPDATE"))
            .unwrap();
        assert!(
            update.contains("SELECT 'lines', 'U'") && !update.contains("'tags'"),
            "{update}"
        );
        assert!(update.contains("NOT (OLD.`id` <=> NEW.`id`)"), "{update}");
        assert!(!out.iter().any(|s| s.contains("fkupd_before")), "{out:?}");
        assert_eq!(
            out.iter()
                .filter(|s| s.starts_with("DROP TRIGGER"))
                .collect::<Vec<_>>(),
            vec!["DROP TRIGGER IF EXISTS `shop`.`j_gone_fkdel`"]
        );
    }

    #[test]
    fn a_cycle_of_cascades_ends() {
        let keys = [
            key("a", "b", "a_id", Action::Cascade, Action::None),
            key("b", "a", "b_id", Action::Cascade, Action::None),
        ];
        let mapped = [table("a", &["id", "b_id"]), table("b", &["id", "a_id"])];
        let out = plan(&MariaDb, "s", "`s`.`j`", "j", &keys, &mapped, &[]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|s| s.matches("SELECT").count() == MAX_DEPTH));
    }

    #[test]
    fn two_keys_of_a_table_on_itself_are_cut_and_said() {
        let keys = [
            key("nodes", "nodes", "parent_id", Action::Cascade, Action::None),
            key("nodes", "nodes", "owner_id", Action::Cascade, Action::None),
        ];
        let mapped = [table("nodes", &["id", "parent_id", "owner_id"])];
        let out = plan(&MariaDb, "s", "`s`.`j`", "j", &keys, &mapped, &[]);
        let trigger = out.iter().find(|s| s.contains("fkdel")).unwrap();
        assert!(
            trigger.matches("SELECT").count() <= 2 * MAX_SELECTS,
            "{}",
            trigger.len()
        );
        assert!(
            out.iter()
                .any(|s| s.starts_with("-- note:") && s.contains("`s`.`nodes`")),
            "{out:?}"
        );
    }

    #[test]
    fn an_update_cascade_reads_the_old_key_as_the_column_is_read() {
        let binary = Column {
            name: "order_id".into(),
            ty: MariaDb.column_type("binary(16)"),
            sql_type: "binary(16)".into(),
        };
        let mut lines = table("lines", &["id"]);
        lines.columns.push(binary.clone());
        let keys = [key(
            "orders",
            "lines",
            "order_id",
            Action::None,
            Action::Cascade,
        )];
        let out = plan(&MariaDb, "s", "`s`.`j`", "j", &keys, &[lines], &[]);
        let update = out.iter().find(|s| s.contains("fkupd")).unwrap();
        let old_key = MariaDb.image_value(&binary, "OLD.`id`".into());
        assert_ne!(old_key, "OLD.`id`", "bytes are read as text");
        assert!(
            update.contains(&format!("'order_id', {old_key})")),
            "{update}"
        );
    }
}
