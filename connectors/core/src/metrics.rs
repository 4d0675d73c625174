//! The metric names every provider's worker emits: one set, defined once.
//! Labels: `provider` (instance name), `stage` (see [`crate::Stage`]),
//! `source`/`sink` (instance names).

pub const EVENTS_RECEIVED: &str = "connector_events_received_total";
pub const EVENTS_APPLIED: &str = "connector_events_applied_total";
pub const ECHOES_DROPPED: &str = "connector_echoes_dropped_total";
pub const SINK_WRITES: &str = "connector_sink_writes_total";
pub const ERRORS: &str = "connector_errors_total";
pub const DEAD_LETTERS: &str = "connector_dead_letters_total";
pub const SOURCE_LAG_SECONDS: &str = "connector_source_lag_seconds";
pub const FANOUT_LAG_SECONDS: &str = "connector_fanout_lag_seconds";
