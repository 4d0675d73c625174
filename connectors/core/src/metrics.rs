//! The metric names every provider's worker emits: one set, defined once.
//! Labels: `provider` (instance name), `stage` (see [`crate::Stage`]),
//! `source`/`sink` (instance names).

pub const EVENTS_RECEIVED: &str = "connector_events_received_total";
pub const EVENTS_APPLIED: &str = "connector_events_applied_total";
pub const ECHOES_DROPPED: &str = "connector_echoes_dropped_total";
pub const SINK_WRITES: &str = "connector_sink_writes_total";
pub const ERRORS: &str = "connector_errors_total";
pub const DEAD_LETTERS: &str = "connector_dead_letters_total";
/// Per provider whose change met another provider's concurrent change of
/// the same field (resolved by the merge; `connector conflicts` lists them).
pub const CONFLICTS: &str = "connector_conflicts_total";
pub const SOURCE_LAG_SECONDS: &str = "connector_source_lag_seconds";
pub const FANOUT_LAG_SECONDS: &str = "connector_fanout_lag_seconds";
/// Per provider and task (`source`, `sink`): 0 green, 1 yellow (retrying
/// after a transient error), 2 red (stopped). An alert on `>= 1` held for
/// a while finds a provider that has been retrying for hours, which
/// `/health` (HTTP 200 while yellow) and the lag gauges (set only when
/// changes flow) do not show.
pub const PROVIDER_HEALTH: &str = "connector_provider_health";
