//! A fine-tuned model's files for inference and export: with a store, a node reads a job's
//! outputs from its own `<data_dir>/jobs/<job id>`, downloading them (checked) first when
//! they are not complete there.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;

use super::manifest::Manifest;
use super::upload::OUTPUTS_MARKER;
use super::{download, local_dir, ArtifactError, Store};
use crate::api::Lineage;
use crate::error::ApiError;
use crate::settings::Settings;

/// One download of outputs at a time, so that two requests never rename over each other.
static DOWNLOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `dir` holds the complete outputs its kept manifest lists.
fn complete(dir: &Path) -> bool {
    std::fs::read(dir.join(OUTPUTS_MARKER))
        .ok()
        .and_then(|b| Manifest::parse(&b, "").ok())
        .is_some_and(|m| m.present_in(dir))
}

/// The directory of job `job`'s outputs on this node: `recorded` (the job's own directory)
/// without a store, or when the store has none for a job that ran before it was configured.
pub async fn outputs_here(
    settings: &Settings,
    job: &str,
    recorded: &Path,
) -> Result<PathBuf, ApiError> {
    if settings.storage.artifacts_url.is_none() {
        return Ok(recorded.to_path_buf());
    }
    let dir = local_dir(settings, job);
    if complete(&dir) {
        return Ok(dir);
    }
    let _one = DOWNLOADING.lock().await;
    let store = match Store::open(settings).map_err(api_error)? {
        Some(store) if !complete(&dir) => store,
        _ => return Ok(dir),
    };
    match download::outputs(&store, job, &dir).await {
        Ok(()) => {
            tracing::info!(job_id = %job, dir = %dir.display(), "downloaded a job's outputs from the artifacts store");
            Ok(dir)
        }
        Err(ArtifactError::Missing { .. }) if recorded.exists() => Ok(recorded.to_path_buf()),
        Err(e) => Err(api_error(e)),
    }
}

/// A fine-tuned model's lineage with its paths on this node (its files downloaded first
/// when they are not here).
pub async fn lineage_here(settings: &Settings, l: &Lineage) -> Result<Lineage, ApiError> {
    if settings.storage.artifacts_url.is_none() {
        return Ok(l.clone());
    }
    let recorded = l
        .adapter_path
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| Some(Path::new(l.fused_path.as_ref()?).parent()?.to_path_buf()))
        .unwrap_or_default();
    let dir = outputs_here(settings, &l.job_id, &recorded).await?;
    Ok(Lineage {
        adapter_path: l.adapter_path.as_ref().map(|_| dir.display().to_string()),
        fused_path: l
            .fused_path
            .as_ref()
            .map(|_| dir.join("model").display().to_string()),
        ..l.clone()
    })
}

/// A failed download as the API answers it: 503, naming the object (never credentials).
pub fn api_error(e: ArtifactError) -> ApiError {
    tracing::error!(error = %e, "artifacts store");
    let code = match e.is_corrupt() {
        true => "artifact_checksum_mismatch",
        false => "artifact_unavailable",
    };
    let message = format!("the model's files could not be fetched from the artifacts store: {e}");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
}
