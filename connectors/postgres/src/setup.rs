//! `connector setup` for PostgreSQL: the publication over the mapped tables,
//! `REPLICA IDENTITY FULL` where counters need before images or the
//! document id is not the primary key, and the
//! logical replication slot. Idempotent: it reads the catalog first and
//! only issues what is missing, and says what it did.

use std::collections::BTreeSet;

use connector_core::{ConnectorError, ProviderMapping, Result, Stage};
use tokio_postgres::Client;

use crate::catalog::{require_table, TableInfo};
use crate::conn::{classify, ident, literal};
use crate::options::PgOptions;

pub const PRIVILEGES: &str =
    "-- needs: a role with REPLICATION (or superuser), CREATE on the database \
(for the publication), and ownership of the mapped tables (for REPLICA IDENTITY); \
for the sink to mark its own writes (else echoes are recognised more slowly): \
EXECUTE on pg_replication_origin_create(text), pg_replication_origin_oid(text) \
and pg_replication_origin_session_setup(text)";

/// The mapped tables that exist, with their catalog description.
pub async fn mapped_tables(
    client: &Client,
    mapping: &ProviderMapping,
    o: &PgOptions,
) -> Result<Vec<(String, TableInfo)>> {
    let mut out = Vec::new();
    for (rule, table, schema) in mapping.tables() {
        let schema = schema.unwrap_or(&o.schema);
        let info = require_table(client, schema, table, &rule.name).await?;
        mapping
            .check_columns(&rule.name, info.columns.iter().map(|c| c.name.as_str()))
            .map_err(|e| ConnectorError::permanent(Stage::Setup, e))?;
        out.push((rule.name.clone(), info));
    }
    Ok(out)
}

/// Creates what is missing. With `create_slot: false` the slot is left to
/// the caller (initial sync creates it with an exported snapshot).
pub async fn run(
    client: &Client,
    mapping: &ProviderMapping,
    o: &PgOptions,
    dry_run: bool,
    create_slot: bool,
) -> Result<Vec<String>> {
    let ctx = "setting up logical replication";
    let err = |e: tokio_postgres::Error| classify(&e, Stage::Setup, ctx);
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(err)?
        .get(0);
    if wal_level != "logical" {
        return Err(ConnectorError::permanent(
            Stage::Setup,
            format!("wal_level is {wal_level}; logical replication needs `ALTER SYSTEM SET wal_level = logical` and a server restart"),
        ));
    }
    let tables = mapped_tables(client, mapping, o).await?;
    let mut out = vec![PRIVILEGES.to_string()];
    let mut statements = Vec::new();

    let wanted: BTreeSet<(String, String)> = tables
        .iter()
        .map(|(_, t)| (t.schema.clone(), t.name.clone()))
        .collect();
    let list = wanted
        .iter()
        .map(|(s, t)| format!("{}.{}", ident(s), ident(t)))
        .collect::<Vec<_>>()
        .join(", ");
    // A partitioned table's changes are published under its own name (the
    // mapping's), not its partitions'; pg_publication_tables then lists it.
    let via_root: Option<bool> = client
        .query(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&o.publication],
        )
        .await
        .map_err(err)?
        .first()
        .map(|r| r.get(0));
    let exists = via_root.is_some();
    if !exists {
        statements.push(format!(
            "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = true)",
            ident(&o.publication)
        ));
    } else {
        if via_root == Some(false) {
            statements.push(format!(
                "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                ident(&o.publication)
            ));
        }
        // What it publishes (the view: all tables, schemas, partitions when
        // not via the root) and its own members (a partitioned table
        // itself, which the view leaves out before via-root is set).
        let have: BTreeSet<(String, String)> = client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1
                 UNION
                 SELECT n.nspname::text, c.relname::text FROM pg_publication_rel r
                 JOIN pg_publication p ON p.oid = r.prpubid
                 JOIN pg_class c ON c.oid = r.prrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE p.pubname = $1",
                &[&o.publication],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // Added, never set: a publication named in the options may be
        // shared with other subscribers, whose tables stay.
        let missing: Vec<String> = wanted
            .difference(&have)
            .map(|(s, t)| format!("{}.{}", ident(s), ident(t)))
            .collect();
        if !missing.is_empty() {
            statements.push(format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                ident(&o.publication),
                missing.join(", ")
            ));
        } else {
            out.push(format!(
                "-- publication {} already covers the {} mapped tables",
                o.publication,
                wanted.len()
            ));
        }
    }
    for (collection, t) in &tables {
        let rule = mapping.set().collection(collection);
        // An update of the id columns moves the row to another document:
        // only an old image that holds them names the document to delete
        // (the primary key's by default; not so where the id is another
        // column, or the replica identity is another index).
        let id_is_key = mapping
            .key_columns(collection)
            .is_some_and(|id| t.is_primary_key(&id) && t.old_image_names(&id));
        let needs_full = o.full_identity_everywhere
            || !id_is_key
            || rule.is_some_and(|r| !r.counters.is_empty());
        if needs_full && t.replica_identity != 'f' {
            statements.push(format!(
                "ALTER TABLE {} REPLICA IDENTITY FULL",
                t.qualified()
            ));
        }
    }
    let slot_exists = !client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&o.slot],
        )
        .await
        .map_err(err)?
        .is_empty();
    if create_slot && !slot_exists {
        statements.push(format!(
            // (lock_timeout off: creating a slot waits for every open
            // write transaction, which is a lock wait.)
            "SET lock_timeout = 0; SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
            literal(&o.slot)
        ));
    } else if slot_exists {
        out.push(format!("-- replication slot {} already exists", o.slot));
    }
    for s in &statements {
        if !dry_run {
            client
                .batch_execute(s)
                .await
                .map_err(|e| classify(&e, Stage::Setup, &format!("running `{s}`")))?;
        }
        out.push(format!("{s};"));
    }
    if statements.is_empty() {
        out.push("-- nothing to do".into());
    }
    Ok(out)
}
