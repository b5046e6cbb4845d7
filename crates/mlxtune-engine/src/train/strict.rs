//! Strict configuration files: an unknown field is an error naming its full path and the
//! closest known name (`lora.dropuot is an unknown field; did you mean lora.dropout?`), and
//! `--set path=value` overrides edit a config before it is checked. Used for the training
//! config here and for the service's settings.

use serde_json::{Map, Value};

/// serde's unknown-field message (`unknown field `x`, expected one of `a`, `b``) found at
/// `path` (dotted; the field's parent, or the field itself as serde_path_to_error reports
/// it; `.` or empty for the root), as the unknown field's full path and a message naming
/// the closest known field. `None` when `message` is about something else.
pub fn unknown_field(path: &str, message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, tail) = rest.split_once('`')?;
    let parent = if path == field {
        ""
    } else {
        path.strip_suffix(field)
            .and_then(|p| p.strip_suffix('.'))
            .unwrap_or(path)
    };
    let known: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    let join = |name: &str| {
        if parent.is_empty() || parent == "." {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        }
    };
    let message = match closest(field, &known) {
        Some(k) => format!("is an unknown field; did you mean {}?", join(k)),
        None if known.is_empty() => "is an unknown field (nothing is expected here)".into(),
        None => format!("is an unknown field; known here: {}", known.join(", ")),
    };
    Some((join(field), message))
}

/// The known name nearest to `field` (case and `_`/`-` ignored, transpositions counted
/// once), when it is near enough to be a likely typo.
pub fn closest<'a>(field: &str, known: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let f = norm(field);
    let (best, distance) = known
        .iter()
        .map(|k| (*k, strsim::osa_distance(&f, &norm(k))))
        .min_by_key(|(_, d)| *d)?;
    let limit = (f.chars().count() / 3).max(2);
    (distance <= limit).then_some(best)
}

/// A `--set path=value` override: `value` is read as JSON when it parses (numbers, booleans,
/// arrays, quoted strings), else taken as a string. Missing objects on the path are created.
/// The edited document is then checked like any other, so a misspelled path is refused.
pub fn set_path(root: &mut Value, assignment: &str) -> Result<(), String> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| format!("`{assignment}`: expected PATH=VALUE"))?;
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!(
            "`{assignment}`: the path is empty or has an empty part"
        ));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            let above = parts[..i].join(".");
            return Err(format!("{above} is not an object; cannot set {path}"));
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return Ok(());
        }
        node = map.entry((*part).to_string()).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_typo_is_named_with_the_closest_field() {
        let m = "unknown field `dropuot`, expected one of `dropout`, `targetModules`, `numLayers`";
        let (param, message) = unknown_field("lora", m).unwrap();
        assert_eq!(param, "lora.dropuot");
        assert_eq!(message, "is an unknown field; did you mean lora.dropout?");
        let (_, message) = unknown_field("lora", &m.replace("dropuot", "numLayerz")).unwrap();
        assert!(message.ends_with("lora.numLayers?"), "{message}");
        let m = "unknown field `learning_rate`, expected `learningRate` or `epochs`";
        let (param, message) = unknown_field(".", m).unwrap();
        assert_eq!(param, "learning_rate");
        assert!(message.ends_with("did you mean learningRate?"), "{message}");
    }

    #[test]
    fn a_name_far_from_every_field_lists_them() {
        let m = "unknown field `colour`, expected `bits` or `groupSize`";
        let (_, message) = unknown_field("quantization", m).unwrap();
        assert_eq!(message, "is an unknown field; known here: bits, groupSize");
        assert!(unknown_field("", "invalid type: string").is_none());
    }

    #[test]
    fn overrides_set_typed_values_and_create_objects() {
        let mut v = json!({"parameters": {"learningRate": 1e-3}});
        set_path(&mut v, "parameters.learningRate=1e-4").unwrap();
        set_path(&mut v, "lora.targetModules=[\"q_proj\"]").unwrap();
        set_path(&mut v, "name=my run").unwrap();
        set_path(&mut v, "packing=true").unwrap();
        assert_eq!(
            v,
            json!({"parameters": {"learningRate": 1e-4}, "lora": {"targetModules": ["q_proj"]},
                   "name": "my run", "packing": true})
        );
        assert!(set_path(&mut v, "packing.x=1")
            .unwrap_err()
            .contains("packing is not an object"));
        assert!(set_path(&mut v, "noequals").is_err());
        assert!(set_path(&mut v, "a..b=1").is_err());
    }
}
