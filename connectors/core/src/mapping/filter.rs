//! Row filters: keep only records whose top-level fields match.
//!
//! Written MongoDB-style, which ops already know from the Ditto connector:
//! `{deleted: false, active: true}` (every condition must hold), comparisons
//! `{total: {$gte: 100}}` with `$eq $ne $gt $gte $lt $lte $in`, and `$and: [...]`.
//! Numbers compare as numbers, strings lexicographically (ISO timestamps sort
//! correctly); a comparison between different types, or with a missing
//! field, does not match (`$ne` does).

use serde_json::{Map, Value};
use std::cmp::Ordering;

use super::yaml_tree::{Node, Pos};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Cmp {
        field: String,
        op: CmpOp,
        value: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
}

impl CmpOp {
    fn parse(s: &str) -> Option<CmpOp> {
        Some(match s {
            "$eq" => CmpOp::Eq,
            "$ne" => CmpOp::Ne,
            "$gt" => CmpOp::Gt,
            "$gte" => CmpOp::Gte,
            "$lt" => CmpOp::Lt,
            "$lte" => CmpOp::Lte,
            "$in" => CmpOp::In,
            _ => return None,
        })
    }
}

impl Filter {
    /// Whether a document (top-level fields) passes the filter.
    pub fn matches(&self, doc: &Map<String, Value>) -> bool {
        match self {
            Filter::All(parts) => parts.iter().all(|p| p.matches(doc)),
            Filter::Cmp { field, op, value } => {
                let actual = doc.get(field);
                match op {
                    CmpOp::Eq => actual.is_some_and(|a| json_eq(a, value)),
                    CmpOp::Ne => !actual.is_some_and(|a| json_eq(a, value)),
                    CmpOp::In => actual.is_some_and(|a| {
                        value
                            .as_array()
                            .is_some_and(|vs| vs.iter().any(|v| json_eq(a, v)))
                    }),
                    CmpOp::Gt | CmpOp::Gte | CmpOp::Lt | CmpOp::Lte => {
                        match actual.and_then(|a| compare(a, value)) {
                            None => false,
                            Some(ord) => match op {
                                CmpOp::Gt => ord == Ordering::Greater,
                                CmpOp::Gte => ord != Ordering::Less,
                                CmpOp::Lt => ord == Ordering::Less,
                                _ => ord != Ordering::Greater,
                            },
                        }
                    }
                }
            }
        }
    }

    /// The top-level fields the filter reads.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Filter::All(parts) => parts.iter().flat_map(|p| p.fields()).collect(),
            Filter::Cmp { field, .. } => vec![field.as_str()],
        }
    }

    /// Builds a filter from its YAML node, pushing every problem into `errors`.
    pub(crate) fn from_node(node: &Node, errors: &mut Vec<(Pos, String)>) -> Option<Filter> {
        let Node::Map { entries, pos } = node else {
            errors.push((
                node.pos(),
                format!(
                    "`filter` must be a mapping of field conditions, found {}",
                    node.kind_name()
                ),
            ));
            return None;
        };
        let mut parts = Vec::new();
        if entries.is_empty() {
            errors.push((
                *pos,
                "`filter` is empty; remove it to keep every record".into(),
            ));
        }
        for (key, value) in entries {
            if key.name == "$and" {
                match value {
                    Node::Seq { items, .. } => {
                        for item in items {
                            if let Some(f) = Filter::from_node(item, errors) {
                                parts.push(f);
                            }
                        }
                    }
                    other => errors.push((other.pos(), "`$and` takes a list of conditions".into())),
                }
                continue;
            }
            if key.name.starts_with('$') {
                errors.push((
                    key.pos,
                    format!(
                        "unknown filter operator `{}` (expected a field name or `$and`)",
                        key.name
                    ),
                ));
                continue;
            }
            match value {
                Node::Map { entries: ops, .. }
                    if ops.first().is_some_and(|(k, _)| k.name.starts_with('$')) =>
                {
                    for (op_key, operand) in ops {
                        let Some(op) = CmpOp::parse(&op_key.name) else {
                            errors.push((
                                op_key.pos,
                                format!(
                                    "unknown comparison `{}` for field `{}` (expected $eq, $ne, $gt, $gte, $lt, $lte or $in)",
                                    op_key.name, key.name
                                ),
                            ));
                            continue;
                        };
                        let value = operand.to_json();
                        if op == CmpOp::In && !value.is_array() {
                            errors.push((operand.pos(), "`$in` takes a list of values".into()));
                            continue;
                        }
                        parts.push(Filter::Cmp {
                            field: key.name.clone(),
                            op,
                            value,
                        });
                    }
                }
                other => parts.push(Filter::Cmp {
                    field: key.name.clone(),
                    op: CmpOp::Eq,
                    value: other.to_json(),
                }),
            }
        }
        Some(Filter::All(parts))
    }
}

/// Equal as values, whatever form a database gives them: numbers by value,
/// and a boolean equal to 1 or 0 (SQLite, MariaDB's TINYINT(1) and DB2's
/// SMALLINT flags hold booleans as numbers). Strictly, `deleted: false`
/// left out every such row, and the fleet's own writes came back filtered.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Bool(flag), Value::Number(n)) | (Value::Number(n), Value::Bool(flag)) => {
            n.as_f64() == Some(if *flag { 1.0 } else { 0.0 })
        }
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::yaml_tree::parse;
    use serde_json::json;

    fn filter(yaml: &str) -> Filter {
        let node = parse(yaml).unwrap().unwrap();
        let mut errors = Vec::new();
        let f = Filter::from_node(&node, &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        f
    }

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn equality_conditions_are_anded() {
        let f = filter("{deleted: false, active: true}");
        assert!(f.matches(&doc(json!({"deleted": false, "active": true, "x": 1}))));
        assert!(!f.matches(&doc(json!({"deleted": true, "active": true}))));
        assert!(!f.matches(&doc(json!({"active": true}))));
    }

    #[test]
    fn a_boolean_condition_matches_a_flag_held_as_a_number() {
        let f = filter("{deleted: false}");
        assert!(f.matches(&doc(json!({"deleted": 0}))));
        assert!(!f.matches(&doc(json!({"deleted": 1}))));
        assert!(!f.matches(&doc(json!({"deleted": "0"}))));
        let f = filter("{deleted: {$ne: true}}");
        assert!(f.matches(&doc(json!({"deleted": 0}))));
        assert!(!f.matches(&doc(json!({"deleted": 1.0}))));
    }

    #[test]
    fn comparisons_respect_types() {
        let f = filter("{total: {$gte: 100, $lt: 200}, status: {$in: [open, paid]}}");
        assert!(f.matches(&doc(json!({"total": 100, "status": "open"}))));
        assert!(f.matches(&doc(json!({"total": 150.5, "status": "paid"}))));
        assert!(!f.matches(&doc(json!({"total": 200, "status": "open"}))));
        assert!(!f.matches(&doc(json!({"total": "150", "status": "open"}))));
        assert!(!f.matches(&doc(json!({"total": 150, "status": "void"}))));
    }

    #[test]
    fn ne_matches_missing_fields_and_and_nests() {
        let f = filter("{$and: [{a: {$ne: 1}}, {b: {$gt: '2024-01-01'}}]}");
        assert!(f.matches(&doc(json!({"b": "2024-06-01T00:00:00Z"}))));
        assert!(!f.matches(&doc(json!({"a": 1, "b": "2025-01-01"}))));
        assert!(!f.matches(&doc(json!({"b": "2023-01-01"}))));
        assert_eq!(f.fields(), vec!["a", "b"]);
    }

    #[test]
    fn unknown_operators_are_reported_with_position() {
        let node = parse("a: {$gt: 1, $like: x}\n$or: []\n").unwrap().unwrap();
        let mut errors = Vec::new();
        Filter::from_node(&node, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].1.contains("$like"));
        assert_eq!(errors[1].0, Pos { line: 2, col: 1 });
    }
}
