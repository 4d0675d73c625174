//! Field transforms: inbound in file order, outbound inverted in reverse order.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde_json::Value;

use super::rules::Transform;
use crate::change::Fields;

/// Applies transforms provider → store. A value that cannot be converted
/// is an error naming the field.
pub fn apply_inbound(
    transforms: &[Transform],
    fields: &mut Fields,
) -> Result<(), (String, String)> {
    for t in transforms {
        match t {
            Transform::ToIsoString(f) => {
                if let Some(v) = fields.get_mut(f) {
                    if !v.is_null() {
                        let iso = to_iso_string(v).ok_or_else(|| {
                            (
                                f.clone(),
                                format!("cannot convert {v} to an ISO 8601 timestamp"),
                            )
                        })?;
                        *v = Value::String(iso);
                    }
                }
            }
            Transform::Rename { from, to } => rename(fields, from, to),
            Transform::Drop(names) => {
                for n in names {
                    fields.shift_remove(n);
                }
            }
        }
    }
    Ok(())
}

/// The document field a provider column's value ends up in after the
/// inbound transforms (renames in order), or `None` when one drops it: for
/// names the feed sends without their values (unchanged TOAST columns).
pub fn inbound_name(transforms: &[Transform], name: &str) -> Option<String> {
    let mut name = name.to_string();
    for t in transforms {
        match t {
            Transform::Rename { from, to } if *from == name => name = to.clone(),
            Transform::Drop(names) if names.contains(&name) => return None,
            _ => {}
        }
    }
    Some(name)
}

/// The provider field a document field is written from after the outbound
/// transforms (renames undone in reverse order): for id fields, whose key
/// column is named before the row is built.
pub fn outbound_name(transforms: &[Transform], name: &str) -> String {
    let mut name = name.to_string();
    for t in transforms.iter().rev() {
        if let Transform::Rename { from, to } = t {
            if *to == name {
                name = from.clone();
            }
        }
    }
    name
}

/// Applies the inverse transforms store → provider. ISO strings stay strings
/// (every provider parses them into its timestamp type); dropped fields were
/// never in the document.
pub fn apply_outbound(transforms: &[Transform], fields: &mut Fields) {
    for t in transforms.iter().rev() {
        if let Transform::Rename { from, to } = t {
            rename(fields, to, from);
        }
    }
}

fn rename(fields: &mut Fields, from: &str, to: &str) {
    if let Some(v) = fields.shift_remove(from) {
        fields.insert(to.to_string(), v);
    }
}

/// Converts a timestamp in any of the accepted shapes to
/// `YYYY-MM-DDThh:mm:ss.sssZ` (UTC, milliseconds, like JavaScript's toISOString).
pub fn to_iso_string(value: &Value) -> Option<String> {
    let dt = match value {
        Value::Number(n) => from_millis(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?)?,
        Value::String(s) => parse_text(s.trim())?,
        Value::Object(o) if o.len() == 1 => match o.get("$date")? {
            Value::Object(inner) => from_millis(inner.get("$numberLong")?.as_str()?.parse().ok()?)?,
            other => return to_iso_string(other),
        },
        _ => return None,
    };
    Some(dt.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The inverse of [`to_iso_string`] for a column that holds epoch
/// milliseconds: a timestamp text as its milliseconds (`None` for any other
/// text). Sinks apply it to text bound for an integer column, where the
/// text could only be refused: a field `to_iso_string` made from such a
/// column goes back into it as it came.
pub fn iso_to_millis(s: &str) -> Option<i64> {
    let s = s.trim();
    // A date alone, or digits, are not a timestamp's text here.
    if s.len() < 16 || !s.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    parse_text(s).map(|dt| dt.timestamp_millis())
}

fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn parse_text(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    // SQL text forms, with a zone ("+00", "+05:30", "-0800") or without (UTC).
    let normalized = normalize_offset(s);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z"] {
        if let Ok(dt) = DateTime::parse_from_str(&normalized, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc())
}

/// Rewrites a trailing `+HH`, `+HHMM` or `-HH` offset to `+HH:MM`.
fn normalize_offset(s: &str) -> String {
    let bytes = s.as_bytes();
    // The offset sign comes after the time part (past position 10, the date).
    let Some(sign) = s.rfind(['+', '-']).filter(|&i| i > 10) else {
        return s.to_string();
    };
    let digits = &s[sign + 1..];
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return s.to_string();
    }
    let plain: String = digits.chars().filter(|c| *c != ':').collect();
    let (h, m) = match plain.len() {
        2 => (&plain[..2], "00"),
        4 => (&plain[..2], &plain[2..]),
        _ => return s.to_string(),
    };
    format!("{}{}{}:{}", &s[..sign], bytes[sign] as char, h, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_in_every_accepted_shape_become_iso() {
        let want = "2024-03-05T10:20:30.123Z";
        for v in [
            json!(1709634030123i64),
            json!("2024-03-05T10:20:30.123Z"),
            json!("2024-03-05T11:20:30.123+01:00"),
            json!("2024-03-05 10:20:30.123+00"),
            json!("2024-03-05 05:20:30.123-05"),
            json!("2024-03-05 15:50:30.123+0530"),
            json!("2024-03-05 10:20:30.123"),
            json!({"$date": "2024-03-05T10:20:30.123Z"}),
            json!({"$date": {"$numberLong": "1709634030123"}}),
        ] {
            assert_eq!(to_iso_string(&v).as_deref(), Some(want), "{v}");
        }
        assert_eq!(
            to_iso_string(&json!("2024-03-05")).as_deref(),
            Some("2024-03-05T00:00:00.000Z")
        );
        assert_eq!(to_iso_string(&json!("yesterday")), None);
        assert_eq!(to_iso_string(&json!(true)), None);
    }

    #[test]
    fn inbound_and_outbound_are_inverse_for_renames() {
        let ts = vec![
            Transform::Rename {
                from: "qty".into(),
                to: "quantity".into(),
            },
            Transform::Drop(vec!["secret".into()]),
            Transform::ToIsoString("at".into()),
        ];
        let mut row = json!({"qty": 3, "secret": "x", "at": 0, "n": null})
            .as_object()
            .unwrap()
            .clone();
        apply_inbound(&ts, &mut row).unwrap();
        assert_eq!(
            Value::Object(row.clone()),
            json!({"n": null, "quantity": 3, "at": "1970-01-01T00:00:00.000Z"})
        );
        apply_outbound(&ts, &mut row);
        assert_eq!(row.get("qty"), Some(&json!(3)));
        assert!(!row.contains_key("quantity"));
    }

    #[test]
    fn an_iso_string_goes_back_to_the_millis_it_came_from() {
        for ms in [0_i64, 1_709_634_030_123, -86_400_000] {
            let iso = to_iso_string(&Value::from(ms)).unwrap();
            assert_eq!(iso_to_millis(&iso), Some(ms), "{iso}");
        }
        assert_eq!(
            iso_to_millis("2024-03-05 10:20:30.123+00"),
            Some(1_709_634_030_123)
        );
        for not in ["42", "2024-03-05", "hello world, long enough", ""] {
            assert_eq!(iso_to_millis(not), None, "{not}");
        }
    }

    #[test]
    fn an_unconvertible_timestamp_names_the_field() {
        let mut row = json!({"order_date": "soon"}).as_object().unwrap().clone();
        let err =
            apply_inbound(&[Transform::ToIsoString("order_date".into())], &mut row).unwrap_err();
        assert_eq!(err.0, "order_date");
        assert!(err.1.contains("soon"));
    }
}
