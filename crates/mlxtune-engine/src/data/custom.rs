//! The `custom` record format: a prompt and a completion template whose `{field}`
//! placeholders are filled from each record's fields, giving a completion record.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `custom` format: a prompt and a completion template over a record's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTemplate {
    pub prompt: String,
    pub completion: String,
}

impl CustomTemplate {
    /// The completion record (`{"prompt", "completion"}`) this template makes of `record`.
    pub fn apply(&self, record: &Value) -> Result<Value, String> {
        Ok(serde_json::json!({
            "prompt": fill(&self.prompt, record)?,
            "completion": fill(&self.completion, record)?,
        }))
    }
}

/// `template` with each `{key}` replaced by the record's field (strings as they are, other
/// values as JSON).
fn fill(template: &str, record: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or("template has an unclosed `{`")?
            + open;
        let key = &rest[open + 1..close];
        match record.get(key) {
            Some(Value::String(s)) => out.push_str(s),
            Some(v) if !v.is_null() => out.push_str(&v.to_string()),
            _ => return Err(format!("missing `{key}` (named by dataset.template)")),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(prompt: &str, completion: &str) -> CustomTemplate {
        CustomTemplate {
            prompt: prompt.into(),
            completion: completion.into(),
        }
    }

    #[test]
    fn placeholders_are_filled_from_the_record() {
        let t = template("Q: {question} ({n})\nA:", " {answer}");
        let r = t
            .apply(&json!({"question": "2+2?", "answer": "4", "n": 7}))
            .unwrap();
        assert_eq!(r, json!({"prompt": "Q: 2+2? (7)\nA:", "completion": " 4"}));
    }

    #[test]
    fn a_missing_or_null_field_is_named() {
        let t = template("{question}", "{answer}");
        let e = t
            .apply(&json!({"question": "x", "answer": null}))
            .unwrap_err();
        assert_eq!(e, "missing `answer` (named by dataset.template)");
    }

    #[test]
    fn an_unclosed_brace_is_an_error() {
        let e = template("{question", "x").apply(&json!({})).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
    }
}
