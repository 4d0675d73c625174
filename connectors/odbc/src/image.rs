//! A journal row image (the JSON object a trigger built) → document fields.
//!
//! Each value is normalized by its column's type ([`normalize`]), so a value
//! reads the same whether a copy read it as text or the journal as JSON. A
//! decimal column's JSON number is read from its literal text, not through
//! a 64-bit float: `JSON_OBJECT` writes a `DECIMAL(31,2)` exactly, and
//! rounding it here would give the journal another form of the value than
//! the copy and the other providers have (they would overwrite each other).

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use connector_core::column_type::{normalize, text_to_json, ColumnType};
use connector_core::Fields;

use crate::catalog::TableInfo;

/// A row image → fields normalized by the table's column types. A column
/// the catalog does not list is left out, as the copy leaves it (a
/// generated column, which `row_to_json` includes; one added since the
/// catalog was read); without a catalog every value stays as it is.
pub fn decode_image(text: &str, table: Option<&TableInfo>) -> Result<Fields, String> {
    let RawObject(entries) = serde_json::from_str(text).map_err(|e| e.to_string())?;
    entries
        .into_iter()
        .filter(|(name, _)| table.is_none_or(|t| t.column(name).is_some()))
        .map(|(name, raw)| {
            let ty = table.and_then(|t| t.column(&name)).map(|c| c.ty);
            let literal = raw.get();
            let value = match ty {
                Some(ColumnType::Decimal) if is_number_literal(literal) => {
                    text_to_json(ColumnType::Decimal, literal)
                }
                // A number in a column read as text (a domain over numeric:
                // its JSON is a number, its type name no numeric one) keeps
                // its digits, as the copy reads them; through a float,
                // 12.50 became "12.5" and long ones lost digits.
                Some(ColumnType::Text) if is_number_literal(literal) => {
                    Value::String(literal.to_string())
                }
                _ => {
                    let v: Value = serde_json::from_str(literal).map_err(|e| e.to_string())?;
                    ty.map_or(v.clone(), |ty| normalize(ty, v))
                }
            };
            Ok((name, value))
        })
        .collect()
}

fn is_number_literal(raw: &str) -> bool {
    raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// A JSON object's members in their order, values as their raw text.
struct RawObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the row image as a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(RawObject(entries))
            }
        }
        d.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;
    use serde_json::json;

    fn table() -> TableInfo {
        let column = |name: &str, ty| Column {
            name: name.into(),
            ty,
            sql_type: String::new(),
        };
        TableInfo {
            schema: None,
            name: "t".into(),
            columns: vec![
                column("amount", ColumnType::Decimal),
                column("ratio", ColumnType::Float),
                column("paid", ColumnType::Bool),
                column("price", ColumnType::Text),
            ],
            key_checked: false,
        }
    }

    #[test]
    fn a_journal_decimal_keeps_every_digit_and_the_copys_form() {
        let t = table();
        let image = r#"{"amount": 12345678901234567.50, "ratio": 0.5, "paid": 1, "note": "x"}"#;
        let fields = decode_image(image, Some(&t)).unwrap();
        // The same value as a copy (text) reads it.
        let copied = text_to_json(ColumnType::Decimal, "12345678901234567.50");
        assert_eq!(fields["amount"], copied);
        assert_eq!(fields["amount"], json!("12345678901234567.5"));
        assert_eq!(fields["ratio"], json!(0.5));
        assert_eq!(fields["paid"], json!(true));
        // `note` is not in the catalog (a generated column): left out.
        let keys: Vec<&String> = fields.keys().collect();
        assert_eq!(keys, ["amount", "ratio", "paid"]);
        assert_eq!(decode_image(image, None).unwrap()["note"], json!("x"));
        // A decimal written as a string, a small one and null.
        let fields = decode_image(r#"{"amount": "12.50"}"#, Some(&t)).unwrap();
        assert_eq!(fields["amount"], json!(12.5));
        let fields = decode_image(r#"{"amount": 12.50}"#, Some(&t)).unwrap();
        assert_eq!(fields["amount"], json!(12.5));
        let fields = decode_image(r#"{"amount": null}"#, Some(&t)).unwrap();
        assert_eq!(fields["amount"], Value::Null);
        // A domain over numeric (read as text): its digits, as copied.
        let fields = decode_image(r#"{"price": 12345678901234567.25}"#, Some(&t)).unwrap();
        assert_eq!(
            fields["price"],
            text_to_json(ColumnType::Text, "12345678901234567.25")
        );
        let fields = decode_image(r#"{"price": 12.50}"#, Some(&t)).unwrap();
        assert_eq!(fields["price"], json!("12.50"));
    }

    #[test]
    fn an_image_that_is_not_an_object_is_an_error() {
        assert!(decode_image("[1, 2]", None).is_err());
        assert!(decode_image("{\"a\": ", None).is_err());
    }
}
