//! The commands that talk to providers: run, initial-sync, setup, verify,
//! test-connection. Each resolves the providers first (by `--provider`, or
//! every enabled one) and fails clearly when none is configured.

use connector_core::ProviderSpec;

use super::status::print_table;
use super::{Context, Failure, Outcome};
use crate::registry;
use crate::runtime;

fn specs(ctx: &Context, name: Option<&str>) -> Result<Vec<ProviderSpec>, Failure> {
    // A provider name no configuration has is a configuration error (2).
    let selected = ctx.config.selected(name).map_err(|e| Failure {
        message: e.to_string(),
        code: 2,
    })?;
    if selected.is_empty() {
        return Err(Failure {
            message: "no enabled providers: set e.g. DITTO_SYNC_POSTGRES=true and \
                      POSTGRES_CONNECTION_STRING=postgres://…, or CONNECTOR_PROVIDERS (see README.md)"
                .into(),
            code: 2,
        });
    }
    Ok(selected.into_iter().cloned().collect())
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))
}

pub fn run(ctx: &Context, name: Option<&str>) -> Outcome {
    let specs = specs(ctx, name)?;
    let mappings = ctx.mappings()?;
    let rt = tokio_runtime()?;
    rt.block_on(runtime::run(&ctx.config, specs, mappings))
}

pub fn initial_sync(
    ctx: &Context,
    name: Option<&str>,
    collection: Option<&str>,
    restart: bool,
) -> Outcome {
    let specs = specs(ctx, name)?;
    let mappings = ctx.mappings()?;
    let rt = tokio_runtime()?;
    let copied = rt.block_on(runtime::initial_sync::run(
        &ctx.config,
        specs,
        mappings,
        collection,
        restart,
        None,
    ))?;
    let total: u64 = copied.iter().filter(|c| !c.skipped).map(|c| c.rows).sum();
    let secs: f64 = copied.iter().map(|c| c.seconds).sum();
    println!(
        "initial sync done: {} collection(s), {total} rows in {secs:.1}s ({:.0} rows/s), peak RSS {}; `connector run` fans them out",
        copied.len(),
        total as f64 / secs.max(1e-9),
        peak_rss().unwrap_or_else(|| "?".into())
    );
    Ok(0)
}

pub fn setup(ctx: &Context, name: Option<&str>, dry_run: bool) -> Outcome {
    let specs = specs(ctx, name)?;
    let mappings = ctx.mappings()?;
    let rt = tokio_runtime()?;
    rt.block_on(async {
        for spec in specs {
            let (provider, mapping) = registry::open(&spec, &mappings)?;
            let done = provider.setup(&mapping, dry_run).await?;
            println!(
                "-- {} ({}){}",
                spec.name,
                spec.kind,
                if dry_run {
                    ": dry run, nothing changed"
                } else {
                    ""
                }
            );
            for line in done {
                println!("{line}");
            }
        }
        Ok(0)
    })
}

pub fn verify(ctx: &Context, name: Option<&str>, collection: Option<&str>) -> Outcome {
    let specs = specs(ctx, name)?;
    let mappings = ctx.mappings()?;
    let rt = tokio_runtime()?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let diffs = rt.block_on(runtime::verify::run(
        &ctx.config,
        specs,
        mappings,
        collection,
        |p, c, s, t, rejected| {
            if rejected > 0 {
                notes.push(format!(
                    "note: {p} / {c}: {rejected} row(s) the mapping rejects (e.g. a NULL id) are not compared; \
                     they are not synced (the stream keeps each as a dead letter: `connector dead-letters list`)"
                ));
            }
            rows.push(vec![
                p.to_string(),
                c.to_string(),
                s.count.to_string(),
                t.count.to_string(),
                if s == t {
                    "ok".into()
                } else {
                    "DIFFERENT".into()
                },
            ]);
        },
    ))?;
    print_table(
        &["PROVIDER", "COLLECTION", "STORE", "PROVIDER ROWS", "RESULT"],
        &rows,
    );
    for note in &notes {
        println!("{note}");
    }
    if diffs.is_empty() {
        println!("\nall collections match");
        return Ok(0);
    }
    for d in &diffs {
        println!(
            "\n{} / {}: store {} documents (checksum {:016x}), provider {} (checksum {:016x})",
            d.provider,
            d.collection,
            d.store.count,
            d.store.checksum,
            d.provider_digest.count,
            d.provider_digest.checksum
        );
        for (id, what) in &d.ids {
            println!("  {id}: {what}");
        }
    }
    Ok(1)
}

pub fn test_connection(ctx: &Context, name: Option<&str>) -> Outcome {
    let specs = specs(ctx, name)?;
    let rt = tokio_runtime()?;
    let mut failed = 0;
    rt.block_on(async {
        for spec in &specs {
            let result = match registry::create(spec) {
                Ok(p) => p.test_connection().await,
                Err(e) => Err(e),
            };
            match result {
                Ok(desc) => println!(
                    "ok      {} ({}) {}: {desc}",
                    spec.name,
                    spec.kind,
                    spec.redacted_connection()
                ),
                Err(e) => {
                    failed += 1;
                    println!(
                        "FAILED  {} ({}) {}: {e}",
                        spec.name,
                        spec.kind,
                        spec.redacted_connection()
                    );
                }
            }
        }
    });
    Ok(if failed > 0 { 1 } else { 0 })
}

/// This process's peak resident memory (Linux `VmHWM`).
pub fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(format!("{:.1} MB", kb / 1024.0))
}
