//! The ODBC provider: any database with an ODBC driver, IBM DB2 first.
//!
//! DB2 offers a client no change feed to subscribe to, so this provider
//! captures changes with triggers and polls:
//!
//! * Setup ([`setup`]): a change journal table and AFTER INSERT / UPDATE /
//!   DELETE row triggers on every mapped table, writing full row images as
//!   JSON; idempotent, printable with `--dry-run`.
//! * Source ([`source`]): polls the journal by sequence, tolerating
//!   sequences that commit out of order ([`journal`]); prunes only what the
//!   store has durably merged.
//! * Snapshot ([`snapshot`]): keyset pages by the mapping's id columns.
//! * Sink ([`sink`]): one transaction per batch, array parameters per
//!   statement, the dialect's upsert.
//!
//! All SQL that differs between databases lives in [`dialect`] (DB2,
//! PostgreSQL, SQLite, MariaDB). odbc-api is blocking; every driver call runs
//! on tokio's blocking pool through a [`conn::Session`].
//!
//! Crash/restart: as for every provider, the store saves the source position
//! (here: the journal position) with the changes it covers; a restart
//! re-reads from there and the store's shadows drop repeats.

pub mod catalog;
pub mod conn;
pub mod dialect;
pub mod fk_actions;
pub mod image;
pub mod journal;
pub mod options;
pub mod setup;
pub mod sink;
pub mod snapshot;
pub mod source;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use connector_core::{
    Provider, ProviderMapping, ProviderSpec, Result, Sink, Snapshot, Source, Stage,
};

use conn::OdbcConn;
use options::OdbcOptions;

pub struct OdbcProvider {
    spec: ProviderSpec,
    conn: OdbcConn,
    /// Set at once when the options or the driver name tell the dialect,
    /// else on the first connection, from the DBMS name.
    options: OnceLock<OdbcOptions>,
}

impl OdbcProvider {
    pub fn new(spec: ProviderSpec) -> Result<Self> {
        let mut conn = OdbcConn::parse(&spec.connection_string)?;
        conn.call_timeout = options::call_timeout(&spec)?;
        let options = OnceLock::new();
        if let Some(o) = OdbcOptions::from_spec(&spec, &conn, None)? {
            let _ = options.set(o);
        }
        Ok(OdbcProvider {
            spec,
            conn,
            options,
        })
    }

    /// The options, with the dialect the DBMS name tells where nothing
    /// else did (one connection, the first time).
    pub async fn options(&self) -> Result<OdbcOptions> {
        if let Some(o) = self.options.get() {
            return Ok(o.clone());
        }
        let conn = self.conn.clone();
        let dbms = tokio::task::spawn_blocking(move || {
            let c = conn.connect("the ODBC database")?;
            c.database_management_system_name()
                .map_err(|e| conn::classify(&e, Stage::Connect, "reading the DBMS name"))
        })
        .await
        .map_err(|e| {
            connector_core::ConnectorError::transient(
                Stage::Connect,
                format!("connect task failed: {e}"),
            )
        })??;
        let o = OdbcOptions::from_spec(&self.spec, &self.conn, Some(&dbms))?.ok_or_else(|| {
            connector_core::ConnectorError::permanent(
                Stage::Connect,
                "the dialect is still unknown",
            )
        })?;
        Ok(self.options.get_or_init(|| o).clone())
    }
}

#[async_trait]
impl Provider for OdbcProvider {
    fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    async fn test_connection(&self) -> Result<String> {
        let d = self.options().await?.dialect.dialect();
        let mut session = source::open_session(&self.conn, d, Stage::Connect).await?;
        let endpoint = self.conn.endpoint();
        session
            .run(move |c| {
                let name = c
                    .database_management_system_name()
                    .map_err(|e| conn::classify(&e, Stage::Connect, "reading the DBMS name"))?;
                Ok(format!("{name} at {endpoint} (dialect {})", d.name()))
            })
            .await
    }

    async fn setup(&self, mapping: &ProviderMapping, dry_run: bool) -> Result<Vec<String>> {
        let o = self.options().await?;
        let d = o.dialect.dialect();
        let mut session = source::open_session(&self.conn, d, Stage::Setup).await?;
        let mapping = Arc::new(ProviderMapping::new(
            Arc::new(mapping.set().clone()),
            mapping.provider(),
            mapping.kind(),
        ));
        session
            .run(move |c| setup::run(c, d, &mapping, &o, dry_run))
            .await
    }

    async fn open_source(
        &self,
        mapping: Arc<ProviderMapping>,
        resume_from: Option<String>,
    ) -> Result<Box<dyn Source>> {
        Ok(Box::new(
            source::OdbcSource::open(&self.conn, &self.options().await?, &mapping, resume_from)
                .await?,
        ))
    }

    async fn open_sink(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Sink>> {
        Ok(Box::new(
            sink::OdbcSink::open(&self.conn, &self.options().await?, &mapping).await?,
        ))
    }

    async fn open_snapshot(&self, mapping: Arc<ProviderMapping>) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(
            snapshot::OdbcSnapshot::open(&self.conn, &self.options().await?, &mapping).await?,
        ))
    }
}
