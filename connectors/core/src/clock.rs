//! The host's wall clock, in the unit every timestamp of the fleet uses.

/// Milliseconds since the Unix epoch on this host.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
