//! `connector status`: per provider, what it did and how it is doing.

use serde_json::{json, Value};

use connector_store::ProviderStats;

use super::{ago, rfc3339, Context, Outcome};

struct Row {
    name: String,
    kind: String,
    enabled: bool,
    configured: bool,
    connection: Option<String>,
    stats: ProviderStats,
}

fn lag(stats: &ProviderStats) -> String {
    let source = stats
        .source_lag_ms
        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0));
    let backlog = stats
        .sink_backlog
        .filter(|b| *b > 0)
        .map(|b| format!("{b} queued"));
    match (source, backlog) {
        (None, None) => "-".into(),
        (Some(s), None) => s,
        (None, Some(b)) => b,
        (Some(s), Some(b)) => format!("{s}, {b}"),
    }
}

pub fn run(ctx: &Context, as_json: bool) -> Outcome {
    let store = ctx.existing_store()?;
    let mut rows: Vec<Row> = Vec::new();
    for spec in &ctx.config.providers {
        rows.push(Row {
            name: spec.name.clone(),
            kind: spec.kind.to_string(),
            enabled: spec.enabled,
            configured: true,
            connection: Some(spec.redacted_connection()),
            stats: match &store {
                Some(s) => s.provider_stats(&spec.name)?,
                None => ProviderStats {
                    provider: spec.name.clone(),
                    ..Default::default()
                },
            },
        });
    }
    if let Some(s) = &store {
        for name in s.known_providers()? {
            if !rows.iter().any(|r| r.name == name) {
                rows.push(Row {
                    stats: s.provider_stats(&name)?,
                    name,
                    kind: "?".into(),
                    enabled: false,
                    configured: false,
                    connection: None,
                });
            }
        }
    }
    let collections = match &store {
        Some(s) => s.collection_counts()?,
        None => Vec::new(),
    };
    let last_seq = match &store {
        Some(s) => s.last_seq()?,
        None => 0,
    };
    let total_dead: u64 = rows.iter().map(|r| r.stats.dead_letters).sum();

    if as_json {
        let providers: Vec<Value> = rows
            .iter()
            .map(|r| {
                let s = &r.stats;
                let (source, sink) = running(ctx, &r.name);
                json!({
                    "name": r.name, "kind": r.kind, "enabled": r.enabled, "configured": r.configured,
                    "running": {"source": source, "sink": sink},
                    "connection": r.connection,
                    "position": s.position, "position_saved_at": rfc3339(s.position_updated_ms),
                    "last_change_at": rfc3339(s.last_change_ms), "last_commit_at": rfc3339(s.last_commit_ms),
                    "source_lag_ms": s.source_lag_ms, "sink_cursor": s.sink_cursor, "sink_backlog": s.sink_backlog,
                    "received": s.received, "applied": s.applied, "echoes_dropped": s.echoes,
                    "filtered": s.filtered, "sink_writes": s.sink_writes, "errors": s.errors,
                    "dead_letters": s.dead_letters, "waiting_letters": s.waiting_letters,
                    "conflicts_lost_7d": s.conflicts_lost,
                    "last_error": s.last_error, "details": s.details,
                    "last_error_at": rfc3339(s.last_error_ms),
                })
            })
            .collect();
        let out = json!({
            "store": {
                "path": ctx.config.store_path.display().to_string(),
                "exists": store.is_some(),
                "last_seq": last_seq,
            },
            "providers": providers,
            "collections": collections,
            "dead_letters": total_dead,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }

    match &store {
        None => println!(
            "store: {} (no such file, empty: nothing synced yet with this store; \
             is it the one the workers use? the systemd units use /var/lib/connector/store.db)",
            ctx.config.store_path.display()
        ),
        Some(_) => println!(
            "store: {} (change log at {last_seq})",
            ctx.config.store_path.display()
        ),
    }
    if rows.is_empty() {
        println!("\nno providers configured: set DITTO_SYNC_POSTGRES=true and POSTGRES_CONNECTION_STRING=… (see README.md)");
    } else {
        let header = [
            "PROVIDER",
            "KIND",
            "ENABLED",
            "RUNNING",
            "POSITION",
            "LAST CHANGE",
            "LAG",
            "IN",
            "OUT",
            "ECHOES",
            "ERRORS",
            "DEAD",
        ];
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let s = &r.stats;
                vec![
                    r.name.clone(),
                    r.kind.clone(),
                    if !r.configured {
                        "not configured".into()
                    } else if r.enabled {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    match running(ctx, &r.name) {
                        (true, true) => "yes".into(),
                        (true, false) => "source only".into(),
                        (false, true) => "sink only".into(),
                        (false, false) => "no".into(),
                    },
                    s.position.clone().unwrap_or_else(|| "-".into()),
                    ago(s.last_change_ms),
                    lag(s),
                    s.applied.to_string(),
                    s.sink_writes.to_string(),
                    s.echoes.to_string(),
                    s.errors.to_string(),
                    s.dead_letters.to_string(),
                ]
            })
            .collect();
        println!();
        print_table(&header, &table);
        println!();
        for r in &rows {
            if let Some(c) = &r.connection {
                println!("{}: {c}", r.name);
            }
            if let Some(s) = &store {
                let (done, started, rows) = s.initial_sync_progress(&r.name)?;
                if started > 0 {
                    let state = if done == started {
                        "done"
                    } else {
                        "in progress"
                    };
                    println!("{}: initial sync {state}: {done}/{started} collections, {rows} rows copied", r.name);
                }
            }
            if r.stats.waiting_letters > 0 {
                println!(
                    "{}: {} refused write(s) wait for rows they reference; its sink tries them again for 24 h",
                    r.name, r.stats.waiting_letters
                );
            }
            if r.stats.conflicts_lost > 0 {
                println!(
                    "{}: {} change(s) of its own lost a conflict in the last 7 days (another provider \
                     changed the field later, unseen): see `connector conflicts -p {}`",
                    r.name, r.stats.conflicts_lost, r.name
                );
            }
            if let Some(d) = &r.stats.details {
                println!(
                    "{}: {}",
                    r.name,
                    describe_details(d, connector_store::stamp::now_millis())
                );
            }
            if let Some(e) = &r.stats.last_error {
                println!("{}: last error {}: {e}", r.name, ago(r.stats.last_error_ms));
            }
        }
    }
    if !collections.is_empty() {
        println!("\nCOLLECTION            DOCUMENTS   DELETED");
        for c in &collections {
            println!("{:<20} {:>10} {:>9}", c.collection, c.documents, c.deleted);
        }
    }
    if total_dead > 0 {
        println!("\n{total_dead} dead letter(s): see `connector dead-letters list`");
    }
    Ok(0)
}

pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// One line for provider details: for a PostgreSQL slot, its retained WAL
/// and a warning when `max_slot_wal_keep_size` is close to invalidating it;
/// for an ODBC journal, its size and how far it has been read.
/// Whether a process streams (or copies) the provider and whether one
/// writes it now: their locks are held. Figures and details are as the
/// last running process left them.
fn running(ctx: &Context, provider: &str) -> (bool, bool) {
    use crate::runtime::provider_lock::is_held;
    let store = &ctx.config.store_path;
    (
        is_held(store, provider),
        is_held(store, &format!("{provider}.sink")),
    )
}

pub fn describe_details(d: &Value, now: i64) -> String {
    let mut line = describe_now(d);
    if let Some(at) = d.get("as_of_ms").and_then(Value::as_i64) {
        line.push_str(&format!(" (as of {}", super::ago_at(Some(at), now)));
        if now - at > 5 * 60_000 {
            line.push_str(", not refreshed since: is the provider's source running?");
        }
        line.push(')');
    }
    line
}

/// Retained WAL past which a slot with no `max_slot_wal_keep_size` is
/// worth a warning: nothing bounds it but the disk.
const UNBOUNDED_WAL_WARNING: i64 = 1 << 30;

fn describe_now(d: &Value) -> String {
    if let Some(journal) = d.get("journal").and_then(Value::as_str) {
        let n = |k: &str| {
            d.get(k)
                .and_then(Value::as_i64)
                .map_or("?".to_string(), |v| v.to_string())
        };
        return format!(
            "journal {journal}: {} rows kept (up to seq {}), read up to {}, {} open gaps",
            n("journal_rows"),
            n("journal_max_seq"),
            n("read_up_to"),
            n("open_gaps")
        );
    }
    let Some(slot) = d.get("slot").and_then(Value::as_str) else {
        return d.to_string();
    };
    let mb = |v: Option<i64>| {
        v.map(|b| format!("{:.1} MB", b as f64 / 1_048_576.0))
            .unwrap_or_else(|| "?".into())
    };
    let status = d.get("wal_status").and_then(Value::as_str).unwrap_or("?");
    let retained = d.get("retained_wal_bytes").and_then(Value::as_i64);
    let safe = d.get("safe_wal_size").and_then(Value::as_i64);
    let mut line = format!(
        "slot {slot}: {} of WAL retained, wal_status {status}",
        mb(retained)
    );
    if let Some(safe) = safe {
        line.push_str(&format!(
            ", {} before max_slot_wal_keep_size invalidates it",
            mb(Some(safe))
        ));
    }
    let limit = d
        .get("max_slot_wal_keep_size")
        .and_then(Value::as_str)
        .unwrap_or("-1");
    let close = match (safe, retained) {
        (Some(s), Some(r)) => s < (s + r) / 5,
        _ => false,
    };
    if matches!(status, "unreserved" | "lost" | "missing") || close {
        line.push_str(&format!(
            "  WARNING: the slot is at risk (max_slot_wal_keep_size = {limit})"
        ));
    } else if safe.is_none() && retained.is_some_and(|r| r > UNBOUNDED_WAL_WARNING) {
        line.push_str(
            "  WARNING: no max_slot_wal_keep_size bounds the slot: its WAL grows until the disk fills while the source is behind or stopped",
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::describe_details;
    use serde_json::json;

    const MB: i64 = 1_048_576;

    #[test]
    fn a_slot_close_to_its_wal_limit_is_a_warning() {
        let slot = |status: &str, retained: i64, safe: Option<i64>| {
            describe_details(
                &json!({
                    "slot": "connector_hq", "wal_status": status,
                    "retained_wal_bytes": retained, "safe_wal_size": safe,
                    "max_slot_wal_keep_size": "1024MB",
                }),
                0,
            )
        };
        let fine = slot("reserved", 10 * MB, Some(900 * MB));
        assert_eq!(
            fine,
            "slot connector_hq: 10.0 MB of WAL retained, wal_status reserved, \
             900.0 MB before max_slot_wal_keep_size invalidates it"
        );
        // Under a fifth of the limit left.
        let close = slot("extended", 900 * MB, Some(100 * MB));
        assert!(
            close.ends_with("WARNING: the slot is at risk (max_slot_wal_keep_size = 1024MB)"),
            "{close}"
        );
        for status in ["unreserved", "lost"] {
            assert!(slot(status, 10 * MB, None).contains("WARNING"), "{status}");
        }
        // No limit configured: no safe size; a warning only once it is large.
        let unlimited = slot("reserved", 500 * MB, None);
        assert!(
            !unlimited.contains("WARNING") && !unlimited.contains("invalidates"),
            "{unlimited}"
        );
        let large = slot("reserved", 5_000 * MB, None);
        assert!(
            large.contains("WARNING: no max_slot_wal_keep_size bounds the slot"),
            "{large}"
        );
    }

    #[test]
    fn details_say_when_they_were_taken() {
        let now = 1_800_000_000_000;
        let d = |age_ms: i64| {
            describe_details(
                &json!({
                    "journal": "j", "journal_rows": 1, "journal_max_seq": 1,
                    "read_up_to": 1, "open_gaps": 0, "as_of_ms": now - age_ms,
                }),
                now,
            )
        };
        assert!(d(3_000).ends_with("(as of 3s ago)"), "{}", d(3_000));
        assert!(
            d(3 * 3_600_000).ends_with(
                "(as of 3h ago, not refreshed since: is the provider's source running?)"
            ),
            "{}",
            d(3 * 3_600_000)
        );
    }

    #[test]
    fn a_journal_shows_its_size_and_how_far_it_was_read() {
        let line = describe_details(
            &json!({
                "journal": "\"connector_journal\"", "journal_rows": 3, "journal_max_seq": 42,
                "read_up_to": 40, "open_gaps": 1,
            }),
            0,
        );
        assert_eq!(
            line,
            "journal \"connector_journal\": 3 rows kept (up to seq 42), read up to 40, 1 open gaps"
        );
    }
}
