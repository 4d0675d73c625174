//! Provider options (`CONNECTOR_<NAME>_OPTIONS=key=value,…`).

use std::time::Duration;

use connector_core::{ConnectorError, ProviderSpec, Stage};

/// What to do when the replication slot is gone, invalidated or re-created
/// while the store holds a position from it (changes in between are lost
/// on the server side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLostPolicy {
    /// Stop the provider with the diagnosis; ops decide (the default: a gap
    /// is never filled silently).
    Stop,
    /// Drop the stale slot, create a new one and copy every collection again
    /// from its exported snapshot, then stream from it.
    Resnapshot,
}

#[derive(Debug, Clone)]
pub struct PgOptions {
    pub slot: String,
    pub publication: String,
    /// Schema of tables whose mapping names none.
    pub schema: String,
    pub heartbeat: Duration,
    pub on_slot_lost: SlotLostPolicy,
    /// `REPLICA IDENTITY FULL` on every mapped table (default: only where
    /// counters need before images).
    pub full_identity_everywhere: bool,
    /// How long a batch whose every row a trigger refuses is taken for a
    /// table refusing writes (retried) before its rows are dead letters.
    pub refused_batch_wait: Duration,
}

impl PgOptions {
    pub fn from_spec(spec: &ProviderSpec) -> Result<PgOptions, ConnectorError> {
        let base: String = spec
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let bad = |key: &str, value: &str, expected: &str| {
            ConnectorError::permanent(
                Stage::Connect,
                format!(
                    "provider `{}`: option {key}={value}: expected {expected}",
                    spec.name
                ),
            )
        };
        let mut o = PgOptions {
            slot: format!("connector_{base}"),
            publication: format!("connector_{base}"),
            schema: spec.schema.clone().unwrap_or_else(|| "public".into()),
            heartbeat: Duration::from_secs(10),
            on_slot_lost: SlotLostPolicy::Stop,
            full_identity_everywhere: false,
            refused_batch_wait: Duration::from_secs(600),
        };
        for (key, value) in &spec.options {
            match key.as_str() {
                "slot" => o.slot = value.clone(),
                "publication" => o.publication = value.clone(),
                "schema" => o.schema = value.clone(),
                "heartbeat_ms" => {
                    o.heartbeat = Duration::from_millis(value.parse().map_err(|_| bad(key, value, "milliseconds"))?)
                }
                "on_slot_lost" => {
                    o.on_slot_lost = match value.as_str() {
                        "stop" => SlotLostPolicy::Stop,
                        "resnapshot" => SlotLostPolicy::Resnapshot,
                        _ => return Err(bad(key, value, "stop or resnapshot")),
                    }
                }
                "refused_batch_wait_s" => {
                    o.refused_batch_wait =
                        Duration::from_secs(value.parse().map_err(|_| bad(key, value, "seconds"))?)
                }
                "replica_identity" => {
                    o.full_identity_everywhere = match value.as_str() {
                        "full" => true,
                        "counters" => false,
                        _ => return Err(bad(key, value, "full or counters")),
                    }
                }
                other => {
                    return Err(ConnectorError::permanent(
                        Stage::Connect,
                        format!(
                            "provider `{}`: unknown option `{other}` (known: slot, publication, schema, heartbeat_ms, on_slot_lost, replica_identity, refused_batch_wait_s)",
                            spec.name
                        ),
                    ))
                }
            }
        }
        if !o
            .slot
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(bad("slot", &o.slot, "lowercase letters, digits and _"));
        }
        Ok(o)
    }
}
