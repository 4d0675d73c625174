//! YAML mapping rules: which tables sync, how their `_id` is built, which
//! records pass, which fields transform or count, and what each provider
//! calls things.
//!
//! A [`MappingSet`] is every collection of every file under `mappings/`;
//! [`ProviderMapping`] binds it to one provider instance and does the per-record
//! work both ways (inbound: provider row → document change; outbound:
//! merged document → provider row).

mod apply;
pub mod filter;
mod parse;
mod rules;
pub mod transform;
pub mod yaml_tree;

use std::path::{Path, PathBuf};

pub use apply::{Inbound, OutboundRow, ProviderMapping, Rejection};
pub use parse::{parse_file, MappingError};
pub use rules::{CollectionRule, IdMode, Origin, ProviderNames, Transform};
pub use transform::to_iso_string;
pub use yaml_tree::Pos;

/// Every collection rule, from one or more files.
#[derive(Debug, Clone, Default)]
pub struct MappingSet {
    rules: Vec<CollectionRule>,
}

impl MappingSet {
    /// Parses one file's text (`file` names it in messages).
    pub fn from_str(file: &str, text: &str) -> Result<Self, Vec<MappingError>> {
        let mut set = MappingSet::default();
        set.add(parse_file(file, text)?).map(|()| set)
    }

    /// Loads files and directories (every `*.yaml` / `*.yml` inside, sorted),
    /// reporting every error of every file.
    pub fn load(paths: &[PathBuf]) -> Result<Self, Vec<MappingError>> {
        let mut set = MappingSet::default();
        let mut errors = Vec::new();
        for file in expand(paths, &mut errors) {
            let label = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Err(e) => errors.push(MappingError {
                    file: label,
                    pos: Pos { line: 1, col: 1 },
                    message: format!("cannot read: {e}"),
                }),
                Ok(text) => match parse_file(&label, &text) {
                    Err(mut es) => errors.append(&mut es),
                    Ok(rules) => {
                        if let Err(mut es) = set.add(rules) {
                            errors.append(&mut es);
                        }
                    }
                },
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, rules: Vec<CollectionRule>) -> Result<(), Vec<MappingError>> {
        let mut errors = Vec::new();
        for rule in rules {
            if let Some(first) = self.collection(&rule.name) {
                errors.push(MappingError {
                    file: rule.origin.file.clone(),
                    pos: rule.origin.pos,
                    message: format!(
                        "duplicate collection `{}` (first defined at {})",
                        rule.name, first.origin
                    ),
                });
            } else {
                self.rules.push(rule);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn rules(&self) -> &[CollectionRule] {
        &self.rules
    }

    pub fn collection(&self, name: &str) -> Option<&CollectionRule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The collections that sync (not `sync: false`).
    pub fn synced(&self) -> impl Iterator<Item = &CollectionRule> {
        self.rules.iter().filter(|r| r.sync)
    }
}

fn expand(paths: &[PathBuf], errors: &mut Vec<MappingError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| is_yaml(f))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.push(MappingError {
                    file: p.display().to_string(),
                    pos: Pos { line: 1, col: 1 },
                    message: format!("cannot read directory: {e}"),
                }),
            }
        } else {
            files.push(p.clone());
        }
    }
    files
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

#[cfg(test)]
mod tests;
