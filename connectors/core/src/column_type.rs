//! One JSON form per SQL value, whatever database it came from.
//!
//! Every SQL provider reads values as text (PostgreSQL's pgoutput, an ODBC
//! driver's character conversion) or as a JSON image built by the database
//! (a trigger journal's `JSON_OBJECT`). Both go through here, keyed by the
//! column's logical type, so the same value in PostgreSQL, SQLite, MariaDB
//! or DB2 becomes the same JSON — and the same fingerprint, which echo
//! suppression and `connector verify` compare:
//!
//! * booleans → `true`/`false` (also from `1`/`0`, `t`/`f`: SQLite and
//!   MariaDB store booleans as integers);
//! * integers → numbers; decimals and floats → numbers, whole values as
//!   integers (`12.00` → `12`); non-finite values stay strings;
//! * `json` columns → the parsed value;
//! * timestamps with a time zone → RFC 3339 in UTC with `Z`, fractional
//!   seconds only where non-zero; a value without an offset is UTC (MariaDB
//!   `DATETIME` and DB2 `TIMESTAMP` columns hold UTC, sessions are pinned);
//! * timestamps without a time zone → `YYYY-MM-DDTHH:MM:SS[.fff]`;
//! * UUIDs → lowercase and hyphenated, without braces;
//! * everything else (text, dates) → the text as it is.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Number, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bool,
    Integer,
    Decimal,
    Float,
    Json,
    TimestampTz,
    Timestamp,
    Date,
    /// UUIDs: lowercase, hyphenated, without braces (ODBC drivers report
    /// GUIDs in upper case or in braces).
    Uuid,
    Text,
}

/// Forms of a timestamp without an offset: ISO with a space or `T`, and
/// DB2's `YYYY-MM-DD-HH.MM.SS.ffffff`.
const NAIVE_FORMATS: [&str; 3] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d-%H.%M.%S%.f",
];

/// A value's text form → its JSON form (see the module docs).
pub fn text_to_json(ty: ColumnType, text: &str) -> Value {
    let parsed = match ty {
        ColumnType::Bool => match text.trim() {
            "t" | "true" | "TRUE" | "1" => Some(Value::Bool(true)),
            "f" | "false" | "FALSE" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        ColumnType::Integer => text.trim().parse::<i64>().ok().map(Value::from),
        ColumnType::Decimal | ColumnType::Float => number(text.trim()),
        ColumnType::Json => serde_json::from_str(text).ok(),
        ColumnType::TimestampTz => parse_timestamptz(text.trim()).map(Value::String),
        ColumnType::Timestamp => parse_naive(text.trim())
            .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())),
        ColumnType::Uuid => Some(Value::String(
            text.trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .to_ascii_lowercase(),
        )),
        ColumnType::Date | ColumnType::Text => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

/// A value from a JSON image built by the database → its JSON form.
pub fn normalize(ty: ColumnType, value: Value) -> Value {
    match (ty, value) {
        (_, Value::Null) => Value::Null,
        (ColumnType::Json, Value::String(s)) => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        (ColumnType::Json, v) => v,
        (_, Value::String(s)) => text_to_json(ty, &s),
        (ColumnType::Bool, Value::Number(n)) => match n.as_i64() {
            Some(0) => Value::Bool(false),
            Some(_) => Value::Bool(true),
            None => Value::Number(n),
        },
        (ColumnType::Decimal | ColumnType::Float, Value::Number(n)) => {
            number(&n.to_string()).unwrap_or(Value::Number(n))
        }
        (ColumnType::Text | ColumnType::Date | ColumnType::Uuid, Value::Number(n)) => {
            Value::String(n.to_string())
        }
        (ColumnType::Text | ColumnType::Date | ColumnType::Uuid, Value::Bool(b)) => {
            Value::String(b.to_string())
        }
        (_, v) => v,
    }
}

fn number(text: &str) -> Option<Value> {
    // Through f64 for every form ("…567", "…567.00", a journal's JSON
    // number): the same value must have one JSON form whichever way it came,
    // so an integral value is exact only below 2^53 (see ARCHITECTURE).
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(|f| {
            if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 && !text.contains(['e', 'E'])
            {
                Some(Value::from(f as i64))
            } else {
                Number::from_f64(f).map(Value::Number)
            }
        })
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    NAIVE_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
}

/// A timestamp with or without an offset → RFC 3339 UTC (see the module docs).
pub fn parse_timestamptz(text: &str) -> Option<String> {
    let normalized = match text.rfind(['+', '-']) {
        Some(i) if i > 10 && text[i + 1..].len() == 2 => format!("{text}:00"),
        Some(i) if i > 10 && text[i + 1..].len() == 4 && !text[i + 1..].contains(':') => {
            format!("{}:{}", &text[..i + 3], &text[i + 3..])
        }
        _ => text.to_string(),
    };
    DateTime::parse_from_str(&normalized, "%Y-%m-%d %H:%M:%S%.f%:z")
        .or_else(|_| DateTime::parse_from_rfc3339(&normalized))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_naive(text).map(|t| t.and_utc()))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// An RFC 3339 (or offset-less) timestamp → `YYYY-MM-DD HH:MM:SS.ffffff` in
/// UTC: the form MariaDB `DATETIME(6)` and DB2 `TIMESTAMP` parameters take.
pub fn utc_naive_text(text: &str) -> Option<String> {
    let iso = parse_timestamptz(text)?;
    DateTime::parse_from_rfc3339(&iso)
        .ok()
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ColumnType::*;

    #[test]
    fn each_type_has_one_json_form_from_text() {
        let cases = [
            (Bool, "t", json!(true)),
            (Bool, "0", json!(false)),
            (Integer, "-3", json!(-3)),
            (Integer, "9007199254740993", json!(9007199254740993i64)),
            (Decimal, "12.50", json!(12.5)),
            (Decimal, "12.00", json!(12)),
            (Decimal, "12345678901234567", json!(12345678901234568.0)),
            (Decimal, "12345678901234567.00", json!(12345678901234568.0)),
            (Decimal, "NaN", json!("NaN")),
            (Float, "0.1", json!(0.1)),
            (Text, "hello", json!("hello")),
            (
                Json,
                r#"{"b": 1, "a": [true, null]}"#,
                json!({"a": [true, null], "b": 1}),
            ),
            (Date, "2024-02-29", json!("2024-02-29")),
            (
                Uuid,
                "{03912301-EDCA-EB11-47C2-B60DB6199ECF}",
                json!("03912301-edca-eb11-47c2-b60db6199ecf"),
            ),
            (
                TimestampTz,
                "2024-01-02 03:04:05.123456+00",
                json!("2024-01-02T03:04:05.123456Z"),
            ),
            (
                TimestampTz,
                "2024-01-02 04:04:05+01",
                json!("2024-01-02T03:04:05Z"),
            ),
            (
                TimestampTz,
                "2024-01-02 08:34:05.5+05:30",
                json!("2024-01-02T03:04:05.500Z"),
            ),
            (
                TimestampTz,
                "2024-01-02 03:04:05.000000",
                json!("2024-01-02T03:04:05Z"),
            ),
            (
                TimestampTz,
                "2024-01-02-03.04.05.250000",
                json!("2024-01-02T03:04:05.250Z"),
            ),
            (
                TimestampTz,
                "2024-01-02T03:04:05Z",
                json!("2024-01-02T03:04:05Z"),
            ),
            (
                Timestamp,
                "2024-01-02 03:04:05.25",
                json!("2024-01-02T03:04:05.250"),
            ),
            (TimestampTz, "infinity", json!("infinity")),
        ];
        for (ty, text, want) in cases {
            assert_eq!(text_to_json(ty, text), want, "{ty:?} {text}");
        }
    }

    #[test]
    fn database_built_json_images_normalize_to_the_same_forms() {
        let cases = [
            (Bool, json!(1), json!(true)),
            (Bool, json!(false), json!(false)),
            (Decimal, json!(12.0), json!(12)),
            (Decimal, json!("12.50"), json!(12.5)),
            (Json, json!("{\"a\":1}"), json!({"a": 1})),
            (Json, json!({"a": 1}), json!({"a": 1})),
            (
                TimestampTz,
                json!("2024-01-02 03:04:05.000000"),
                json!("2024-01-02T03:04:05Z"),
            ),
            (Text, json!(42), json!("42")),
            (Integer, Value::Null, Value::Null),
        ];
        for (ty, v, want) in cases {
            assert_eq!(normalize(ty, v.clone()), want, "{ty:?} {v}");
        }
    }

    #[test]
    fn the_utc_parameter_form_reads_back_as_the_same_instant() {
        let iso = text_to_json(TimestampTz, "2024-01-02 04:04:05.1+01");
        let param = utc_naive_text(iso.as_str().unwrap()).unwrap();
        assert_eq!(param, "2024-01-02 03:04:05.100000");
        assert_eq!(text_to_json(TimestampTz, &param), iso);
    }
}
