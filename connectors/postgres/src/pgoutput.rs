//! A decoder for the row messages of pgoutput protocol version 1.
//!
//! The transport (`pgwire-replication`) turns Begin, Commit and logical
//! Message records into events of its own and hands every other pgoutput
//! message over as raw bytes; this module decodes those: Relation, Type,
//! Insert, Update, Delete, Truncate and Origin. It is pure and total: any
//! input, however malformed, yields a value or an error, never a panic
//! (property-tested below).

use std::fmt;

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value the server did not send.
    UnchangedToast,
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    /// `old` is the full old row (REPLICA IDENTITY FULL) or only the key
    /// columns (`key_only`, when the key changed), if sent at all.
    Update {
        relation: u32,
        old: Option<Vec<Datum>>,
        key_only: bool,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
        key_only: bool,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    Origin {
        lsn: u64,
        name: String,
    },
    /// Begin, Commit, Message and anything newer: handled elsewhere or ignored.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pgoutput: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(format!("truncated {what}")));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn cstr(&mut self, what: &str) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| DecodeError(format!("unterminated {what}")))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.u16("tuple column count")? as usize;
        // Each column takes at least one byte: reject impossible counts early.
        if n > self.buf.len() {
            return Err(DecodeError(format!(
                "tuple claims {n} columns in {} bytes",
                self.buf.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = self.u32("column length")? as usize;
                    let bytes = self.take(len, "column value")?.to_vec();
                    if kind == b't' {
                        Datum::Text(bytes)
                    } else {
                        Datum::Binary(bytes)
                    }
                }
                other => return Err(DecodeError(format!("unknown column kind {other:#04x}"))),
            });
        }
        Ok(out)
    }
}

/// Decodes one pgoutput message.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf };
    let tag = r.u8("message tag")?;
    Ok(match tag {
        b'R' => {
            let oid = r.u32("relation oid")?;
            let namespace = r.cstr("namespace")?;
            let name = r.cstr("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            let n = r.u16("column count")? as usize;
            if n > r.buf.len() {
                return Err(DecodeError(format!(
                    "relation claims {n} columns in {} bytes",
                    r.buf.len()
                )));
            }
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8("column flags")?;
                let name = r.cstr("column name")?;
                let type_oid = r.u32("column type")?;
                let type_modifier = r.u32("type modifier")? as i32;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name,
                    type_oid,
                    type_modifier,
                });
            }
            Message::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            oid: r.u32("type oid")?,
            namespace: r.cstr("type namespace")?,
            name: r.cstr("type name")?,
        },
        b'I' => {
            let relation = r.u32("relation oid")?;
            match r.u8("tuple marker")? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => {
                    return Err(DecodeError(format!(
                        "insert: expected N, found {other:#04x}"
                    )))
                }
            }
        }
        b'U' => {
            let relation = r.u32("relation oid")?;
            let mut old = None;
            let mut key_only = false;
            let mut marker = r.u8("tuple marker")?;
            if marker == b'K' || marker == b'O' {
                key_only = marker == b'K';
                old = Some(r.tuple()?);
                marker = r.u8("tuple marker")?;
            }
            if marker != b'N' {
                return Err(DecodeError(format!(
                    "update: expected N, found {marker:#04x}"
                )));
            }
            Message::Update {
                relation,
                old,
                key_only,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("relation oid")?;
            let marker = r.u8("tuple marker")?;
            if marker != b'K' && marker != b'O' {
                return Err(DecodeError(format!(
                    "delete: expected K or O, found {marker:#04x}"
                )));
            }
            Message::Delete {
                relation,
                key_only: marker == b'K',
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32("relation count")? as usize;
            let options = r.u8("truncate options")?;
            if n > r.buf.len() / 4 {
                return Err(DecodeError(format!("truncate claims {n} relations")));
            }
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32("relation oid")?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'O' => Message::Origin {
            lsn: r.u64("origin lsn")?,
            name: r.cstr("origin name")?,
        },
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn tuple(out: &mut Vec<u8>, cols: &[Option<&str>]) {
        out.extend_from_slice(&(cols.len() as u16).to_be_bytes());
        for c in cols {
            match c {
                None => out.push(b'n'),
                Some("<toast>") => out.push(b'u'),
                Some(v) => {
                    out.push(b't');
                    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
    }

    /// A Relation message as PostgreSQL 15 sends it for
    /// `orders(order_id bigint primary key, status text, total numeric)`.
    pub fn relation_bytes() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        cstr(&mut m, "public");
        cstr(&mut m, "orders");
        m.push(b'd');
        m.extend_from_slice(&3u16.to_be_bytes());
        for (flags, name, oid) in [
            (1u8, "order_id", 20u32),
            (0, "status", 25),
            (0, "total", 1700),
        ] {
            m.push(flags);
            cstr(&mut m, name);
            m.extend_from_slice(&oid.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    #[test]
    fn relation_insert_update_delete_truncate() {
        let Message::Relation(rel) = decode(&relation_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str(), rel.oid),
            ("public", "orders", 16384)
        );
        assert_eq!(
            rel.columns[0],
            RelationColumn {
                is_key: true,
                name: "order_id".into(),
                type_oid: 20,
                type_modifier: -1
            }
        );
        assert_eq!(rel.columns[2].type_oid, 1700);

        let mut ins = vec![b'I'];
        ins.extend_from_slice(&16384u32.to_be_bytes());
        ins.push(b'N');
        tuple(&mut ins, &[Some("7"), None, Some("12.50")]);
        assert_eq!(
            decode(&ins).unwrap(),
            Message::Insert {
                relation: 16384,
                new: vec![
                    Datum::Text(b"7".to_vec()),
                    Datum::Null,
                    Datum::Text(b"12.50".to_vec())
                ]
            }
        );

        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16384u32.to_be_bytes());
        upd.push(b'O');
        tuple(&mut upd, &[Some("7"), Some("new"), Some("1")]);
        upd.push(b'N');
        tuple(&mut upd, &[Some("7"), Some("<toast>"), Some("2")]);
        let Message::Update {
            old, key_only, new, ..
        } = decode(&upd).unwrap()
        else {
            panic!()
        };
        assert!(!key_only);
        assert_eq!(old.unwrap()[1], Datum::Text(b"new".to_vec()));
        assert_eq!(new[1], Datum::UnchangedToast);

        let mut del = vec![b'D'];
        del.extend_from_slice(&16384u32.to_be_bytes());
        del.push(b'K');
        tuple(&mut del, &[Some("7"), None, None]);
        assert!(matches!(
            decode(&del).unwrap(),
            Message::Delete { key_only: true, .. }
        ));

        let mut tr = vec![b'T'];
        tr.extend_from_slice(&2u32.to_be_bytes());
        tr.push(1);
        tr.extend_from_slice(&16384u32.to_be_bytes());
        tr.extend_from_slice(&16390u32.to_be_bytes());
        assert_eq!(
            decode(&tr).unwrap(),
            Message::Truncate {
                relations: vec![16384, 16390],
                cascade: true,
                restart_identity: false
            }
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(decode(b"").is_err());
        assert!(decode(b"I\0\0").is_err());
        let mut bad = vec![b'I'];
        bad.extend_from_slice(&1u32.to_be_bytes());
        bad.push(b'N');
        bad.extend_from_slice(&60000u16.to_be_bytes());
        assert!(decode(&bad).unwrap_err().0.contains("claims"));
        let mut kind = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b'z'];
        assert!(decode(&kind).is_err());
        kind.truncate(6);
        assert!(decode(&kind).is_err());
        assert_eq!(decode(b"Zabc").unwrap(), Message::Other(b'Z'));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn no_input_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn no_mutation_of_a_valid_message_panics(pos in 0usize..200, byte in any::<u8>(), cut in 0usize..200) {
            let mut m = relation_bytes();
            let i = pos % m.len();
            m[i] = byte;
            m.truncate(cut.max(1).min(m.len()));
            let _ = decode(&m);
        }

        #[test]
        fn tagged_garbage_never_panics(tag in prop::sample::select(b"RYIUDTOBC".to_vec()), rest in prop::collection::vec(any::<u8>(), 0..128)) {
            let mut m = vec![tag];
            m.extend(rest);
            let _ = decode(&m);
        }
    }
}
