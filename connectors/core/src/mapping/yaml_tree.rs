//! A YAML document as a tree whose every node knows its line and column.
//!
//! Mapping files are validated by hand from this tree rather than through
//! serde, so that one pass reports *every* error (unknown key, duplicate key,
//! missing setting, …) with its `line:column`, not just the first one.
//! Anchors and aliases are rejected: a mapping file is short, and an alias
//! would make an error's location ambiguous.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A 1-based line and column in a mapping file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar with its text and whether it was quoted (a quoted `"true"` is a string).
    Scalar {
        text: String,
        quoted: bool,
        pos: Pos,
    },
    Seq {
        items: Vec<Node>,
        pos: Pos,
    },
    /// Keys keep their order and their own positions; duplicates are kept so
    /// the validator can report them.
    Map {
        entries: Vec<(Key, Node)>,
        pos: Pos,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq { pos, .. } | Node::Map { pos, .. } => *pos,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }

    /// Converts a scalar to JSON by the YAML 1.2 core schema (null, bool, int,
    /// float, else string); lists and mappings convert recursively.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Scalar { text, quoted, .. } => {
                if *quoted {
                    return Value::String(text.clone());
                }
                match text.as_str() {
                    "~" | "null" | "Null" | "NULL" | "" => Value::Null,
                    "true" | "True" | "TRUE" => Value::Bool(true),
                    "false" | "False" | "FALSE" => Value::Bool(false),
                    t => {
                        if let Ok(i) = t.parse::<i64>() {
                            Value::from(i)
                        } else if let Some(f) = t
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .and_then(serde_json::Number::from_f64)
                        {
                            Value::Number(f)
                        } else {
                            Value::String(t.to_string())
                        }
                    }
                }
            }
            Node::Seq { items, .. } => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map { entries, .. } => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A syntax error from the YAML parser.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. An empty file yields `None`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        };
        let node = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        pos,
                        message: "a mapping file holds one YAML document; found a second `---`"
                            .into(),
                    });
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(SyntaxError {
                    pos,
                    message: "aliases (*name) are not supported in mapping files".into(),
                })
            }
            Event::Scalar(text, style, anchor, _) => {
                if anchor != 0 {
                    return Err(SyntaxError {
                        pos,
                        message: "anchors (&name) are not supported in mapping files".into(),
                    });
                }
                Node::Scalar {
                    text: text.into_owned(),
                    quoted: !matches!(style, ScalarStyle::Plain),
                    pos,
                }
            }
            Event::SequenceStart(_, _) => {
                stack.push(Frame::Seq(Vec::new(), pos));
                continue;
            }
            Event::MappingStart(_, _) => {
                stack.push(Frame::Map(Vec::new(), None, pos));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(items, pos)) => Node::Seq { items, pos },
                Some(Frame::Map(entries, _, pos)) => Node::Map { entries, pos },
                None => continue,
            },
            _ => continue,
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _)) => match pending.take() {
                None => {
                    let key = match node {
                        Node::Scalar { text, pos, .. } => Key { name: text, pos },
                        other => {
                            return Err(SyntaxError {
                                pos: other.pos(),
                                message: "mapping keys must be plain names".into(),
                            })
                        }
                    };
                    *pending = Some(key);
                }
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(root)
}

enum Frame {
    Seq(Vec<Node>, Pos),
    Map(Vec<(Key, Node)>, Option<Key>, Pos),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_keys() {
        let root = parse("a: 1\nb:\n  c: [x, \"y\"]\n").unwrap().unwrap();
        let Node::Map { entries, .. } = root else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[1].0.name, "b");
        let Node::Map { entries: inner, .. } = &entries[1].1 else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 3, col: 3 });
        assert_eq!(entries[1].1.to_json(), serde_json::json!({"c": ["x", "y"]}));
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let root = parse("[1, -2, 1.5, true, null, \"true\", abc, '7']")
            .unwrap()
            .unwrap();
        assert_eq!(
            root.to_json(),
            serde_json::json!([1, -2, 1.5, true, null, "true", "abc", "7"])
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn duplicate_keys_are_kept_for_the_validator() {
        let root = parse("a: 1\na: 2\n").unwrap().unwrap();
        let Node::Map { entries, .. } = root else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].0.pos.line, 2);
    }

    #[test]
    fn empty_file_is_none() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }
}
