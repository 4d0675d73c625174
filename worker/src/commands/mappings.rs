//! `connector mappings check`.

use std::path::PathBuf;

use connector_core::{MappingSet, ProviderMapping};

use super::{Context, Outcome};

pub fn check(ctx: &Context, paths: &[PathBuf]) -> Outcome {
    let paths = if paths.is_empty() {
        ctx.config.mappings.clone()
    } else {
        paths.to_vec()
    };
    match MappingSet::load(&paths) {
        Ok(set) => {
            // Names resolve per provider instance: two collections on one
            // table, or two fields on one column, show only there.
            let set = std::sync::Arc::new(set);
            let conflicts: Vec<String> = ctx
                .config
                .providers
                .iter()
                .filter_map(|p| {
                    ProviderMapping::new(set.clone(), &p.name, p.kind)
                        .check()
                        .err()
                })
                .collect();
            if !conflicts.is_empty() {
                for e in &conflicts {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s)", conflicts.len());
                return Ok(1);
            }
            let synced: Vec<&str> = set.synced().map(|r| r.name.as_str()).collect();
            let skipped: Vec<&str> = set
                .rules()
                .iter()
                .filter(|r| !r.sync)
                .map(|r| r.name.as_str())
                .collect();
            println!(
                "ok: {} collection(s): {} synced{}",
                set.rules().len(),
                synced.len(),
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(", not synced: {}", skipped.join(", "))
                }
            );
            Ok(0)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.len());
            Ok(1)
        }
    }
}
