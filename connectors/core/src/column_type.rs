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
//! * decimals are exact: a value a 64-bit float cannot hold as written
//!   (`12345678901234567.25`, 18 and more significant digits) becomes its
//!   canonical text (`"12345678901234567.25"`, no trailing zeros), which
//!   every database's cast reads back exactly. One value has one form from
//!   any text of it (`1.50`, `1.5E0`, a journal's JSON number), so two
//!   providers never overwrite each other over the spelling;
//! * `json` columns → the parsed value;
//! * timestamps → RFC 3339 in UTC with `Z`, fractional seconds only where
//!   non-zero; a value without an offset is UTC (MariaDB `DATETIME`, DB2
//!   `TIMESTAMP` and PostgreSQL `timestamp` columns hold UTC, sessions are
//!   pinned): one form, whichever database a timestamp came from;
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
    /// A PostgreSQL array (`text[]`): its text form, as text is; bound
    /// from a JSON list by its input form.
    Array,
    /// Bytes (MariaDB `BLOB`, `VARBINARY`): PostgreSQL's bytea text form,
    /// `\x` and lowercase hex, as text is.
    Binary,
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
            // MariaDB's TINYINT(1) holds any small number: true but 0, as
            // a journal's JSON number normalizes.
            other => other.parse::<i64>().ok().map(|n| Value::Bool(n != 0)),
        },
        ColumnType::Integer => {
            let t = text.trim();
            // BIGINT UNSIGNED past i64, as a journal's JSON number gives it.
            t.parse::<i64>()
                .map(Value::from)
                .or_else(|_| t.parse::<u64>().map(Value::from))
                .ok()
        }
        ColumnType::Decimal => decimal(text.trim()),
        ColumnType::Float => float(text.trim()),
        ColumnType::Json => serde_json::from_str(text).ok(),
        // A timestamp without a zone holds UTC, as MariaDB's DATETIME and
        // DB2's TIMESTAMP do: one form for all (a PostgreSQL `timestamp`
        // written into a DATETIME came back spelled otherwise, a change).
        ColumnType::TimestampTz | ColumnType::Timestamp => {
            parse_timestamptz(text.trim()).map(Value::String)
        }
        ColumnType::Uuid => Some(Value::String(
            text.trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .to_ascii_lowercase(),
        )),
        // A list read as JSON text (PostgreSQL through ODBC: `to_json`);
        // PostgreSQL's own `{a,b}` stays text.
        ColumnType::Array if text.starts_with('[') => serde_json::from_str(text).ok(),
        ColumnType::Date | ColumnType::Array | ColumnType::Binary | ColumnType::Text => None,
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
        (ColumnType::Decimal, Value::Number(n)) => {
            decimal(&n.to_string()).unwrap_or(Value::Number(n))
        }
        (ColumnType::Float, Value::Number(n)) => float(&n.to_string()).unwrap_or(Value::Number(n)),
        (ColumnType::Text | ColumnType::Date | ColumnType::Uuid, Value::Number(n)) => {
            Value::String(n.to_string())
        }
        (ColumnType::Text | ColumnType::Date | ColumnType::Uuid, Value::Bool(b)) => {
            Value::String(b.to_string())
        }
        (_, v) => v,
    }
}

/// A float's text → a whole number where it is one and fits an `i64`, else
/// the float. Non-finite values have no JSON number (`None`).
fn float(text: &str) -> Option<Value> {
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    Some(match whole(f) {
        Some(i) => Value::from(i),
        None => Value::Number(Number::from_f64(f)?),
    })
}

/// `f` as an `i64` when it is a whole number in range.
pub fn whole(f: f64) -> Option<i64> {
    // ±2^63 are exact as f64s; every whole f64 in [-2^63, 2^63) converts
    // exactly.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f)).then_some(f as i64)
}

/// A decimal's text → its one exact form: an `i64` for a whole number that
/// fits, else a float when the float's JSON text reads back as the value's
/// canonical text, else that canonical text as a string. `None` for text
/// that is no decimal number (`NaN`, `Infinity`).
///
/// The float's text is the one `serde_json` writes (and so the one a later
/// `normalize` reads): where two shortest texts are equally near the float
/// (`570000000000000.2` and `.3` are both `…0.25`), `std`'s `Display` and
/// `serde_json` may pick different ones, and only one of the two decimals
/// can be that float.
fn decimal(text: &str) -> Option<Value> {
    let canonical = canonical_decimal(text)?;
    if let Ok(i) = canonical.parse::<i64>() {
        return Some(Value::from(i));
    }
    let number = canonical
        .parse::<f64>()
        .ok()
        .filter(|f| whole(*f).is_none())
        .and_then(Number::from_f64)
        .filter(|n| canonical_decimal(&n.to_string()).as_deref() == Some(canonical.as_str()));
    Some(number.map_or(Value::String(canonical), Value::Number))
}

/// `[-]digits[.digits]` without leading or trailing zeros (`-0` is `0`),
/// from a decimal literal with an optional sign, point and exponent.
/// `None` for anything else, or an exponent beyond ±4096.
fn canonical_decimal(text: &str) -> Option<String> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
        None => (rest, 0),
    };
    if !(-4096..=4096).contains(&exponent) {
        return None;
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    // The digits and where the point falls among them.
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    let point = int.len() as i64 + i64::from(exponent);
    let Some(first) = digits.iter().position(|d| *d != b'0') else {
        return Some("0".into());
    };
    let last = digits.iter().rposition(|d| *d != b'0').unwrap_or(first);
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    let digit_at = |i: i64| {
        if (0..digits.len() as i64).contains(&i) {
            digits[i as usize] as char
        } else {
            '0'
        }
    };
    let (first, last) = (first as i64, last as i64);
    if point <= first {
        out.push('0');
    } else {
        (first..point).for_each(|i| out.push(digit_at(i)));
    }
    if last >= point {
        out.push('.');
        (point..=last).for_each(|i| out.push(digit_at(i)));
    }
    Some(out)
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
            (Decimal, "12345678901234567", json!(12345678901234567i64)),
            (Decimal, "12345678901234567.00", json!(12345678901234567i64)),
            (
                Decimal,
                "12345678901234567.25",
                json!("12345678901234567.25"),
            ),
            (
                Decimal,
                "-0.0000000000000000123456789012345678",
                json!("-0.0000000000000000123456789012345678"),
            ),
            (
                Decimal,
                "123456789012345678901234",
                json!("123456789012345678901234"),
            ),
            (Decimal, "100000000000000000000", json!(1e20)),
            (Decimal, "1.5E3", json!(1500)),
            (Decimal, "-0.00", json!(0)),
            (Decimal, "0.30000000000000004", json!(0.30000000000000004)),
            (Float, "1e5", json!(100000)),
            (Float, "12345678901234567.25", json!(12345678901234568i64)),
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
                json!("2024-01-02T03:04:05.250Z"),
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
        // The same value read as text by a copy and as a journal's JSON.
        for (ty, text, v) in [
            (Bool, "2", json!(2)),
            (
                Integer,
                "18446744073709551615",
                json!(18446744073709551615u64),
            ),
        ] {
            assert_eq!(
                text_to_json(ty, text),
                normalize(ty, v.clone()),
                "{ty:?} {text}"
            );
        }
        for (ty, v, want) in cases {
            assert_eq!(normalize(ty, v.clone()), want, "{ty:?} {v}");
        }
    }

    #[test]
    fn a_decimal_has_one_form_however_it_is_spelled() {
        let spellings = [
            ("12.5", ["12.50", "+12.5", "1.25E1", "0.125e+2", "125e-1"]),
            ("0.0015", ["0.00150", ".0015", "1.5e-3", "15E-4", "0.0015"]),
            (
                "12345678901234567.25",
                [
                    "12345678901234567.250",
                    "1.234567890123456725E16",
                    "012345678901234567.25",
                    "1234567890123456725e-2",
                    "12345678901234567.25",
                ],
            ),
            ("-3", ["-3.000", "-0.3e1", "-30E-1", "-3", "-3."]),
        ];
        for (canonical, others) in spellings {
            let want = decimal(canonical).unwrap();
            for other in others {
                assert_eq!(
                    canonical_decimal(other).as_deref(),
                    Some(canonical),
                    "{other}"
                );
                assert_eq!(text_to_json(Decimal, other), want, "{other}");
            }
        }
        // The same value from an integer column, a float column and a
        // journal's JSON number has the decimal column's form.
        assert_eq!(
            text_to_json(Integer, "9007199254740993"),
            text_to_json(Decimal, "9007199254740993.0")
        );
        assert_eq!(text_to_json(Float, "0.1"), text_to_json(Decimal, "0.10"));
        assert_eq!(
            normalize(Decimal, json!(1e20)),
            text_to_json(Decimal, "100000000000000000000.00")
        );
        for text in [
            "NaN", "Infinity", "-", ".", "1.2.3", "1e", "12abc", "1e99999",
        ] {
            assert_eq!(canonical_decimal(text), None, "{text}");
        }
    }

    #[test]
    fn a_decimal_between_two_floats_texts_keeps_one_form() {
        // Both are nearest to the float 570000000000000.25, whose shortest
        // texts tie: each decimal's form reads back as itself.
        for text in ["570000000000000.2", "570000000000000.3"] {
            let form = text_to_json(Decimal, text);
            let again = match &form {
                Value::String(s) => text_to_json(Decimal, s),
                other => normalize(Decimal, other.clone()),
            };
            assert_eq!(again, form, "{text}");
            let back = serde_json::from_str::<Value>(&form.to_string()).unwrap();
            assert_eq!(normalize(Decimal, back), form, "{text}");
        }
    }

    proptest::proptest! {
        /// Whatever the spelling, the canonical text reads back as the same
        /// decimal, and its form is stable (the form of the form's text is
        /// itself).
        #[test]
        fn decimal_forms_are_exact_and_stable(
            negative: bool,
            int in "[0-9]{0,24}",
            frac in "[0-9]{0,24}",
            shift in -30i32..30,
        ) {
            proptest::prop_assume!(!(int.is_empty() && frac.is_empty()));
            let sign = if negative { "-" } else { "" };
            let plain = format!("{sign}{int}.{frac}");
            // The same value with the point moved into the exponent.
            let digits = format!("{int}{frac}");
            let shifted = format!("{sign}{digits}e{}", -(frac.len() as i32));
            let c = canonical_decimal(&plain).unwrap();
            proptest::prop_assert_eq!(canonical_decimal(&shifted), Some(c.clone()));
            let moved = format!("{sign}{digits}e{}", shift - frac.len() as i32);
            let cm = canonical_decimal(&moved).unwrap();
            let back = format!("{cm}e{}", -shift);
            proptest::prop_assert_eq!(canonical_decimal(&back), Some(c.clone()));
            let form = text_to_json(Decimal, &plain);
            let again = match &form {
                Value::String(s) => text_to_json(Decimal, s),
                other => normalize(Decimal, other.clone()),
            };
            proptest::prop_assert_eq!(&again, &form);
            if let Value::String(s) = &form {
                proptest::prop_assert_eq!(s, &c);
            }
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

/// A PostgreSQL type (`format_type` text) without its length (`character varying(20)` → `character
/// varying`): an explicit cast to `varchar(n)` cuts a longer value without
/// an error, where storing it into the column raises 22001 (a dead letter).
/// `character(n)` and `bit(n)` become `bpchar` and `bit varying`: without
/// a length `character` means `character(1)`, and `bit` `bit(1)`. Numeric
/// scales and time precisions round the same either way.
pub fn pg_base_type(sql_type: &str) -> String {
    let mut out = String::with_capacity(sql_type.len());
    let mut depth = 0;
    for ch in sql_type.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let (name, array) = match out.strip_suffix("[]") {
        Some(name) => (name, "[]"),
        None => (out.as_str(), ""),
    };
    match name {
        "character" | "char" => format!("bpchar{array}"),
        "bit" => format!("bit varying{array}"),
        _ => out.clone(),
    }
}

#[cfg(test)]
mod pg_base_type_tests {
    use super::pg_base_type;

    #[test]
    fn casts_go_to_the_type_without_its_length() {
        assert_eq!(pg_base_type("character varying(20)"), "character varying");
        assert_eq!(pg_base_type("numeric(10,2)"), "numeric");
        assert_eq!(
            pg_base_type("timestamp(3) with time zone"),
            "timestamp with time zone"
        );
        assert_eq!(pg_base_type("character(2)"), "bpchar");
        assert_eq!(pg_base_type("character(2)[]"), "bpchar[]");
        assert_eq!(pg_base_type("bit(8)"), "bit varying");
        assert_eq!(
            pg_base_type("character varying(20)[]"),
            "character varying[]"
        );
        assert_eq!(pg_base_type("jsonb"), "jsonb");
    }
}
