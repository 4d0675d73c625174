//! `connector setup` for an ODBC provider: the change journal and the row
//! triggers that fill it, for every mapped table.
//!
//! Idempotent: the journal is created only when missing (found through the
//! dialect's catalog query); triggers are re-created, so a table that gained
//! a column is journaled whole again. Every statement is printed; with
//! `--dry-run` nothing is executed (ops review the DDL before it touches
//! DB2).

use odbc_api::Connection;

use connector_core::{ProviderMapping, Result, Stage};

use std::collections::BTreeSet;

use crate::catalog::{integer, mapped_tables, query_text, query_value, table_info, TableInfo};
use crate::conn::classify;
use crate::dialect::{Dialect, TriggerSpec};
use crate::fk_actions;
use crate::options::OdbcOptions;

/// The DDL for the mapped tables: (statement, already in place?).
pub fn plan(
    c: &Connection<'_>,
    d: &dyn Dialect,
    mapping: &ProviderMapping,
    o: &OdbcOptions,
) -> Result<Vec<String>> {
    let schema = match (&o.schema, d.current_schema_query()) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(sql)) => query_value(c, sql, &[], Stage::Setup, "reading the current schema")?,
        (None, None) => None,
    };
    let journal = d.qualified(schema.as_deref(), &o.journal);
    let mut out = Vec::new();
    let mut fk_triggers = Vec::new();
    if table_info(c, d, schema.as_deref(), &o.journal)?.is_some() {
        out.push(format!("-- the journal {journal} exists"));
        out.extend(d.upgrade_journal(&journal));
    } else {
        out.extend(d.create_journal(&journal));
    }
    let tables = mapped_tables(c, d, mapping, o)?;
    if !d.fk_actions_fire_triggers() {
        let default = match &schema {
            Some(s) => s.clone(),
            None => fk_actions::current_database(c)?,
        };
        let schema_of = |t: &TableInfo| t.schema.clone().unwrap_or_else(|| default.clone());
        let schemas: BTreeSet<String> = tables.iter().map(|(_, t)| schema_of(t)).collect();
        for s in &schemas {
            let infos: Vec<TableInfo> = tables
                .iter()
                .map(|(_, t)| t.clone())
                .filter(|t| schema_of(t) == *s)
                .collect();
            let keys = fk_actions::read(c, s)?;
            let existing = fk_actions::existing_triggers(c, s, &o.journal)?;
            fk_triggers.extend(fk_actions::plan(
                d, s, // The row triggers' journal, wherever the table is.
                &journal, &o.journal, &keys, &infos, &existing,
            ));
        }
    }
    for (collection, info) in tables {
        let key = mapping.key_columns(&collection).unwrap_or_default();
        if let Some(check) = d.key_check(&info, &key) {
            let clashes = match &check.conflicts {
                Some((sql, params)) => {
                    let ctx = format!("checking the keys of {}", info.qualified(d));
                    query_value(c, sql, params, Stage::Setup, &ctx)?
                        .and_then(|n| integer(&n))
                        .unwrap_or(0)
                }
                None => 0,
            };
            match (check.create, clashes) {
                (Some(create), 0) => out.push(create),
                (Some(_), n) => out.push(format!(
                    "-- not made: the case-blind key index of {}: {n} id(s) are there in two cases \
                     (the same UUID upper and lower case); keep one row of each and run setup again",
                    info.qualified(d)
                )),
                (None, _) => {}
            }
        }
        if let Some((sql, params)) = d.unjournaled_replace_query(&info, &key) {
            let ctx = format!("reading the unique indexes of {}", info.qualified(d));
            for row in query_text(c, &sql, &params, Stage::Setup, &ctx)? {
                let index = row.into_iter().next().flatten().unwrap_or_default();
                out.push(format!(
                    "-- note: {} has the unique index {} besides its id: a row that INSERT OR REPLACE, \
                     REPLACE or UPDATE OR REPLACE deletes for clashing on it is journaled only where the \
                     application's connection sets PRAGMA recursive_triggers = ON (else {} fires no delete \
                     trigger for it, and the row stays everywhere else)",
                    info.qualified(d),
                    index.trim(),
                    d.name()
                ));
            }
        }
        if let Some((sql, params)) = d.uncarried_columns_query(info.schema.as_deref(), &info.name) {
            let ctx = format!("reading the columns of {}", info.qualified(d));
            for row in query_text(c, &sql, &params, Stage::Setup, &ctx)? {
                let mut cells = row.into_iter().map(|v| v.unwrap_or_default());
                let (column, ty) = (
                    cells.next().unwrap_or_default(),
                    cells.next().unwrap_or_default(),
                );
                out.push(format!(
                    "-- not synced: column {} of {} ({}): {} cannot carry its type into the journal",
                    column.trim(),
                    info.qualified(d),
                    ty.trim(),
                    d.name()
                ));
            }
        }
        let name = format!("{}_{}", o.journal, info.name);
        out.extend(d.create_triggers(&TriggerSpec {
            table: &info,
            journal: &journal,
            journal_name: &o.journal,
            name: &name,
        }));
    }
    // After the row triggers (the journal exists; an update's own row comes
    // before the rows its cascade changed).
    out.extend(fk_triggers);
    Ok(out)
}

/// Plans and (unless `dry_run`) runs the DDL; returns the lines to print.
pub fn run(
    c: &Connection<'_>,
    d: &dyn Dialect,
    mapping: &ProviderMapping,
    o: &OdbcOptions,
    dry_run: bool,
) -> Result<Vec<String>> {
    let mut lines = vec![format!(
        "-- needs: CREATE TABLE and CREATE TRIGGER{} in the schema, SELECT and DELETE on the journal",
        d.setup_privileges()
    )];
    let statements = plan(c, d, mapping, o)?;
    if !dry_run {
        // One transaction where the database has transactional DDL
        // (SQLite, PostgreSQL, DB2): a trigger is dropped and created again
        // with no moment between in which a write goes unjournaled, and a
        // failed setup changes nothing. (MariaDB commits each DDL itself.)
        let tx = |e: odbc_api::Error| classify(&e, Stage::Setup, "the setup transaction");
        c.set_autocommit(false).map_err(tx)?;
        let ran = statements
            .iter()
            .filter(|sql| !sql.starts_with("--"))
            .try_for_each(|sql| {
                c.execute(sql, (), None)
                    .map(|_| ())
                    .map_err(|e| classify(&e, Stage::Setup, &format!("running `{sql}`")))
            });
        let ended = ran.and_then(|()| c.commit().map_err(tx));
        if ended.is_err() {
            let _ = c.rollback();
        }
        // The setup's own error first, whatever turning autocommit back on says.
        let restored = c.set_autocommit(true).map_err(tx);
        ended?;
        restored?;
    }
    for sql in statements {
        lines.push(if sql.starts_with("--") {
            sql
        } else {
            format!("{sql};")
        });
    }
    if dry_run {
        lines.push("-- dry run: nothing was executed".into());
    }
    Ok(lines)
}
