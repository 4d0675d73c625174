//! The provider registry: which provider kinds this build includes.
//!
//! Each provider kind is its own crate behind a cargo feature of the same
//! name, so a change to core or to one provider never rebuilds another's
//! heavy driver. A configured provider whose kind is not compiled in is a
//! clear error, not a silent skip.

use std::sync::Arc;

use connector_core::{
    ConnectorError, MappingSet, Provider, ProviderKind, ProviderMapping, ProviderSpec, Stage,
};

/// The kinds compiled into this binary.
#[allow(clippy::vec_init_then_push)]
pub fn available_kinds() -> Vec<ProviderKind> {
    #[allow(unused_mut)]
    let mut kinds = Vec::new();
    #[cfg(feature = "postgres")]
    kinds.push(ProviderKind::Postgres);
    #[cfg(feature = "odbc")]
    kinds.push(ProviderKind::Odbc);
    kinds
}

/// Creates the provider for a configured instance (does not connect).
pub fn create(spec: &ProviderSpec) -> Result<Arc<dyn Provider>, ConnectorError> {
    match spec.kind {
        #[cfg(feature = "postgres")]
        ProviderKind::Postgres => Ok(Arc::new(connector_postgres::PostgresProvider::new(
            spec.clone(),
        )?)),
        #[cfg(feature = "odbc")]
        ProviderKind::Odbc => Ok(Arc::new(connector_odbc::OdbcProvider::new(spec.clone())?)),
        #[cfg(not(feature = "odbc"))]
        ProviderKind::Odbc => Err(ConnectorError::permanent(
            Stage::Connect,
            format!(
                "provider `{}` is of kind odbc, which this build of connector does not include \
                 (built with: {}); rebuild with `cargo build --release -p connector-worker --features odbc`",
                spec.name,
                describe(&available_kinds()),
            ),
        )),
        kind => Err(ConnectorError::permanent(
            Stage::Connect,
            format!(
                "provider `{}` is of kind {kind}, which is not implemented yet (this build has: {})",
                spec.name,
                describe(&available_kinds()),
            ),
        )),
    }
}

/// Creates the provider and binds the mapping set to it: what every
/// command that talks to a provider starts with.
pub fn open(
    spec: &ProviderSpec,
    mappings: &Arc<MappingSet>,
) -> Result<(Arc<dyn Provider>, Arc<ProviderMapping>), ConnectorError> {
    let provider = create(spec)?;
    let mapping = Arc::new(ProviderMapping::new(
        mappings.clone(),
        &spec.name,
        spec.kind,
    ));
    mapping
        .check()
        .map_err(|e| ConnectorError::permanent(Stage::Setup, format!("mappings: {e}")))?;
    Ok((provider, mapping))
}

fn describe(kinds: &[ProviderKind]) -> String {
    if kinds.is_empty() {
        "no provider kinds".into()
    } else {
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
