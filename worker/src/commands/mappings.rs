//! `connector mappings check`.

use std::path::PathBuf;

use connector_core::MappingSet;

use super::{Context, Outcome};

pub fn check(ctx: &Context, paths: &[PathBuf]) -> Outcome {
    let paths = if paths.is_empty() {
        ctx.config.mappings.clone()
    } else {
        paths.to_vec()
    };
    match MappingSet::load(&paths) {
        Ok(set) => {
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
