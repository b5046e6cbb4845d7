//! Typed reads from a Hugging Face `config.json`, every error naming the file and field.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::spec::RopeScaling;
use crate::error::{EngineError, Result};

/// A parsed `config.json`.
#[derive(Debug, Clone)]
pub struct HfConfig {
    pub file: PathBuf,
    pub json: serde_json::Map<String, Value>,
}

impl HfConfig {
    /// Reads and parses `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join("config.json");
        if !file.exists() {
            return Err(EngineError::MissingFile {
                dir: dir.to_path_buf(),
                file: "config.json".into(),
                why: "every Hugging Face model directory has one".into(),
            });
        }
        let text = std::fs::read_to_string(&file).map_err(|e| EngineError::io(&file, e))?;
        Self::parse(&file, &text)
    }

    /// Parses config text (for tests and in-memory configs).
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| EngineError::config(file, "(file)", format!("not valid JSON: {e}")))?;
        match value {
            Value::Object(json) => Ok(Self {
                file: file.to_path_buf(),
                json,
            }),
            _ => Err(EngineError::config(
                file,
                "(file)",
                "expected a JSON object",
            )),
        }
    }

    pub fn err(&self, field: &str, msg: impl Into<String>) -> EngineError {
        EngineError::config(&self.file, field, msg)
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.json.get(field).filter(|v| !v.is_null())
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// A required positive integer.
    pub fn req_i32(&self, field: &str) -> Result<i32> {
        self.opt_i32(field)?
            .ok_or_else(|| self.err(field, "required, missing"))
    }

    pub fn opt_i32(&self, field: &str) -> Result<Option<i32>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| *n > 0 && *n <= i32::MAX as i64)
                .map(|n| Some(n as i32))
                .ok_or_else(|| self.err(field, format!("expected a positive integer, got {v}"))),
        }
    }

    pub fn opt_f32(&self, field: &str) -> Result<Option<f32>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|n| Some(n as f32))
                .ok_or_else(|| self.err(field, format!("expected a number, got {v}"))),
        }
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected true or false, got {v}"))),
        }
    }

    pub fn model_type(&self) -> Result<String> {
        self.get("model_type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.err("model_type", "required, missing or not a string"))
    }

    /// Token ids given as one integer or a list (`eos_token_id`).
    pub fn token_ids(&self, field: &str) -> Result<Vec<u32>> {
        let parse = |v: &Value| {
            v.as_u64()
                .filter(|n| *n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| self.err(field, format!("expected token ids, got {v}")))
        };
        match self.get(field) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items.iter().map(parse).collect(),
            Some(v) => Ok(vec![parse(v)?]),
        }
    }

    /// RoPE base and scaling, from `rope_theta` + `rope_scaling` or from the newer
    /// `rope_parameters` object.
    pub fn rope(&self, default_theta: f32) -> Result<(f32, RopeScaling)> {
        let params = self
            .get("rope_parameters")
            .or_else(|| self.get("rope_scaling"));
        let params_field = if self.has("rope_parameters") {
            "rope_parameters"
        } else {
            "rope_scaling"
        };
        let mut theta = self.opt_f32("rope_theta")?.unwrap_or(default_theta);
        let Some(params) = params else {
            return Ok((theta, RopeScaling::None));
        };
        let obj = params
            .as_object()
            .ok_or_else(|| self.err(params_field, "expected an object"))?;
        if let Some(t) = obj.get("rope_theta").and_then(Value::as_f64) {
            theta = t as f32;
        }
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |key: &str| -> Result<f32> {
            obj.get(key)
                .and_then(Value::as_f64)
                .map(|v| v as f32)
                .ok_or_else(|| {
                    self.err(
                        &format!("{params_field}.{key}"),
                        "required for this rope_type",
                    )
                })
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: num("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            other => {
                return Err(self.err(
                    &format!("{params_field}.rope_type"),
                    format!("`{other}` is not supported (supported: default, linear, llama3)"),
                ))
            }
        };
        Ok((theta, scaling))
    }
}
