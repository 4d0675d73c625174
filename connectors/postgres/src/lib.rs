//! The PostgreSQL provider.
//!
//! * Source ([`source`]): logical replication over `pgwire-replication`
//!   (pinned: transport only) with our own pgoutput v1 decoder
//!   ([`pgoutput`], [`types`]). Whole transactions are grouped into batches;
//!   the slot is acknowledged only after the store committed the batch and
//!   its end LSN. A quiet database gets heartbeat messages so the slot keeps
//!   advancing.
//! * Snapshot ([`snapshot`]): keyset pages by primary key inside one
//!   REPEATABLE READ transaction, on the slot's exported snapshot when the
//!   slot is created for it, so streaming starts exactly where the copy ends.
//! * Sink ([`sink`]): one transaction per batch; upserts and deletes as one
//!   statement per table through `jsonb_populate_recordset`, so PostgreSQL's
//!   own input functions convert every value and every identifier is quoted.
//! * Setup ([`setup`]): publication, replica identity, slot; idempotent.
//!
//! Crash/restart: nothing here is durable on our side except through the
//! store. The source resumes from the LSN saved with the last store commit
//! and skips transactions that commit before it; the slot never moves past
//! what the store holds, so nothing is lost or applied twice.

pub mod catalog;
pub mod conn;
pub mod options;
pub mod pgoutput;
pub mod setup;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod tls;
pub mod types;

use std::sync::Arc;

use async_trait::async_trait;
use connector_core::{
    ConnectorError, Provider, ProviderMapping, ProviderSpec, Result, Sink, Snapshot, Source, Stage,
};

use conn::{classify, PgConn};
use options::PgOptions;

pub struct PostgresProvider {
    spec: ProviderSpec,
    conn: PgConn,
    options: PgOptions,
}

impl PostgresProvider {
    pub fn new(spec: ProviderSpec) -> Result<Self> {
        let conn = PgConn::parse(&spec.connection_string)?;
        let options = PgOptions::from_spec(&spec)?;
        Ok(PostgresProvider {
            spec,
            conn,
            options,
        })
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    async fn test_connection(&self) -> Result<String> {
        let client = self.conn.connect().await?;
        let row = client
            .query_one("SELECT version(), current_setting('wal_level')", &[])
            .await
            .map_err(|e| classify(&e, Stage::Connect, "querying the server version"))?;
        let version: String = row.get(0);
        let wal_level: String = row.get(1);
        let short = version.split(" on ").next().unwrap_or(&version).to_string();
        if wal_level != "logical" {
            return Err(ConnectorError::permanent(
                Stage::Connect,
                format!(
                    "{short} at {}: wal_level is {wal_level}, logical replication needs `logical`",
                    self.conn.endpoint()
                ),
            ));
        }
        Ok(format!(
            "{short} at {}, wal_level=logical",
            self.conn.endpoint()
        ))
    }

    async fn setup(&self, mapping: &ProviderMapping, dry_run: bool) -> Result<Vec<String>> {
        let client = self.conn.connect().await?;
        setup::run(&client, mapping, &self.options, dry_run, true).await
    }

    async fn open_source(
        &self,
        mapping: Arc<ProviderMapping>,
        resume_from: Option<String>,
    ) -> Result<Box<dyn Source>> {
        Ok(Box::new(
            source::PgSource::open(&self.conn, &self.options, &mapping, resume_from).await?,
        ))
    }

    async fn open_sink(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Sink>> {
        Ok(Box::new(
            sink::PgSink::open(&self.conn, &self.options, &mapping).await?,
        ))
    }

    async fn open_snapshot(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(
            snapshot::PgSnapshot::open(&self.conn, &self.options, &mapping, true).await?,
        ))
    }

    async fn open_reader(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(
            snapshot::PgSnapshot::open(&self.conn, &self.options, &mapping, false).await?,
        ))
    }
}
