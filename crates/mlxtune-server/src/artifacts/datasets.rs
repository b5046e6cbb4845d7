//! A job's datasets through the store, for workers that do not share the data directory of
//! the node that accepted the job. That node uploads the datasets it keeps in its own data
//! directory (uploaded files, fetched `http(s)://` and `s3://` datasets) under
//! `<prefix>/<job id>/datasets/` before the job can be claimed. A worker on which such a
//! path is missing downloads them (each file checked against the manifest) into its own
//! `<data_dir>/jobs/<id>/datasets/` and trains on those. Paths under `paths.dataset_roots`
//! are the operator's to provide on every node (a shared mount), as model directories are.

use std::path::PathBuf;

use axum::http::StatusCode;
use mlxtune_engine::train::TrainSpec;

use super::jobs::download_failed;
use super::served::api_error;
use super::{download, local_dir, upload, Store};
use crate::db::JobRow;
use crate::ending::Failure;
use crate::error::ApiError;
use crate::journal::note;
use crate::settings::Settings;
use crate::state::AppState;

/// The job's folder of datasets in the store.
pub(super) const REMOTE: &str = "datasets";
const TRAIN: &str = "train.jsonl";
const VALID: &str = "valid.jsonl";

/// The spec's datasets as (name in the store, path on this node).
fn named(spec: &TrainSpec) -> Vec<(&'static str, PathBuf)> {
    let valid = spec.valid_data.as_ref().map(|v| (VALID, PathBuf::from(v)));
    std::iter::once((TRAIN, PathBuf::from(&spec.train_data)))
        .chain(valid)
        .collect()
}

/// The spec's datasets that live in this node's data directory (the spec's paths are
/// canonical, so the directory is compared canonical too: `/tmp` is `/private/tmp` on macOS).
fn node_local(settings: &Settings, spec: &TrainSpec) -> Vec<(String, PathBuf)> {
    let dir = &settings.storage.data_dir;
    let root = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    named(spec)
        .into_iter()
        .filter(|(_, p)| p.starts_with(&root))
        .map(|(name, p)| (name.to_string(), p))
        .collect()
}

/// Uploads the node-local datasets of a job about to be queued (nothing without a store);
/// a store that refuses them refuses the submission (503 `artifact_upload_failed`).
pub async fn share(state: &AppState, job: &str, spec: &TrainSpec) -> Result<(), ApiError> {
    let Some(store) = Store::open(&state.settings).map_err(api_error)? else {
        return Ok(());
    };
    let files = node_local(&state.settings, spec);
    if files.is_empty() {
        return Ok(());
    }
    upload::datasets(&store, job, &files).await.map_err(|e| {
        tracing::error!(job_id = %job, error = %e, "uploading a job's datasets");
        let message =
            format!("the job's datasets could not be uploaded to the artifacts store: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "artifact_upload_failed",
            message,
        )
    })?;
    Ok(())
}

/// The spec with dataset paths this node can read: a missing one is replaced by the store's
/// copy, downloaded and checked first (a job without a copy fails, naming the path).
pub async fn here(
    state: &AppState,
    job: &JobRow,
    mut spec: TrainSpec,
) -> Result<TrainSpec, Failure> {
    let missing: Vec<&'static str> = named(&spec)
        .into_iter()
        .filter(|(_, p)| !p.exists())
        .map(|(name, _)| name)
        .collect();
    if missing.is_empty() {
        return Ok(spec);
    }
    let what = format!("the job's datasets are not on {}", state.node);
    let Some(store) = Store::open(&state.settings).map_err(|e| download_failed(&what, e))? else {
        return Ok(spec);
    };
    let dir = local_dir(&state.settings, &job.id).join(REMOTE);
    download::datasets(&store, &job.id, &dir)
        .await
        .map_err(|e| download_failed(&what, e))?;
    let local = |name: &str| dir.join(name).display().to_string();
    for name in &missing {
        match *name {
            TRAIN => spec.train_data = local(TRAIN),
            _ => spec.valid_data = Some(local(VALID)),
        }
    }
    let text = format!(
        "downloaded the job's datasets from the artifacts store into {} (every file checked against its manifest)",
        dir.display()
    );
    let _ = note(state, &job.id, &text).await;
    Ok(spec)
}
