//! `connector conflicts`: fields two providers changed concurrently, newest
//! first, with the value kept and the value lost
//! ([`connector_store::conflicts`]).

use super::status::print_table;
use super::{ago, print_json_with_at, Context, Outcome};

pub fn list(ctx: &Context, provider: Option<&str>, limit: usize, as_json: bool) -> Outcome {
    let conflicts = match ctx.existing_store()? {
        Some(s) => s.recent_conflicts(provider, limit)?,
        None => Vec::new(),
    };
    if as_json {
        print_json_with_at(&conflicts, |c| c.at_ms)?;
        return Ok(0);
    }
    if conflicts.is_empty() {
        println!("no conflicts in the last 7 days");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = conflicts
        .iter()
        .map(|c| {
            vec![
                ago(Some(c.at_ms)),
                c.collection.clone(),
                c.id.clone(),
                c.field.clone(),
                format!("{} {}", c.kept_from, c.kept),
                format!("{} {}", c.lost_from, c.lost),
            ]
        })
        .collect();
    print_table(
        &["WHEN", "COLLECTION", "ID", "FIELD", "KEPT", "LOST"],
        &rows,
    );
    println!(
        "\nTwo providers changed these fields without either seeing the other's value; \
         the later change is kept everywhere. Kept 7 days."
    );
    Ok(0)
}
