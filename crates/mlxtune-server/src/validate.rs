//! Parse at the edge: a request body becomes a validated, path-resolved `TrainSpec`, or a
//! 4xx naming the field. Model and dataset paths must resolve (symlinks followed) inside the
//! configured roots.

use std::path::{Path, PathBuf};

use mlxtune_engine::train::{prepare, FineTuneConfig, TrainSpec};
use mlxtune_engine::EngineError;

use crate::error::{ApiError, ApiResult};

/// Resolves a path or `local://` URI inside one of `roots`. A path outside them gets the
/// same answer as a missing one, so the answers tell nothing about files elsewhere.
pub fn confine(uri: &str, roots: &[PathBuf], param: &str) -> ApiResult<PathBuf> {
    if let Some((scheme, _)) = uri.split_once("://").filter(|(s, _)| *s != "local") {
        let supported = if param.starts_with("dataset") {
            "a path, local://, http://, https://, s3:// or an uploaded file's id"
        } else {
            "a model name, a path or local://"
        };
        return Err(ApiError::invalid(
            param,
            format!(
                "`{}`: the {scheme}:// scheme is not supported; use {supported}",
                crate::remote::redacted(uri)
            ),
        ));
    }
    let raw = Path::new(uri.strip_prefix("local://").unwrap_or(uri));
    let candidates: Vec<PathBuf> = if raw.is_absolute() {
        vec![raw.to_path_buf()]
    } else {
        roots.iter().map(|r| r.join(raw)).collect()
    };
    let canon_roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    candidates
        .iter()
        .filter_map(|c| c.canonicalize().ok())
        .find(|real| canon_roots.iter().any(|r| real.starts_with(r)))
        .ok_or_else(|| {
            ApiError::invalid(
                param,
                format!("`{uri}` was not found under the configured roots"),
            )
        })
}

/// A dataset: confined, and a regular file (a FIFO or device would block the reader).
fn confine_file(uri: &str, roots: &[PathBuf], param: &str) -> ApiResult<String> {
    let path = confine(uri, roots, param)?;
    if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(ApiError::invalid(
            param,
            format!("`{uri}` is not a regular file"),
        ));
    }
    Ok(path.display().to_string())
}

/// The model directory holds no FIFO, socket or device: reading one (a `config.json` that is
/// a FIFO) would hold the request.
fn check_model_files(model_dir: &Path) -> ApiResult<()> {
    let Ok(entries) = std::fs::read_dir(model_dir) else {
        return Ok(()); // reading the config names the problem
    };
    for entry in entries.flatten() {
        let special = std::fs::metadata(entry.path()).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if special {
            return Err(ApiError::invalid(
                "baseModel",
                format!(
                    "`{}` in the model directory is not a regular file",
                    entry.file_name().to_string_lossy()
                ),
            ));
        }
    }
    Ok(())
}

/// Every safetensors file of the model has a well-formed header that fits the file, so a
/// truncated or empty weights file is refused now rather than when the job starts. A model
/// without weights yet (a Hugging Face id whose weights the worker fetches) is skipped.
fn check_weight_headers(model_dir: &Path) -> ApiResult<()> {
    use mlxtune_engine::weights::{read_header, weight_files};
    for file in weight_files(model_dir).unwrap_or_default() {
        read_header(&file).map_err(|e| ApiError::invalid("baseModel", e.to_string()))?;
    }
    Ok(())
}

/// Field checks, path confinement, then (blocking, on a worker thread) the model and data
/// pre-flight: the pieces the trainer's own `prepare` uses, without loading weights. The
/// tokenized data lands in the tokenized-data cache, so the worker reads it back in one go.
/// `model_dir` is the base model's directory, already resolved (through the registry).
pub fn validate(
    config: &FineTuneConfig,
    model_dir: &Path,
    dataset_roots: &[PathBuf],
) -> ApiResult<TrainSpec> {
    let mut spec =
        TrainSpec::from_config(config).map_err(|e| ApiError::invalid(&e.param, e.to_string()))?;
    spec.base_model = model_dir.display().to_string();
    spec.train_data = confine_file(&spec.train_data, dataset_roots, "dataset.trainingData")?;
    if let Some(v) = &spec.valid_data {
        spec.valid_data = Some(confine_file(v, dataset_roots, "dataset.validationData")?);
    }
    check_model_files(model_dir)?;
    let model_spec = prepare::model_spec(&spec).map_err(|e| named(e, "baseModel"))?;
    check_weight_headers(model_dir)?;
    let tok = prepare::tokenizer(&spec, &model_spec).map_err(|e| named(e, "baseModel"))?;
    prepare::load_data(&spec, &tok, &spec.train_data)
        .map_err(|e| named(e, "dataset.trainingData"))?;
    if let Some(v) = &spec.valid_data {
        prepare::load_data(&spec, &tok, v).map_err(|e| named(e, "dataset.validationData"))?;
    }
    Ok(spec)
}

/// The upload pre-flight: every line of a JSONL file is a JSON record of one format (chat,
/// completion or text, from the first record) with that format's fields. The first bad line
/// is a 422 naming `name:line`; the number of records otherwise. Tokenization is checked when
/// a job uses the file (the tokenizer is the job's model's).
pub fn check_jsonl(path: &Path, name: &str) -> ApiResult<usize> {
    use mlxtune_engine::data::{chat::content_text, detect_format, read_jsonl, DataFormat};
    let at = |line: usize, why: String| ApiError::invalid("file", format!("{name}:{line}: {why}"));
    let mut format = None;
    let mut records = 0;
    let lines = read_jsonl(path).map_err(|e| ApiError::internal("reading an upload", e))?;
    for item in lines {
        let (line, record) = item.map_err(|e| match e {
            EngineError::Data { line, message, .. } => at(line, message),
            other => ApiError::internal("reading an upload", other),
        })?;
        let this = detect_format(&record).ok_or_else(|| {
            at(
                line,
                "expected `messages`, `prompt`+`completion` or `text`".into(),
            )
        })?;
        let first = *format.get_or_insert(this);
        if this != first {
            return Err(at(line, format!("a {this:?} record in a {first:?} file")));
        }
        let ok = match this {
            DataFormat::Chat => record["messages"].as_array().is_some_and(|m| {
                !m.is_empty()
                    && m.iter().enumerate().all(|(i, m)| {
                        m["role"].is_string() && matches!(content_text(m, i), Ok(Some(_)))
                    })
            }),
            DataFormat::Completion => {
                record["prompt"].is_string() && record["completion"].is_string()
            }
            DataFormat::Text => record["text"].is_string(),
        };
        if !ok {
            let want = match this {
                DataFormat::Chat => {
                    "`messages` must be a non-empty list of {role, content}, each content a string or a list of text parts"
                }
                DataFormat::Completion => "`prompt` and `completion` must be strings",
                DataFormat::Text => "`text` must be a string",
            };
            return Err(at(line, want.into()));
        }
        records += 1;
    }
    if records == 0 {
        return Err(ApiError::invalid("file", format!("{name}: no records")));
    }
    Ok(records)
}

/// A pre-flight error as a 422: a field the engine names itself, else `param`.
fn named(e: EngineError, param: &str) -> ApiError {
    match e {
        EngineError::Invalid { field, message } => ApiError::invalid(&field, message),
        other => ApiError::invalid(param, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_roots_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("datasets");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.jsonl"), "{}").unwrap();
        std::fs::write(dir.path().join("secret.jsonl"), "{}").unwrap();
        let roots = vec![root.clone()];
        let real = root.canonicalize().unwrap().join("sub/a.jsonl");
        assert_eq!(confine("sub/a.jsonl", &roots, "p").unwrap(), real);
        assert_eq!(confine("local://sub/a.jsonl", &roots, "p").unwrap(), real);
        let e = confine("../secret.jsonl", &roots, "p").unwrap_err();
        assert!(e.message.contains("not found"), "{}", e.message);
        let e = confine("missing.jsonl", &roots, "p").unwrap_err();
        assert!(e.message.contains("not found"), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("p"));
    }

    #[test]
    fn a_symlink_out_of_the_roots_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.path().join("outside.jsonl"), "{}").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.jsonl"), root.join("link.jsonl"))
            .unwrap();
        let e = confine("link.jsonl", &[root], "p").unwrap_err();
        assert!(e.message.contains("not found"), "{}", e.message);
    }

    #[test]
    fn other_uri_schemes_are_refused_by_name() {
        let e = confine("ftp://u:pw@host/a.jsonl", &[], "dataset.trainingData").unwrap_err();
        assert!(
            e.message.contains("ftp://***@host/a.jsonl"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("http://, https://, s3://"),
            "{}",
            e.message
        );
    }
}
