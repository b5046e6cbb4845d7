//! Parse at the edge: a request body becomes a validated, path-resolved `TrainSpec`, or a
//! 4xx naming the field. Model and dataset paths must resolve (symlinks followed) inside the
//! configured roots.

use std::path::{Path, PathBuf};

use mlxtune_engine::models::{spec_from_config, HfConfig};
use mlxtune_engine::train::config::{from_value, FineTuneConfig};
use mlxtune_engine::train::trainer::load_data;
use mlxtune_engine::train::TrainSpec;
use mlxtune_engine::Tokenizer;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Resolves a path or `local://` URI inside one of `roots`.
pub fn confine(uri: &str, roots: &[PathBuf], param: &str) -> ApiResult<PathBuf> {
    if uri.contains("://") && !uri.starts_with("local://") {
        return Err(ApiError::invalid(
            param,
            format!("`{uri}`: only local paths and local:// URIs are supported so far"),
        ));
    }
    let raw = Path::new(uri.strip_prefix("local://").unwrap_or(uri));
    let candidates: Vec<PathBuf> = if raw.is_absolute() {
        vec![raw.to_path_buf()]
    } else {
        roots.iter().map(|r| r.join(raw)).collect()
    };
    let canon_roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    let mut outside = false;
    for c in candidates {
        if let Ok(real) = c.canonicalize() {
            if canon_roots.iter().any(|r| real.starts_with(r)) {
                return Ok(real);
            }
            outside = true;
        }
    }
    Err(ApiError::invalid(
        param,
        if outside {
            format!("`{uri}` is outside the configured roots")
        } else {
            format!("`{uri}` was not found under the configured roots")
        },
    ))
}

/// The validated job: the config as sent and the resolved spec.
pub struct ValidJob {
    pub config: FineTuneConfig,
    pub spec: TrainSpec,
    pub raw: Value,
}

/// Field checks, path confinement, then (blocking, on a worker thread) the model and data
/// pre-flight.
pub fn validate(
    body: Value,
    model_roots: &[PathBuf],
    dataset_roots: &[PathBuf],
) -> ApiResult<ValidJob> {
    let config =
        from_value(body.clone()).map_err(|e| ApiError::invalid(&e.param, e.to_string()))?;
    let mut spec =
        TrainSpec::from_config(&config).map_err(|e| ApiError::invalid(&e.param, e.to_string()))?;
    let model_dir = confine(&spec.base_model, model_roots, "baseModel")?;
    spec.base_model = model_dir.display().to_string();
    spec.train_data = confine(&spec.train_data, dataset_roots, "dataset.trainingData")?
        .display()
        .to_string();
    if let Some(v) = &spec.valid_data {
        spec.valid_data = Some(
            confine(v, dataset_roots, "dataset.validationData")?
                .display()
                .to_string(),
        );
    }
    let hf =
        HfConfig::read(&model_dir).map_err(|e| ApiError::invalid("baseModel", e.to_string()))?;
    let model_spec =
        spec_from_config(&hf).map_err(|e| ApiError::invalid("baseModel", e.to_string()))?;
    spec.check_against_model(&model_spec)
        .map_err(|e| ApiError::invalid(&e.param, e.to_string()))?;
    let tok = Tokenizer::from_dir(&model_dir, Some(&model_spec))
        .map_err(|e| ApiError::invalid("baseModel", e.to_string()))?;
    load_data(&spec, &tok, &spec.train_data)
        .map_err(|e| ApiError::invalid("dataset.trainingData", e.to_string()))?;
    if let Some(v) = &spec.valid_data {
        load_data(&spec, &tok, v)
            .map_err(|e| ApiError::invalid("dataset.validationData", e.to_string()))?;
    }
    Ok(ValidJob {
        config,
        spec,
        raw: body,
    })
}
