//! PostgreSQL text values → JSON, one rule per type, shared by the
//! replication stream and the snapshot reader so both produce identical
//! documents (and identical fingerprints for echo suppression).
//!
//! Sessions pin `DateStyle=ISO`, `TimeZone=UTC` and `extra_float_digits=3`
//! (see `conn.rs`), so the text forms parsed here are stable. The way back,
//! JSON → column, is PostgreSQL's own input functions (the sink hands rows
//! to `jsonb_populate_recordset`), which accept every form produced here.

use connector_core::column_type::{self, ColumnType};
use serde_json::Value;

pub const BOOL: u32 = 16;
pub const BYTEA: u32 = 17;
pub const INT8: u32 = 20;
pub const INT2: u32 = 21;
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const OID: u32 = 26;
pub const JSON: u32 = 114;
pub const FLOAT4: u32 = 700;
pub const FLOAT8: u32 = 701;
pub const VARCHAR: u32 = 1043;
pub const DATE: u32 = 1082;
pub const TIMESTAMP: u32 = 1114;
pub const TIMESTAMPTZ: u32 = 1184;
pub const NUMERIC: u32 = 1700;
pub const UUID: u32 = 2950;
pub const JSONB: u32 = 3802;

/// The JSON value of a column's text form.
/// The logical type of a PostgreSQL type oid.
pub fn column_type(type_oid: u32) -> ColumnType {
    match type_oid {
        BOOL => ColumnType::Bool,
        INT2 | INT4 | INT8 | OID => ColumnType::Integer,
        NUMERIC => ColumnType::Decimal,
        FLOAT4 | FLOAT8 => ColumnType::Float,
        JSON | JSONB => ColumnType::Json,
        TIMESTAMPTZ => ColumnType::TimestampTz,
        TIMESTAMP => ColumnType::Timestamp,
        DATE => ColumnType::Date,
        UUID => ColumnType::Uuid,
        _ => ColumnType::Text,
    }
}

/// A PostgreSQL text value → JSON ([`connector_core::column_type`]).
pub fn text_to_json(type_oid: u32, text: &str) -> Value {
    column_type::text_to_json(column_type(type_oid), text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_retail_type_has_one_json_form() {
        let cases = [
            (BOOL, "t", json!(true)),
            (INT2, "-3", json!(-3)),
            (INT8, "9007199254740993", json!(9007199254740993i64)),
            (NUMERIC, "12.50", json!(12.5)),
            (NUMERIC, "12.00", json!(12)),
            (NUMERIC, "NaN", json!("NaN")),
            (FLOAT8, "0.1", json!(0.1)),
            (TEXT, "hello", json!("hello")),
            (
                UUID,
                "550e8400-e29b-41d4-a716-446655440000",
                json!("550e8400-e29b-41d4-a716-446655440000"),
            ),
            (
                JSONB,
                r#"{"b": 1, "a": [true, null]}"#,
                json!({"a": [true, null], "b": 1}),
            ),
            (BYTEA, "\\x0a0b", json!("\\x0a0b")),
            (DATE, "2024-02-29", json!("2024-02-29")),
            (
                TIMESTAMPTZ,
                "2024-01-02 03:04:05.123456+00",
                json!("2024-01-02T03:04:05.123456Z"),
            ),
            (
                TIMESTAMPTZ,
                "2024-01-02 04:04:05+01",
                json!("2024-01-02T03:04:05Z"),
            ),
            (
                TIMESTAMPTZ,
                "2024-01-02 08:34:05.5+05:30",
                json!("2024-01-02T03:04:05.500Z"),
            ),
            (
                TIMESTAMP,
                "2024-01-02 03:04:05.25",
                json!("2024-01-02T03:04:05.250Z"),
            ),
            (TIMESTAMPTZ, "infinity", json!("infinity")),
        ];
        for (oid, text, want) in cases {
            assert_eq!(text_to_json(oid, text), want, "{oid} {text}");
        }
    }

    #[test]
    fn the_iso_form_reads_back_as_the_same_instant() {
        // What the sink writes is what the feed reports, after normalization.
        let iso = text_to_json(TIMESTAMPTZ, "2024-01-02 03:04:05.1+00");
        let again = column_type::parse_timestamptz(iso.as_str().unwrap()).unwrap();
        assert_eq!(iso, json!(again));
    }
}
