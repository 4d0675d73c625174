//! Hybrid logical clock stamps.
//!
//! A stamp is `(hlc, origin)`: `hlc` packs milliseconds since the Unix
//! epoch in the high 48 bits and a logical counter in the low 16, so stamps
//! order like wall-clock time and still leave room to order several writes
//! within one millisecond. The origin (provider instance name) breaks ties,
//! so every pair of distinct writes is ordered the same way everywhere.
//!
//! Stamps are taken from the source's commit time (PostgreSQL commit
//! timestamp, Mongo clusterTime, …) so "last writer" means the last commit
//! in real time, not the last change to arrive. A commit time more than
//! [`MAX_FUTURE_MS`] ahead of this host's clock is clamped: a database with a
//! runaway clock must not win every conflict until the world catches up.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

pub const LOGICAL_BITS: u32 = 16;
/// How far ahead of the local clock a source commit time is believed.
pub const MAX_FUTURE_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    #[serde(rename = "t")]
    pub hlc: u64,
    #[serde(rename = "o")]
    pub origin: String,
}

impl Stamp {
    pub fn new(hlc: u64, origin: impl Into<String>) -> Self {
        Stamp {
            hlc,
            origin: origin.into(),
        }
    }

    /// The HLC value for a physical time in milliseconds (logical part 0).
    pub fn hlc_from_millis(ms: i64) -> u64 {
        (ms.max(0) as u64) << LOGICAL_BITS
    }

    pub fn millis(&self) -> i64 {
        (self.hlc >> LOGICAL_BITS) as i64
    }
}

impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.hlc
            .cmp(&other.hlc)
            .then_with(|| self.origin.cmp(&other.origin))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

pub use connector_core::clock::now_millis;

/// The base HLC for a change: its commit time when the feed gives one
/// (clamped to at most [`MAX_FUTURE_MS`] ahead of `now_ms`), else `now_ms`.
pub fn base_hlc(commit_ts_ms: Option<i64>, now_ms: i64) -> u64 {
    let physical = commit_ts_ms
        .map(|c| c.min(now_ms + MAX_FUTURE_MS))
        .unwrap_or(now_ms);
    Stamp::hlc_from_millis(physical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_order_by_time_then_origin() {
        let a = Stamp::new(Stamp::hlc_from_millis(1000), "shop");
        let b = Stamp::new(Stamp::hlc_from_millis(1000), "hq");
        let c = Stamp::new(Stamp::hlc_from_millis(1000) + 1, "hq");
        assert!(b < a && a < c);
        assert_eq!(c.millis(), 1000);
    }

    #[test]
    fn commit_times_are_used_but_clamped() {
        assert_eq!(base_hlc(Some(5_000), 10_000), Stamp::hlc_from_millis(5_000));
        assert_eq!(base_hlc(None, 10_000), Stamp::hlc_from_millis(10_000));
        assert_eq!(
            base_hlc(Some(10_000 + 10 * MAX_FUTURE_MS), 10_000),
            Stamp::hlc_from_millis(10_000 + MAX_FUTURE_MS)
        );
    }
}
