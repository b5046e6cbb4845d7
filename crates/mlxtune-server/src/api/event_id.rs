//! Event ids as OpenAI writes them, `ftevent-<n>`, where `n` is the event's sequence number
//! (increasing across all jobs). Pages and streams continue after an id given either way:
//! `after=ftevent-42`, or the bare `after=42` that clients before these ids sent.

use serde::{Deserialize, Deserializer, Serializer};

const PREFIX: &str = "ftevent-";

/// `ftevent-<n>`.
pub fn format(n: i64) -> String {
    format!("{PREFIX}{n}")
}

/// The sequence number of `ftevent-<n>` or of a bare `<n>` (none for anything else).
pub fn parse(s: &str) -> Option<i64> {
    s.strip_prefix(PREFIX)
        .unwrap_or(s)
        .parse()
        .ok()
        .filter(|n| *n >= 0)
}

/// An `after` query value: the sequence number to continue after (0 when absent), or a
/// message for a 422 naming the value.
pub fn after(value: Option<&str>) -> Result<i64, String> {
    match value {
        None => Ok(0),
        Some(v) => parse(v)
            .ok_or_else(|| format!("`{v}` is not an event id (ftevent-<n>, or the number n)")),
    }
}

/// serde `with`: written as `ftevent-<n>`.
pub fn serialize<S: Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*n))
}

/// serde `with`: read from `ftevent-<n>` (or a bare number).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Text(String),
        Number(i64),
    }
    match Wire::deserialize(d)? {
        Wire::Number(n) => Ok(n),
        Wire::Text(t) => {
            parse(&t).ok_or_else(|| serde::de::Error::custom(format!("`{t}` is not an event id")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_an_event_id_give_its_number() {
        assert_eq!(format(42), "ftevent-42");
        assert_eq!(parse("ftevent-42"), Some(42));
        assert_eq!(parse("42"), Some(42));
        for bad in ["ftevent-", "ftevent-x", "-3", "ftjob-1", ""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(after(None), Ok(0));
        assert!(after(Some("nope")).unwrap_err().contains("`nope`"));
    }
}
