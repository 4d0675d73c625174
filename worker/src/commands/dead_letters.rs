//! `connector dead-letters list | retry | discard`.

use std::sync::Arc;

use connector_core::{Inbound, ProviderMapping, RawChange};
use connector_store::{DeadLetter, SourceApply, Store, SINK_STAGE, WAITING_STAGE};

use super::status::print_table;
use super::{ago, print_json_with_at, Context, Failure, Outcome};
use crate::cli::DeadLetterSelection;

pub fn list(ctx: &Context, provider: Option<&str>, limit: usize, as_json: bool) -> Outcome {
    let letters = match ctx.existing_store()? {
        Some(s) => s.dead_letters(provider, limit)?,
        None => Vec::new(),
    };
    if as_json {
        print_json_with_at(&letters, |d| d.at_ms)?;
        return Ok(0);
    }
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                ago(Some(d.at_ms)),
                d.provider.clone(),
                d.collection.clone().unwrap_or_else(|| "-".into()),
                d.stage.clone(),
                d.field.clone().unwrap_or_else(|| "-".into()),
                d.attempts.to_string(),
                d.reason.clone(),
            ]
        })
        .collect();
    let total = ctx
        .existing_store()?
        .map(|s| s.dead_letter_count(provider))
        .transpose()?
        .unwrap_or(0);
    print_table(
        &[
            "ID",
            "WHEN",
            "PROVIDER",
            "COLLECTION",
            "STAGE",
            "FIELD",
            "TRIES",
            "REASON",
        ],
        &rows,
    );
    if total as usize > letters.len() {
        println!(
            "\n{} more (the oldest {} shown): --limit N",
            total as usize - letters.len(),
            letters.len()
        );
    }
    println!("\nsee a record: connector dead-letters list --json; then `retry` or `discard` by id");
    Ok(0)
}

fn select(store: &Store, sel: &DeadLetterSelection) -> Result<Vec<DeadLetter>, Failure> {
    if sel.all {
        return Ok(store.dead_letters(sel.provider.as_deref(), usize::MAX >> 1)?);
    }
    if sel.ids.is_empty() {
        return Err(Failure::new("name dead letter ids, or --all"));
    }
    let mut out = Vec::new();
    for id in &sel.ids {
        match store.dead_letter(*id)? {
            // `-p` with ids: the ids must be that provider's.
            Some(d) if sel.provider.as_deref().is_some_and(|p| p != d.provider) => {
                return Err(Failure::new(format!(
                    "dead letter {id} is {}'s, not {}'s",
                    d.provider,
                    sel.provider.as_deref().unwrap_or_default()
                )))
            }
            Some(d) => out.push(d),
            None => return Err(Failure::new(format!("no dead letter with id {id}"))),
        }
    }
    Ok(out)
}

pub fn discard(ctx: &Context, sel: &DeadLetterSelection) -> Outcome {
    let Some(mut store) = ctx.existing_store()? else {
        println!("no dead letters");
        return Ok(0);
    };
    let chosen = select(&store, sel)?;
    // `--all` leaves the writes waiting for a referenced row: they land by
    // themselves, and discarded, the row never reached that database (no
    // later write of its parent brings it back). By id, as asked.
    let (kept, ids): (Vec<&DeadLetter>, Vec<&DeadLetter>) = chosen
        .iter()
        .partition(|d| sel.all && d.stage == connector_store::WAITING_STAGE);
    let ids: Vec<i64> = ids.iter().map(|d| d.id).collect();
    let n = store.discard_dead_letters(&ids)?;
    println!("discarded {n} dead letter(s)");
    if !kept.is_empty() {
        println!(
            "kept {} write(s) waiting for rows they reference (tried again by their sink; discard them by id)",
            kept.len()
        );
    }
    Ok(0)
}

/// Source records are mapped again with the current mapping files and
/// merged; sink records are put back on the log for the sink to write.
pub fn retry(ctx: &Context, sel: &DeadLetterSelection) -> Outcome {
    let Some(mut store) = ctx.existing_store()? else {
        println!("no dead letters");
        return Ok(0);
    };
    let letters = select(&store, sel)?;
    let mappings = ctx.mappings()?;
    let (mut ok, mut failed) = (0, 0);
    for d in letters {
        match retry_one(ctx, &mut store, &mappings, &d) {
            Ok(msg) => {
                ok += 1;
                println!("{}: {msg}", d.id);
            }
            Err(reason) => {
                failed += 1;
                store.dead_letter_failed_again(d.id, &reason)?;
                println!("{}: still failing: {reason}", d.id);
            }
        }
    }
    println!("{ok} retried, {failed} still failing");
    Ok(if failed > 0 { 1 } else { 0 })
}

fn retry_one(
    ctx: &Context,
    store: &mut Store,
    mappings: &Arc<connector_core::MappingSet>,
    d: &DeadLetter,
) -> Result<String, String> {
    if d.stage == SINK_STAGE || d.stage == WAITING_STAGE {
        // Only a configured provider has a sink to write it.
        let spec = ctx
            .config
            .provider(&d.provider)
            .filter(|p| p.enabled)
            .ok_or_else(|| format!("provider `{}` is no longer configured (or not enabled): no sink would write it", d.provider))?;
        let mapping = ProviderMapping::new(mappings.clone(), &spec.name, spec.kind);
        if let Some(c) = d.collection.as_deref().filter(|c| !mapping.syncs(c)) {
            return Err(format!(
                "`{}` no longer syncs {c}: no sink would write it",
                d.provider
            ));
        }
        return match store.requeue_for_sink(d) {
            Ok(true) => Ok(format!("queued for the {} sink", d.provider)),
            Ok(false) => Err("the record does not name its document".into()),
            Err(e) => Err(e.to_string()),
        };
    }
    let raw: RawChange = serde_json::from_value(d.record.clone())
        .map_err(|_| "this record cannot be replayed; fix it at the source (the next change will sync it) and discard it".to_string())?;
    let spec = ctx
        .config
        .provider(&d.provider)
        .ok_or_else(|| format!("provider `{}` is no longer configured", d.provider))?;
    let mapping = ProviderMapping::new(mappings.clone(), &spec.name, spec.kind);
    let change = match mapping.inbound(&raw) {
        Inbound::Change(c) => c,
        Inbound::Rejected(r) => return Err(r.to_string()),
        Inbound::NotSynced | Inbound::Filtered { .. } | Inbound::TruncateSkipped { .. } => {
            store
                .discard_dead_letters(&[d.id])
                .map_err(|e| e.to_string())?;
            return Ok("the mapping now leaves this record out; discarded".into());
        }
    };
    // The provider changed the document after this record: merging it now
    // would take it for the provider's newest (its values and, for a
    // counter, a delta against the newer value).
    if let Some(ts) = change.commit_ts_ms {
        if store
            .changed_by_since(&change.collection, &change.id, &d.provider, ts)
            .map_err(|e| e.to_string())?
        {
            store
                .discard_dead_letters(&[d.id])
                .map_err(|e| e.to_string())?;
            return Ok(format!(
                "{} changed {} {} after this record; the record is stale, discarded",
                d.provider, change.collection, change.id
            ));
        }
    }
    let applied = store
        .apply_source(
            &d.provider,
            SourceApply {
                changes: std::slice::from_ref(&change),
                received: 1,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
    // Either merged, or kept again as a new dead letter with today's reason.
    store
        .discard_dead_letters(&[d.id])
        .map_err(|e| e.to_string())?;
    if applied.dead_letters > 0 {
        return Err("the store rejected it again; see the newest dead letter".into());
    }
    Ok(format!("merged into {} {}", change.collection, change.id))
}
