//! Canonical JSON and fingerprints.
//!
//! Document ids and field values are compared across providers and
//! processes, so they need one byte-exact form: object keys sorted
//! recursively, serde_json's number and string formatting. A fingerprint is
//! the 64-bit FNV-1a hash of that form: stable across builds and machines
//! (unlike `std`'s hasher), compact enough to keep one per field per provider
//! for echo suppression.

use serde_json::Value;

/// The canonical JSON text of a value: keys sorted at every depth.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A counter's value as a number: a JSON number, or a decimal too precise
/// for a float, which travels as its text ([`crate::column_type`]).
/// Counters add as floats, so such a value is rounded there, as it always
/// was; it is not a bad record.
pub fn counter_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            s.parse::<f64>().ok().filter(|f| f.is_finite())
        }
        _ => None,
    }
}

/// The key under which a document id is stored: its canonical JSON.
pub fn id_key(id: &Value) -> String {
    canonical_json(id)
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The fingerprint of one field value: [`fnv1a`] of its canonical JSON,
/// hashed as it is written (no string is built).
pub fn fingerprint(value: &Value) -> u64 {
    let mut h = Fnv1a(0xcbf2_9ce4_8422_2325);
    hash_canonical(value, &mut h);
    h.0
}

struct Fnv1a(u64);

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        Fnv1a::write(self, bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds the bytes [`canonical_json`] would produce.
fn hash_canonical(value: &Value, h: &mut Fnv1a) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.write(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.write(b",");
                }
                // serde_json's string escaping, as `Value::String(k).to_string()`
                let _ = serde_json::to_writer(&mut *h, k);
                h.write(b":");
                hash_canonical(&map[k], h);
            }
            h.write(b"}");
        }
        Value::Array(items) => {
            h.write(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    h.write(b",");
                }
                hash_canonical(v, h);
            }
            h.write(b"]");
        }
        other => {
            let _ = serde_json::to_writer(&mut *h, other);
        }
    }
}

/// The order-independent digest term of one document: providers and the
/// store sum these (wrapping) per collection, so `connector verify` can
/// compare collections without sorting or shipping them.
pub fn doc_hash(id: &Value, doc: &serde_json::Map<String, Value>) -> u64 {
    let mut text = canonical_json(id);
    text.push('\u{1f}');
    text.push_str(&canonical_json(&Value::Object(doc.clone())));
    fnv1a(text.as_bytes())
}

/// Parses an id typed by a person: JSON when it parses (`42`, `{"a":1}`,
/// `"x"`), else the text itself as a string (UUIDs, codes).
pub fn parse_id_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        /// A float read back from the JSON the store keeps is the same
        /// float (serde_json's default parser may round twice: 9 % of
        /// doubles came back an ulp off, e.g. 901.4274576114835 as
        /// …836; the `float_roundtrip` feature parses exactly).
        #[test]
        fn a_float_reads_back_from_its_json_exactly(bits: u64) {
            let f = f64::from_bits(bits);
            proptest::prop_assume!(f.is_finite());
            let text = serde_json::to_string(&f).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(back.to_bits(), f.to_bits(), "{}", text);
        }
    }

    #[test]
    fn known_double_roundings_read_back_exactly() {
        for text in ["901.4274576114835", "97325225.70430619"] {
            let exact: f64 = text.parse().unwrap();
            let back: f64 = serde_json::from_str(text).unwrap();
            assert_eq!(back.to_bits(), exact.to_bits(), "{text}");
        }
    }

    #[test]
    fn a_fingerprint_is_the_hash_of_the_canonical_text() {
        for v in [
            json!(null),
            json!(true),
            json!(-12),
            json!(18446744073709551615u64),
            json!(0.1),
            json!(1e300),
            json!("tab\t \"quoted\" é \u{1}"),
            json!([1, "a", {"z": 1, "a": [null]}]),
            json!({"b": {"y": 2, "x": 1}, "a\n": "v"}),
        ] {
            assert_eq!(fingerprint(&v), fnv1a(canonical_json(&v).as_bytes()), "{v}");
        }
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "s"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
        let b: Value =
            serde_json::from_str(r#"{"a":{"y":[1,{"c":3,"d":2}],"x":"s"},"b":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn fingerprints_distinguish_types_and_values() {
        assert_ne!(fingerprint(&json!(1)), fingerprint(&json!("1")));
        assert_ne!(fingerprint(&json!(null)), fingerprint(&json!(false)));
        assert_ne!(fingerprint(&json!([1, 2])), fingerprint(&json!([2, 1])));
        // Known FNV-1a vector: the empty string.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn id_args_parse_as_json_or_text() {
        assert_eq!(parse_id_arg("42"), json!(42));
        assert_eq!(parse_id_arg(r#"{"store_id":3}"#), json!({"store_id": 3}));
        assert_eq!(
            parse_id_arg("550e8400-e29b-41d4-a716-446655440000"),
            json!("550e8400-e29b-41d4-a716-446655440000")
        );
    }
}
