//! One file per command family. Each returns its process exit code.

pub mod conflicts;
pub mod dead_letters;
pub mod mappings;
pub mod providers;
pub mod query;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use connector_core::MappingSet;
use connector_store::Store;

use crate::config::Config;

/// What every command may need, resolved once from flags and environment.
pub struct Context {
    pub config: Config,
}

/// An error a command reports to the user and exits on (code 1 unless said).
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

pub type Outcome = Result<i32, Failure>;

impl Context {
    /// Opens the store (creating it on first use).
    pub fn store(&self) -> Result<Store, Failure> {
        Store::open(&self.config.store_path).map_err(|e| Failure::new(e.to_string()))
    }

    /// Opens the store only if it exists: read-only commands on a fresh
    /// machine report "empty" instead of creating files.
    pub fn existing_store(&self) -> Result<Option<Store>, Failure> {
        if self.config.store_path.exists() {
            self.store().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Loads and validates the mapping files; errors come back one per line.
    pub fn mappings(&self) -> Result<Arc<MappingSet>, Failure> {
        load_mappings(&self.config.mappings).map(Arc::new)
    }
}

pub fn load_mappings(paths: &[PathBuf]) -> Result<MappingSet, Failure> {
    MappingSet::load(paths).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        Failure {
            message: format!(
                "{}\n{} error(s) in the mapping files",
                lines.join("\n"),
                errors.len()
            ),
            code: 1,
        }
    })
}

/// "3s ago", "5m ago", for a time in ms since the epoch.
pub fn ago(ms: Option<i64>) -> String {
    ago_at(ms, connector_store::stamp::now_millis())
}

/// [`ago`] as seen at `now`.
pub fn ago_at(ms: Option<i64>, now: i64) -> String {
    let Some(ms) = ms else { return "-".into() };
    let secs = (now - ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// RFC 3339 for JSON output.
/// Prints `items` as a JSON list, each with its time `at_ms` also as
/// RFC 3339 (`at`).
pub fn print_json_with_at<T: serde::Serialize>(
    items: &[T],
    at_ms: impl Fn(&T) -> i64,
) -> Result<(), Failure> {
    let out: Vec<serde_json::Value> = items
        .iter()
        .map(|item| {
            let mut v = serde_json::to_value(item).unwrap_or_default();
            v["at"] = serde_json::json!(rfc3339(Some(at_ms(item))));
            v
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
