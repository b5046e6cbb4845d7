//! OpenAI's fine-tuning job body mapped onto the product config. `POST /v1/fine_tuning/jobs`
//! takes our config, OpenAI's body (`model`, `training_file`, `validation_file`,
//! `hyperparameters`, `method`, `suffix`, `seed`, `metadata`), or both at once (the OpenAI
//! SDK sends its own fields with ours as `extra_body`). OpenAI's fields fill in what ours
//! leave out; a field given both ways must agree. Everything else stays strict.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

pub use crate::api::job::BASE_LEARNING_RATE;
/// Epochs for `n_epochs: "auto"` (or none given) on an OpenAI body.
pub const DEFAULT_EPOCHS: f64 = 3.0;
/// Sequence length for an OpenAI body, capped by the model's context.
pub const DEFAULT_SEQUENCE_LENGTH: u64 = 2048;

const KEYS: [&str; 7] = [
    "model",
    "training_file",
    "validation_file",
    "hyperparameters",
    "method",
    "suffix",
    "metadata",
];

/// A number or `"auto"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum AutoOr<T> {
    Auto(mlxtune_engine::train::config::AutoWord),
    Value(T),
}

impl<T> AutoOr<T> {
    fn value(self) -> Option<T> {
        match self {
            AutoOr::Auto(_) => None,
            AutoOr::Value(v) => Some(v),
        }
    }
}

/// OpenAI's `hyperparameters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    pub n_epochs: Option<AutoOr<f64>>,
    pub batch_size: Option<AutoOr<u32>>,
    pub learning_rate_multiplier: Option<AutoOr<f64>>,
}

/// `method.supervised`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Supervised {
    #[serde(default)]
    pub hyperparameters: Option<Hyperparameters>,
}

/// OpenAI's `method`: only `supervised` exists here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub supervised: Option<Supervised>,
}

/// The OpenAI fields of a job body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiFields {
    pub model: Option<String>,
    pub training_file: Option<String>,
    pub validation_file: Option<String>,
    pub hyperparameters: Option<Hyperparameters>,
    pub method: Option<Method>,
    pub suffix: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A job body split into our config (as JSON, OpenAI's fields mapped in) and what only
/// OpenAI's body says.
#[derive(Debug)]
pub struct Mapped {
    pub config: Value,
    pub metadata: Option<BTreeMap<String, String>>,
    /// `parameters.sequenceLength` was filled in with the default: cap it at the model's
    /// context once the model is known.
    pub default_sequence_length: bool,
}

/// Takes OpenAI's fields out of `body` and maps them onto the product config.
pub fn map(body: Value) -> ApiResult<Mapped> {
    let Value::Object(mut config) = body else {
        return Err(ApiError::invalid("(body)", "must be a JSON object"));
    };
    let mut ours = Map::new();
    for k in KEYS {
        if let Some(v) = config.remove(k) {
            ours.insert(k.to_string(), v);
        }
    }
    let fields: OpenAiFields = super::super::body::parse_named(Value::Object(ours))?;
    let openai_body = fields.model.is_some() || fields.training_file.is_some();
    let mut default_sequence_length = false;
    agree(
        &mut config,
        &["baseModel"],
        fields.model.map(Value::from),
        "model",
    )?;
    agree(
        &mut config,
        &["dataset", "trainingData"],
        fields.training_file.map(Value::from),
        "training_file",
    )?;
    agree(
        &mut config,
        &["dataset", "validationData"],
        fields.validation_file.map(Value::from),
        "validation_file",
    )?;
    agree(
        &mut config,
        &["name"],
        fields.suffix.map(Value::from),
        "suffix",
    )?;
    let (hp, hp_param) = hyperparameters(fields.hyperparameters, fields.method)?;
    let hp = hp.unwrap_or_default();
    let p = |name: &str| format!("{hp_param}.{name}");
    let epochs = hp.n_epochs.and_then(AutoOr::value);
    let batch = hp.batch_size.map(|b| match b {
        AutoOr::Auto(_) => json!("auto"),
        AutoOr::Value(n) => json!(n),
    });
    let lr = hp
        .learning_rate_multiplier
        .and_then(AutoOr::value)
        .map(|m| m * BASE_LEARNING_RATE);
    if let Some(m) = lr.filter(|m| m.is_nan() || *m <= 0.0) {
        return Err(ApiError::invalid(
            &p("learning_rate_multiplier"),
            format!("{} must be > 0", m / BASE_LEARNING_RATE),
        ));
    }
    agree(
        &mut config,
        &["parameters", "epochs"],
        epochs.map(Value::from),
        &p("n_epochs"),
    )?;
    agree(
        &mut config,
        &["parameters", "batchSize"],
        batch,
        &p("batch_size"),
    )?;
    agree(
        &mut config,
        &["parameters", "learningRate"],
        lr.map(Value::from),
        &p("learning_rate_multiplier"),
    )?;
    if openai_body {
        fill(
            &mut config,
            &["parameters", "epochs"],
            json!(DEFAULT_EPOCHS),
        );
        fill(&mut config, &["parameters", "batchSize"], json!("auto"));
        fill(
            &mut config,
            &["parameters", "learningRate"],
            json!(BASE_LEARNING_RATE),
        );
        default_sequence_length = fill(
            &mut config,
            &["parameters", "sequenceLength"],
            json!(DEFAULT_SEQUENCE_LENGTH),
        );
    }
    Ok(Mapped {
        config: Value::Object(config),
        metadata: fields.metadata,
        default_sequence_length,
    })
}

/// OpenAI's limits on `metadata`: at most 16 pairs, keys up to 64 characters, values up to
/// 512.
pub fn check_metadata(m: &BTreeMap<String, String>) -> ApiResult<()> {
    if m.len() > 16 {
        return Err(ApiError::invalid("metadata", "holds at most 16 pairs"));
    }
    for (k, v) in m {
        if k.chars().count() > 64 {
            return Err(ApiError::invalid(
                &format!("metadata.{k}"),
                "keys are at most 64 characters",
            ));
        }
        if v.chars().count() > 512 {
            return Err(ApiError::invalid(
                &format!("metadata.{k}"),
                "values are at most 512 characters",
            ));
        }
    }
    Ok(())
}

/// `hyperparameters`, from the top level (deprecated by OpenAI) or
/// `method.supervised.hyperparameters`, with the path to name in errors.
fn hyperparameters(
    top: Option<Hyperparameters>,
    method: Option<Method>,
) -> ApiResult<(Option<Hyperparameters>, &'static str)> {
    let Some(m) = method else {
        return Ok((top, "hyperparameters"));
    };
    if m.kind != "supervised" {
        return Err(ApiError::invalid(
            "method.type",
            format!("`{}` is not supported; only `supervised` is", m.kind),
        ));
    }
    let inner = m.supervised.and_then(|s| s.hyperparameters);
    match (top, inner) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "hyperparameters",
            "give hyperparameters either at the top level or in method.supervised, not both",
        )),
        (Some(t), None) => Ok((Some(t), "hyperparameters")),
        (None, inner) => Ok((inner, "method.supervised.hyperparameters")),
    }
}

/// Sets `path` to `value` when it is absent; a different value already there is a 422
/// naming the OpenAI field `param`.
fn agree(
    config: &mut Map<String, Value>,
    path: &[&str],
    value: Option<Value>,
    param: &str,
) -> ApiResult<()> {
    let Some(value) = value else { return Ok(()) };
    let mut node = config;
    for part in &path[..path.len() - 1] {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(map) = entry else {
            return Err(ApiError::invalid(part, "must be an object"));
        };
        node = map;
    }
    let last = path[path.len() - 1];
    match node.get(last) {
        Some(existing) if !existing.is_null() && !same(existing, &value) => Err(ApiError::invalid(
            param,
            format!(
                "{value} differs from {} = {existing}; give one",
                path.join(".")
            ),
        )),
        _ => {
            node.insert(last.to_string(), value);
            Ok(())
        }
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Sets `path` to `value` when absent; whether it did.
fn fill(config: &mut Map<String, Value>, path: &[&str], value: Value) -> bool {
    let absent = path[..path.len() - 1]
        .iter()
        .try_fold(&*config, |node, part| node.get(*part)?.as_object())
        .is_none_or(|node| node.get(path[path.len() - 1]).is_none_or(Value::is_null));
    if absent {
        // `agree` never fails on an absent value.
        let _ = agree(config, path, Some(value), "");
    }
    absent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openai_body_becomes_a_product_config() {
        let m = map(json!({
            "model": "lfm2", "training_file": "file-abc", "suffix": "mine", "seed": 3,
            "method": {"type": "supervised", "supervised": {"hyperparameters":
                {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 2}}},
            "metadata": {"team": "a"}
        }))
        .unwrap();
        assert_eq!(
            m.config,
            json!({"baseModel": "lfm2", "dataset": {"trainingData": "file-abc"}, "name": "mine",
                   "seed": 3, "parameters": {"epochs": 2.0, "batchSize": "auto",
                   "learningRate": 2e-4, "sequenceLength": 2048}})
        );
        assert!(m.default_sequence_length);
        assert_eq!(m.metadata.unwrap()["team"], "a");
    }

    #[test]
    fn both_bodies_must_agree_and_unknown_openai_fields_are_named() {
        let ours = json!({"baseModel": "lfm2", "dataset": {"trainingData": "t.jsonl"},
                          "parameters": {"learningRate": 1e-3, "batchSize": 2, "epochs": 1, "sequenceLength": 64}});
        let mut both = ours.clone();
        both["model"] = json!("lfm2");
        both["training_file"] = json!("t.jsonl");
        let m = map(both).unwrap();
        assert_eq!(m.config, ours);
        assert!(!m.default_sequence_length);
        let mut clash = ours.clone();
        clash["model"] = json!("other");
        assert_eq!(map(clash).unwrap_err().param.as_deref(), Some("model"));
        let e = map(json!({"model": "m", "hyperparameters": {"n_epoch": 2}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("hyperparameters.n_epoch"));
        assert!(
            e.message.contains("hyperparameters.n_epochs"),
            "{}",
            e.message
        );
        let e = map(json!({"model": "m", "method": {"type": "dpo"}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("method.type"));
    }
}
