//! What the catalog says about a mapped table: columns, types, key.

use connector_core::{ConnectorError, Result, Stage};
use tokio_postgres::Client;

use crate::conn::{classify, qualified};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// `format_type()`, e.g. `numeric(10,2)`: for casts.
    pub type_name: String,
    /// `GENERATED ALWAYS AS IDENTITY`: an insert of its value needs
    /// `OVERRIDING SYSTEM VALUE`, and it is never updated.
    pub always_identity: bool,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// Primary key columns, in key order.
    pub key: Vec<String>,
    /// `d` default, `f` full, `i` index, `n` nothing.
    pub replica_identity: char,
    /// The columns of the `REPLICA IDENTITY USING INDEX` index (`i`).
    pub identity_index: Vec<String>,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// Whether a column is `GENERATED ALWAYS AS IDENTITY`.
    pub fn has_always_identity(&self) -> bool {
        self.columns.iter().any(|c| c.always_identity)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether `columns` are the primary key's, in any order.
    pub fn is_primary_key(&self, columns: &[String]) -> bool {
        columns.len() == self.key.len() && columns.iter().all(|c| self.key.contains(c))
    }

    /// Whether an update of the `id` columns streams an old image that
    /// holds them (it names the document to delete). PostgreSQL sends an
    /// old key only when the replica identity's own columns change: with
    /// `USING INDEX` on another index than the id's, an update of the id
    /// alone sends none, and the old document would stay.
    pub fn old_image_names(&self, id: &[String]) -> bool {
        let identity = match self.replica_identity {
            'f' => return true,
            'i' => &self.identity_index,
            'd' => &self.key,
            _ => return false,
        };
        id.iter().all(|c| identity.contains(c))
    }
}

/// Reads a table's description; `None` when it does not exist.
pub async fn table_info(client: &Client, schema: &str, table: &str) -> Result<Option<TableInfo>> {
    let ctx = format!("reading the catalog for {schema}.{table}");
    let rows = client
        .query(
            // Generated columns are the database's own (they cannot be
            // written, and pgoutput leaves them out): not synced.
            // The type oid of a domain's base type, through domains over
            // domains (values are read by it, as the stream reads them).
            "SELECT a.attname::text,
                    (WITH RECURSIVE d(t) AS (
                       SELECT a.atttypid
                       UNION ALL
                       SELECT b.typbasetype FROM d JOIN pg_type b ON b.oid = d.t WHERE b.typtype = 'd')
                     SELECT d.t FROM d JOIN pg_type x ON x.oid = d.t WHERE x.typtype <> 'd')::int8,
                    format_type(a.atttypid, a.atttypmod), c.relreplident::text,
                    a.attidentity = 'a', c.oid::int8
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
               AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| classify(&e, Stage::Setup, &ctx))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let replica_identity = rows[0].get::<_, String>(3).chars().next().unwrap_or('d');
    let oid = rows[0].get::<_, i64>(5) as u32;

    let columns = rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_oid: r.get::<_, i64>(1) as u32,
            type_name: r.get(2),
            always_identity: r.get(4),
        })
        .collect();
    let (mut key, mut identity_index) = (Vec::new(), Vec::new());
    for r in client
        .query(
            "SELECT a.attname::text, i.indisprimary, i.indisreplident
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE n.nspname = $1 AND c.relname = $2 AND (i.indisprimary OR i.indisreplident)
             ORDER BY i.indisprimary DESC, array_position(i.indkey::int2[], a.attnum)",
            &[&schema, &table],
        )
        .await
        .map_err(|e| classify(&e, Stage::Setup, &ctx))?
    {
        // (The primary key may be the replica identity index too.)
        let (column, primary, identity): (String, bool, bool) = (r.get(0), r.get(1), r.get(2));
        if identity {
            identity_index.push(column.clone());
        }
        if primary {
            key.push(column);
        }
    }
    Ok(Some(TableInfo {
        oid,
        schema: schema.to_string(),
        name: table.to_string(),
        columns,
        key,
        replica_identity,
        identity_index,
    }))
}

/// Like [`table_info`], but a missing table or key is a permanent error.
pub async fn require_table(
    client: &Client,
    schema: &str,
    table: &str,
    collection: &str,
) -> Result<TableInfo> {
    let info = table_info(client, schema, table).await?.ok_or_else(|| {
        ConnectorError::permanent(
            Stage::Setup,
            format!(
                "collection `{collection}`: table {schema}.{table} does not exist in this database"
            ),
        )
    })?;
    if info.key.is_empty() {
        return Err(ConnectorError::permanent(
            Stage::Setup,
            format!("collection `{collection}`: table {schema}.{table} has no primary key (needed for keyed reads and upserts)"),
        ));
    }
    Ok(info)
}

/// Whether a unique index covers exactly these columns (what `ON CONFLICT`
/// needs).
pub async fn has_unique_index(client: &Client, t: &TableInfo, columns: &[String]) -> Result<bool> {
    let mut want: Vec<String> = columns.to_vec();
    want.sort();
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = i.indrelid
              AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indpred IS NULL
               AND i.indisvalid AND i.indimmediate
             GROUP BY i.indexrelid",
            &[&t.schema, &t.name],
        )
        .await
        .map_err(|e| classify(&e, Stage::Setup, "reading unique indexes"))?;
    Ok(rows.iter().any(|r| r.get::<_, Vec<String>>(0) == want))
}

/// The foreign keys among `tables`, as `(child, parent)` table names.
pub async fn foreign_keys<'a>(
    client: &Client,
    tables: impl IntoIterator<Item = &'a TableInfo>,
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT cn.nspname::text, cc.relname::text, pn.nspname::text, pc.relname::text
             FROM pg_constraint k
             JOIN pg_class cc ON cc.oid = k.conrelid
             JOIN pg_namespace cn ON cn.oid = cc.relnamespace
             JOIN pg_class pc ON pc.oid = k.confrelid
             JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             WHERE k.contype = 'f'",
            &[],
        )
        .await
        .map_err(|e| classify(&e, Stage::Setup, "reading the foreign keys"))?;
    let known: Vec<&TableInfo> = tables.into_iter().collect();
    let name_of = |schema: String, name: String| {
        known
            .iter()
            .find(|t| t.schema == schema && t.name == name)
            .map(|t| t.name.clone())
    };
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((name_of(r.get(0), r.get(1))?, name_of(r.get(2), r.get(3))?)))
        .collect())
}

/// Each domain type's base type (followed through domains over domains),
/// by oid: the stream's Relation messages name a column's domain, and its
/// values are read by the base type, as the copy reads them.
pub async fn domain_bases(client: &Client) -> Result<std::collections::HashMap<u32, u32>> {
    let rows = client
        .query(
            "WITH RECURSIVE d(oid, base) AS (
               SELECT oid, typbasetype FROM pg_type WHERE typtype = 'd'
               UNION ALL
               SELECT d.oid, t.typbasetype FROM d JOIN pg_type t ON t.oid = d.base WHERE t.typtype = 'd')
             SELECT d.oid::int8, d.base::int8 FROM d JOIN pg_type t ON t.oid = d.base WHERE t.typtype <> 'd'",
            &[],
        )
        .await
        .map_err(|e| classify(&e, Stage::Source, "reading the domain types"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, i64>(1) as u32))
        .collect())
}
