//! Lenient request-field parsing with Vault's semantics, done once at the HTTP edge.
//!
//! Clients rely on weak typing: durations arrive as `3600`, `"3600"`, `"1h"`, `"2160h0m0s"`
//! or `"7d"`; booleans as `"true"`; lists as comma strings; `null` and (for non-string
//! kinds) `""` mean "not supplied". This module turns such JSON into typed values or a
//! message naming the field and what was expected.

use serde_json::Value;

use crate::runtime::{FieldKind, FieldValue};

/// Parses `value` as `kind`. `Ok(None)` means "treat as not supplied".
pub fn typed(kind: FieldKind, value: &Value) -> Result<Option<FieldValue>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let empty_string = value.as_str().is_some_and(str::is_empty);
    Ok(Some(match kind {
        FieldKind::String => FieldValue::String(string(value)?),
        FieldKind::Lowercase => FieldValue::String(string(value)?.to_lowercase()),
        FieldKind::SqlDsn => FieldValue::String(string(value)?),
        FieldKind::HttpsUrl => {
            let url = string(value)?;
            crate::caps::http::origin_of(&url)?;
            FieldValue::String(url)
        }
        _ if empty_string => return Ok(None),
        FieldKind::Int => FieldValue::Int(int(value)?),
        FieldKind::Bool => FieldValue::Bool(boolean(value)?),
        FieldKind::Duration => FieldValue::Duration(duration(value)?),
        FieldKind::Strings => FieldValue::Strings(strings(value, false)?),
        FieldKind::CommaStrings => FieldValue::Strings(strings(value, true)?),
        FieldKind::KeyValues => FieldValue::KeyValues(key_values(value)?),
    }))
}

/// A string, or a number/bool rendered as text.
pub fn string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, got {}", kind_name(other))),
    }
}

/// An integer from a number or a numeric string.
pub fn int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| format!("expected an integer, got {n}")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("expected an integer, got {s:?}")),
        Value::Bool(b) => Ok(i64::from(*b)),
        other => Err(format!("expected an integer, got {}", kind_name(other))),
    }
}

/// A boolean from a bool, a Go `ParseBool` string, or a number.
pub fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Value::String(s) => parse_bool(s).ok_or_else(|| format!("expected a boolean, got {s:?}")),
        other => Err(format!("expected a boolean, got {}", kind_name(other))),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The longest duration accepted, in seconds: Go's `time.Duration` limit (about 292
/// years), so every value Vault accepts is accepted and sums of durations cannot overflow.
pub const MAX_DURATION_SECS: u64 = 9_223_372_036;

/// Seconds from an integer, numeric string, `"<n>d"`, or a Go duration string.
pub fn duration(value: &Value) -> Result<u64, String> {
    let secs = match value {
        Value::Number(n) => match n.as_i64() {
            Some(secs) if secs >= 0 => secs.unsigned_abs(),
            Some(_) => return Err("a duration cannot be negative".to_string()),
            None => match n.as_f64() {
                Some(f) if f < 0.0 => return Err("a duration cannot be negative".to_string()),
                // Whole seconds, as Go truncates; but a fraction of a second is one second,
                // never 0 (which means "no TTL" to some fields).
                Some(f) if f > 0.0 && f < 1.0 => 1,
                Some(f) if f.is_finite() && f <= MAX_DURATION_SECS as f64 => f as u64,
                Some(f) if f.is_finite() => return Err(too_long()),
                _ => return Err(format!("expected a duration, got {n}")),
            },
        },
        Value::String(s) => parse_duration(s)?,
        other => return Err(format!("expected a duration, got {}", kind_name(other))),
    };
    if secs > MAX_DURATION_SECS {
        return Err(too_long());
    }
    Ok(secs)
}

fn too_long() -> String {
    format!("a duration can be at most {MAX_DURATION_SECS} seconds (about 292 years)")
}

/// Parses a duration string: seconds, `"7d"`, or Go `time.ParseDuration` syntax.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    if let Ok(secs) = text.parse::<i64>() {
        let secs = u64::try_from(secs).map_err(|_| "a duration cannot be negative".to_string())?;
        return if secs > MAX_DURATION_SECS {
            Err(too_long())
        } else {
            Ok(secs)
        };
    }
    let bad = || {
        format!(
            "invalid duration {text:?}: use seconds, or units such as \"90s\", \"1h30m\", \"7d\""
        )
    };
    if let Some(days) = text.strip_suffix('d') {
        let days: u64 = days.parse().map_err(|_| bad())?;
        return days
            .checked_mul(86_400)
            .filter(|secs| *secs <= MAX_DURATION_SECS)
            .ok_or_else(too_long);
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".to_string());
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total_nanos += number * nanos_per_unit;
        rest = tail;
    }
    // Whole seconds, as Go truncates (with room for float error); but a positive duration
    // under a second is one second, never 0 (which means "no TTL" to some fields).
    let exact = total_nanos / 1e9;
    let secs = if exact > 0.0 && exact < 1.0 {
        1.0
    } else {
        (exact + 1e-6).floor()
    };
    if !secs.is_finite() {
        return Err(bad());
    }
    if secs > MAX_DURATION_SECS as f64 {
        return Err(too_long());
    }
    Ok(secs as u64)
}

/// A list from an array or a string (split on commas when `comma`).
pub fn strings(value: &Value, comma: bool) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items.iter().map(string).collect(),
        Value::String(s) if comma => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Number(_) | Value::Bool(_) => Ok(vec![string(value)?]),
        other => Err(format!(
            "expected a list of strings, got {}",
            kind_name(other)
        )),
    }
}

/// A string map from a JSON object or `k=v,k2=v2`.
pub fn key_values(value: &Value) -> Result<Vec<(String, String)>, String> {
    let mut pairs = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), string(v)?)))
            .collect::<Result<Vec<_>, String>>()?,
        Value::String(s) => s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| format!("expected key=value pairs, got {pair:?}"))
            })
            .collect::<Result<Vec<_>, String>>()?,
        other => return Err(format!("expected a map, got {}", kind_name(other))),
    };
    pairs.sort();
    Ok(pairs)
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Go's `time.Duration.String()` for whole seconds: `1h0m0s`, `5m0s`, `30s`, `0s`.
pub fn go_duration(secs: u64) -> String {
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// A Unix time as RFC 3339 in UTC (`2025-08-22T14:03:11Z`), as Vault writes times.
pub fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_755_871_391), "2025-08-22T14:03:11Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn durations_accept_every_form_clients_send() {
        assert_eq!(duration(&json!(3600)), Ok(3600));
        assert_eq!(duration(&json!("3600")), Ok(3600));
        assert_eq!(duration(&json!("1h")), Ok(3600));
        assert_eq!(duration(&json!("2160h0m0s")), Ok(2160 * 3600));
        assert_eq!(duration(&json!("7d")), Ok(7 * 86_400));
        assert_eq!(duration(&json!("1.5h")), Ok(5400));
        assert_eq!(duration(&json!("1h30m")), Ok(5400));
        assert_eq!(duration(&json!("300ms")), Ok(1));
        assert_eq!(duration(&json!(0.5)), Ok(1));
        assert_eq!(duration(&json!("0s")), Ok(0));
        assert_eq!(duration(&json!("1.5s")), Ok(1));
        assert_eq!(duration(&json!("0.1h")), Ok(360));
        assert_eq!(duration(&json!("")), Ok(0));
        assert!(duration(&json!("-5")).is_err());
        assert!(duration(&json!("banana")).is_err());
        assert!(duration(&json!("5 parsecs")).is_err());
        assert!(duration(&json!([1])).is_err());
    }

    #[test]
    fn durations_that_would_overflow_are_refused_everywhere() {
        assert_eq!(duration(&json!(MAX_DURATION_SECS)), Ok(MAX_DURATION_SECS));
        for huge in [
            json!(1e20),
            json!(MAX_DURATION_SECS + 1),
            json!(u64::MAX),
            json!("1e20"),
            json!("99999999999"),
            json!("9999999999999d"),
            json!("999999999999h"),
            json!(format!("{}h", "9".repeat(400))),
        ] {
            let refused = duration(&huge);
            assert!(refused.is_err(), "{huge} was accepted as {refused:?}");
        }
        assert!(duration(&json!(-1e20)).is_err_and(|e| e.contains("negative")));
    }

    #[test]
    fn weak_booleans_ints_and_lists() {
        assert_eq!(boolean(&json!("true")), Ok(true));
        assert_eq!(boolean(&json!("0")), Ok(false));
        assert!(boolean(&json!("yes please")).is_err());
        assert_eq!(int(&json!("42")), Ok(42));
        assert!(int(&json!("forty-two")).is_err());
        assert_eq!(
            strings(&json!("a, b,,c"), true),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(strings(&json!("a,b"), false), Ok(vec!["a,b".into()]));
        assert!(matches!(typed(FieldKind::Int, &json!("")), Ok(None)));
        assert!(matches!(typed(FieldKind::Bool, &Value::Null), Ok(None)));
    }

    #[test]
    fn go_duration_format_matches_go() {
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(300), "5m0s");
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90061), "25h1m1s");
    }
}
