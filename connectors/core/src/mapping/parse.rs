//! Validation of mapping files: YAML tree → [`CollectionRule`]s, collecting
//! every problem as a `file:line:column: message` error instead of stopping at
//! the first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::filter::Filter;
use super::rules::{CollectionRule, IdMode, Origin, ProviderNames, Transform};
use super::transform;
use super::yaml_tree::{self, Key, Node, Pos};

/// One problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for MappingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.pos, self.message)
    }
}

impl std::error::Error for MappingError {}

const TOP_KEYS: &[&str] = &["version", "collections"];
const COLLECTION_KEYS: &[&str] = &[
    "id",
    "sync",
    "reason",
    "filter",
    "transforms",
    "counters",
    "propagate_truncate",
    "providers",
];
const ID_KEYS: &[&str] = &["mode", "field", "fields"];
const PROVIDER_KEYS: &[&str] = &["table", "schema", "columns"];
const TRANSFORMS: &[&str] = &["to_iso_string", "rename", "drop"];

/// Collects errors for one file.
struct Checker<'a> {
    file: &'a str,
    errors: Vec<MappingError>,
}

impl Checker<'_> {
    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(MappingError {
            file: self.file.to_string(),
            pos,
            message: message.into(),
        });
    }

    /// The entries of a mapping node, after reporting duplicate and unknown
    /// keys; `None` (with an error) when the node is not a mapping.
    fn entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: Option<&[&str]>,
    ) -> Option<Vec<&'n (Key, Node)>> {
        let Node::Map { entries, .. } = node else {
            self.err(
                node.pos(),
                format!("{what} must be a mapping, found {}", node.kind_name()),
            );
            return None;
        };
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        let mut out = Vec::new();
        for entry in entries {
            let key = &entry.0;
            if let Some(first) = seen.get(key.name.as_str()) {
                self.err(
                    key.pos,
                    format!(
                        "duplicate key `{}` in {what} (first at line {})",
                        key.name, first.line
                    ),
                );
                continue;
            }
            seen.insert(&key.name, key.pos);
            if let Some(allowed) = allowed {
                if !allowed.contains(&key.name.as_str()) {
                    let hint = suggest(&key.name, allowed)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_else(|| format!(" (expected one of: {})", allowed.join(", ")));
                    self.err(
                        key.pos,
                        format!("unknown key `{}` in {what}{hint}", key.name),
                    );
                    continue;
                }
            }
            out.push(entry);
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node {
            Node::Scalar { text, .. } if !text.is_empty() => Some(text.clone()),
            _ => {
                self.err(node.pos(), format!("{what} must be a non-empty name"));
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.to_json() {
            serde_json::Value::Bool(b) if matches!(node, Node::Scalar { .. }) => Some(b),
            _ => {
                self.err(node.pos(), format!("{what} must be true or false"));
                None
            }
        }
    }

    /// A name or a list of names.
    fn names(&mut self, node: &Node, what: &str) -> Vec<(String, Pos)> {
        match node {
            Node::Seq { items, .. } => items
                .iter()
                .filter_map(|i| self.string(i, what).map(|s| (s, i.pos())))
                .collect(),
            other => self
                .string(other, what)
                .map(|s| vec![(s, other.pos())])
                .unwrap_or_default(),
        }
    }
}

/// The closest allowed word, if it is close enough to be a typo.
fn suggest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(word, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses and validates one mapping file's text. `file` is the name used in
/// messages. Returns the rules, or every error found.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<CollectionRule>, Vec<MappingError>> {
    let mut ck = Checker {
        file,
        errors: Vec::new(),
    };
    let root = match yaml_tree::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            ck.err(
                Pos { line: 1, col: 1 },
                "the file is empty: expected `collections:`",
            );
            return Err(ck.errors);
        }
        Err(e) => {
            ck.err(e.pos, format!("YAML syntax error: {}", e.message));
            return Err(ck.errors);
        }
    };
    let mut rules = Vec::new();
    if let Some(top) = ck.entries(&root, "the file", Some(TOP_KEYS)) {
        let mut collections = None;
        for (key, value) in top {
            match key.name.as_str() {
                "version" => {
                    if value.to_json() != serde_json::json!(1) {
                        ck.err(
                            value.pos(),
                            "unsupported `version`: this connector reads version 1",
                        );
                    }
                }
                _ => collections = Some((key, value)),
            }
        }
        match collections {
            None => ck.err(root.pos(), "missing `collections:`"),
            Some((_, node)) => {
                if let Some(entries) = ck.entries(node, "`collections`", None) {
                    for (key, body) in entries {
                        if let Some(rule) = collection(&mut ck, key, body) {
                            rules.push(rule);
                        }
                    }
                }
            }
        }
    }
    // Duplicate collection names were reported by `entries` as duplicate
    // keys; say it in the user's words instead.
    for e in &mut ck.errors {
        if e.message.starts_with("duplicate key") && e.message.contains("in `collections`") {
            e.message = e
                .message
                .replacen("duplicate key", "duplicate collection", 1);
        }
    }
    check_tables_unique(&mut ck, &rules);
    if ck.errors.is_empty() {
        Ok(rules)
    } else {
        ck.errors.sort_by_key(|e| e.pos);
        Err(ck.errors)
    }
}

fn collection(ck: &mut Checker, key: &Key, body: &Node) -> Option<CollectionRule> {
    let what = format!("collection `{}`", key.name);
    let entries = ck.entries(body, &what, Some(COLLECTION_KEYS))?;
    let errors_before = ck.errors.len();
    let mut sync = true;
    let mut reason = None;
    let mut id = None;
    let mut id_pos = key.pos;
    let mut filter = None;
    let mut transforms = Vec::new();
    let mut counters: Vec<(String, Pos)> = Vec::new();
    let mut propagate_truncate = false;
    let mut providers = BTreeMap::new();
    for (k, v) in entries {
        match k.name.as_str() {
            "sync" => sync = ck.bool(v, "`sync`").unwrap_or(true),
            "reason" => reason = ck.string(v, "`reason`"),
            "id" => {
                id_pos = k.pos;
                id = id_mode(ck, v, &key.name);
            }
            "filter" => {
                let mut errs = Vec::new();
                filter = Filter::from_node(v, &mut errs);
                for (pos, msg) in errs {
                    ck.err(pos, format!("{what}: {msg}"));
                }
            }
            "transforms" => transforms = transform_list(ck, v, &what),
            "counters" => counters = ck.names(v, "a counter field"),
            "propagate_truncate" => {
                propagate_truncate = ck.bool(v, "`propagate_truncate`").unwrap_or(false)
            }
            "providers" => providers = provider_blocks(ck, v, &what),
            _ => unreachable!("entries() filtered unknown keys"),
        }
    }
    let id = match id {
        Some(id) => id,
        None if !sync => IdMode::MatchIds,
        None => {
            if ck.errors.len() == errors_before {
                ck.err(
                    key.pos,
                    format!("{what}: missing `id` (e.g. `id: {{mode: single_field, field: {}_id}}`, or `sync: false`)", key.name.trim_end_matches('s')),
                );
            }
            return None;
        }
    };
    // Cross-field checks.
    let mut seen_counters: Vec<&str> = Vec::new();
    for (c, pos) in &counters {
        if id.fields().contains(c) {
            ck.err(
                *pos,
                format!("{what}: counter `{c}` is also an id field; an id cannot be a counter"),
            );
        }
        if seen_counters.contains(&c.as_str()) {
            ck.err(*pos, format!("{what}: counter `{c}` is listed twice"));
        }
        seen_counters.push(c);
    }
    for t in &transforms {
        if let Transform::Drop(fields) = t {
            for f in fields {
                if id.fields().contains(f) {
                    ck.err(
                        id_pos,
                        format!("{what}: id field `{f}` is dropped by a transform"),
                    );
                }
                if seen_counters.contains(&f.as_str()) {
                    ck.err(
                        id_pos,
                        format!("{what}: counter `{f}` is dropped by a transform"),
                    );
                }
            }
        }
    }
    // An id field must survive the transforms both ways: the key column
    // the sinks write by is the one the inbound id was read from.
    for f in id.fields() {
        let column = transform::outbound_name(&transforms, f);
        match transform::inbound_name(&transforms, &column) {
            Some(back) if back == *f => {}
            Some(other) => ck.err(
                id_pos,
                format!("{what}: id field `{f}` is renamed to `{other}` by a transform; name the id by its document field (`{other}`)"),
            ),
            None => {} // dropped: reported above
        }
    }
    if ck.errors.len() > errors_before {
        return None;
    }
    Some(CollectionRule {
        name: key.name.clone(),
        origin: Origin {
            file: ck.file.to_string(),
            pos: key.pos,
        },
        sync,
        reason,
        id,
        filter,
        transforms,
        counters: Arc::from(counters.into_iter().map(|(c, _)| c).collect::<Vec<_>>()),
        propagate_truncate,
        providers,
    })
}

fn id_mode(ck: &mut Checker, node: &Node, collection: &str) -> Option<IdMode> {
    let what = format!("`id` of collection `{collection}`");
    let entries = ck.entries(node, &what, Some(ID_KEYS))?;
    let get = |name: &str| entries.iter().find(|(k, _)| k.name == name);
    let Some((_, mode_node)) = get("mode") else {
        ck.err(
            node.pos(),
            format!("{what}: missing `mode` (match_ids, single_field or multiple_fields)"),
        );
        return None;
    };
    let mode = ck.string(mode_node, "`mode`")?;
    let field = get("field");
    let fields = get("fields");
    match mode.as_str() {
        "match_ids" => {
            for (k, _) in [field, fields].into_iter().flatten() {
                ck.err(
                    k.pos,
                    format!("{what}: `{}` is not used with mode match_ids", k.name),
                );
            }
            Some(IdMode::MatchIds)
        }
        "single_field" => {
            if let Some((k, _)) = fields {
                ck.err(
                    k.pos,
                    format!("{what}: single_field takes `field`, not `fields`"),
                );
            }
            let Some((_, f)) = field else {
                ck.err(
                    mode_node.pos(),
                    format!("{what}: single_field needs `field: <name>`"),
                );
                return None;
            };
            Some(IdMode::SingleField(ck.string(f, "`field`")?))
        }
        "multiple_fields" => {
            if let Some((k, _)) = field {
                ck.err(
                    k.pos,
                    format!("{what}: multiple_fields takes `fields: [a, b]`, not `field`"),
                );
            }
            let Some((_, fs)) = fields else {
                ck.err(
                    mode_node.pos(),
                    format!("{what}: multiple_fields needs `fields: [a, b]`"),
                );
                return None;
            };
            let Node::Seq { .. } = fs else {
                ck.err(
                    fs.pos(),
                    format!("{what}: `fields` must be a list of field names"),
                );
                return None;
            };
            let names = ck.names(fs, "an id field");
            let mut out: Vec<String> = Vec::new();
            for (n, pos) in names {
                if out.contains(&n) {
                    ck.err(pos, format!("{what}: field `{n}` is listed twice"));
                } else {
                    out.push(n);
                }
            }
            if out.is_empty() {
                ck.err(fs.pos(), format!("{what}: `fields` is empty"));
                return None;
            }
            Some(IdMode::MultipleFields(out))
        }
        other => {
            let hint = suggest(other, &["match_ids", "single_field", "multiple_fields"])
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            ck.err(
                mode_node.pos(),
                format!("{what}: unknown mode `{other}` (match_ids, single_field or multiple_fields){hint}"),
            );
            None
        }
    }
}

fn transform_list(ck: &mut Checker, node: &Node, what: &str) -> Vec<Transform> {
    let Node::Seq { items, .. } = node else {
        ck.err(
            node.pos(),
            format!("{what}: `transforms` must be a list, e.g. `- to_iso_string: order_date`"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(entries) = ck.entries(item, "a transform", None) else {
            continue;
        };
        if entries.len() != 1 {
            ck.err(
                item.pos(),
                format!("{what}: each transform is one `name: argument` pair"),
            );
            continue;
        }
        let (k, v) = entries[0];
        match k.name.as_str() {
            "to_iso_string" => {
                if let Some(f) = ck.string(v, "`to_iso_string` (a field name)") {
                    out.push(Transform::ToIsoString(f));
                }
            }
            "drop" => {
                let fields: Vec<String> = ck
                    .names(v, "`drop` (field names)")
                    .into_iter()
                    .map(|(f, _)| f)
                    .collect();
                if !fields.is_empty() {
                    out.push(Transform::Drop(fields));
                }
            }
            "rename" => {
                let Some(args) = ck.entries(v, "`rename`", Some(&["from", "to"])) else {
                    continue;
                };
                let from = args.iter().find(|(k, _)| k.name == "from");
                let to = args.iter().find(|(k, _)| k.name == "to");
                match (from, to) {
                    (Some((_, f)), Some((_, t))) => {
                        if let (Some(from), Some(to)) =
                            (ck.string(f, "`from`"), ck.string(t, "`to`"))
                        {
                            out.push(Transform::Rename { from, to });
                        }
                    }
                    _ => ck.err(v.pos(), format!("{what}: `rename` needs `from` and `to`")),
                }
            }
            other => {
                let hint = suggest(other, TRANSFORMS)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| format!(" (expected one of: {})", TRANSFORMS.join(", ")));
                ck.err(k.pos, format!("{what}: unknown transform `{other}`{hint}"));
            }
        }
    }
    out
}

fn provider_blocks(ck: &mut Checker, node: &Node, what: &str) -> BTreeMap<String, ProviderNames> {
    let mut out = BTreeMap::new();
    let Some(entries) = ck.entries(node, &format!("`providers` of {what}"), None) else {
        return out;
    };
    for (k, v) in entries {
        if !crate::provider::valid_provider_name(&k.name) {
            ck.err(k.pos, format!("{what}: `{}` is not a provider kind or instance name (lowercase letters, digits, `_`, `-`)", k.name));
            continue;
        }
        let block_what = format!("`providers.{}` of {what}", k.name);
        let Some(fields) = ck.entries(v, &block_what, Some(PROVIDER_KEYS)) else {
            continue;
        };
        let mut names = ProviderNames::default();
        for (fk, fv) in fields {
            match fk.name.as_str() {
                "table" => names.table = ck.string(fv, "`table`"),
                "schema" => names.schema = ck.string(fv, "`schema`"),
                _ => {
                    if let Some(cols) = ck.entries(fv, "`columns` (document field: column)", None) {
                        for (ck_key, cv) in cols {
                            if let Some(col) = ck.string(cv, "a column name") {
                                if let Some((other, _)) =
                                    names.columns.iter().find(|(_, c)| **c == col)
                                {
                                    ck.err(
                                        cv.pos(),
                                        format!("{block_what}: fields `{other}` and `{}` both map to column `{col}`; give each its own column", ck_key.name),
                                    );
                                    continue;
                                }
                                names.columns.insert(ck_key.name.clone(), col);
                            }
                        }
                    }
                }
            }
        }
        out.insert(k.name.clone(), names);
    }
    out
}

/// Two collections may not read the same table of the same provider: an
/// incoming change would not know where it belongs.
fn check_tables_unique(ck: &mut Checker, rules: &[CollectionRule]) {
    let mut providers: Vec<&str> = vec!["*"];
    for rule in rules {
        providers.extend(rule.providers.keys().map(String::as_str));
    }
    providers.sort_unstable();
    providers.dedup();
    let mut reported = Vec::new();
    for provider in providers {
        let mut seen: BTreeMap<&str, &CollectionRule> = BTreeMap::new();
        for rule in rules.iter().filter(|r| r.sync) {
            let table = rule.table_for(provider, provider);
            match seen.get(table) {
                Some(other) if !reported.contains(&rule.name) => {
                    reported.push(rule.name.clone());
                    let whose = if provider == "*" {
                        String::new()
                    } else {
                        format!(" in provider `{provider}`")
                    };
                    ck.err(
                        rule.origin.pos,
                        format!(
                            "collection `{}` reads table `{table}`{whose}, which collection `{}` already reads",
                            rule.name, other.name
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    seen.insert(table, rule);
                }
            }
        }
    }
}
