//! `/v1/fine_tuning/jobs`: submit, list and read jobs; deletion, control and history in
//! their own files.

pub mod artifacts;
pub mod control;
pub mod delete;
pub mod history;
pub mod openai;
pub mod preflight;

use axum::extract::{Path, Query, State};
use axum::Json;
use mlxtune_engine::train::{Level, TrainSpec};
use serde::Deserialize;
use utoipa::IntoParams;

use super::body::ConfigBody;
use crate::api::{ErrorBody, EventKind, Job, JobList, JobStatus};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::remote;
use crate::routes::names;
use crate::state::AppState;
use crate::validate::validate;

pub(crate) async fn job_or_404(state: &AppState, id: &str) -> ApiResult<db::JobRow> {
    db::get_job(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("job {id}")))
}

/// POST /v1/fine_tuning/jobs
#[tracing::instrument(skip_all)]
#[utoipa::path(post, path = "/v1/fine_tuning/jobs", operation_id = "createFineTuningJob", request_body = mlxtune_engine::train::FineTuneConfig,
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(State(state): State<AppState>, body: ConfigBody) -> ApiResult<Json<Job>> {
    let metadata = body
        .metadata
        .map(|m| {
            openai::check_metadata(&m).and_then(|()| {
                serde_json::to_string(&m).map_err(|e| ApiError::internal("metadata", e))
            })
        })
        .transpose()?;
    let (config, cap) = (body.config, body.default_sequence_length);
    let bytes = preflight::dataset_bytes(&state, &config).await?;
    let background = bytes > state.settings.files.async_validation_bytes;
    let spec = match background {
        true => None,
        false => Some(validated_spec(&state, &config, cap).await?),
    };
    let id = format!("ftjob-{}", uuid::Uuid::new_v4().simple());
    if let Some(spec) = &spec {
        crate::artifacts::share_datasets(&state, &id, spec).await?;
    }
    let output = state.settings.storage.data_dir.join("jobs").join(&id);
    let spec_text = match &spec {
        Some(s) => serde_json::to_string(s).map_err(|e| ApiError::internal("spec", e))?,
        None => preflight::placeholder(cap),
    };
    let config_text =
        serde_json::to_string(&config).map_err(|e| ApiError::internal("config", e))?;
    let job = db::NewJob {
        id: &id,
        status: match background {
            true => JobStatus::ValidatingFiles,
            false => JobStatus::Queued,
        },
        name: config.name.as_deref(),
        config: &config_text,
        spec: &spec_text,
        output_dir: &output.display().to_string(),
        metadata: metadata.as_deref(),
    };
    db::insert_job(&state.db, &job).await?;
    let note = match background {
        true => format!("{bytes} bytes of data (over files.async_validation_bytes): validating them in the background"),
        false => "job validated and queued".into(),
    };
    let what = (Level::Info, EventKind::Message, note.as_str());
    db::add_event(&state.db, &id, what, None, false).await?;
    tracing::info!(job_id = %id, background, "job stored");
    // Read before the pre-flight starts: the answer shows the state the job was stored in.
    let stored = job_or_404(&state, &id).await?.into();
    match background {
        true => preflight::spawn(state.clone(), id, config, cap),
        false => state.wake.notify_waiters(),
    }
    Ok(Json(stored))
}

/// Remote datasets are fetched into the cache first (the job keeps its URIs), then the
/// whole pre-flight runs off the async runtime.
async fn validated_spec(
    state: &AppState,
    config: &mlxtune_engine::train::FineTuneConfig,
    cap_sequence_length: bool,
) -> ApiResult<TrainSpec> {
    let mut local = config.clone();
    let d = &mut local.dataset;
    resolve_file_id(state, &mut d.training_data, "dataset.trainingData").await?;
    if let Some(v) = d.validation_data.as_mut() {
        resolve_file_id(state, v, "dataset.validationData").await?;
    }
    // Downloads of a refused submission are removed when `fetched` drops.
    let mut fetched = Vec::new();
    if remote::is_remote(&d.training_data) {
        let f = remote::fetch(&d.training_data, &state.settings, "dataset.trainingData").await?;
        d.training_data = f.path().display().to_string();
        fetched.push(f);
    }
    if let Some(v) = d.validation_data.as_mut().filter(|v| remote::is_remote(v)) {
        let f = remote::fetch(v, &state.settings, "dataset.validationData").await?;
        *v = f.path().display().to_string();
        fetched.push(f);
    }
    let model_dir = base_model_dir(state, &config.base_model).await?;
    let mut datasets = state.settings.paths.dataset_roots.clone();
    datasets.push(remote::cache_dir(&state.settings));
    datasets.push(super::files::files_dir(state));
    let spec = tokio::task::spawn_blocking(move || {
        if cap_sequence_length {
            cap_at_context(&mut local, &model_dir)?;
        }
        validate(&local, &model_dir, &datasets)
    })
    .await
    .map_err(|e| ApiError::internal("validation task", e))??;
    fetched.into_iter().for_each(remote::Fetched::keep);
    Ok(spec)
}

/// A dataset named by an uploaded file's id (`file-…`) becomes that file's path.
async fn resolve_file_id(state: &AppState, data: &mut String, param: &str) -> ApiResult<()> {
    if !data.starts_with("file-") {
        return Ok(());
    }
    match db::files::file_path(&state.db, data).await? {
        Some(path) => {
            *data = path;
            Ok(())
        }
        None => Err(ApiError::invalid(
            param,
            format!("file {data} was not found (upload it with POST /v1/files)"),
        )),
    }
}

/// An OpenAI body's default sequence length, lowered to the model's context length.
fn cap_at_context(
    config: &mut mlxtune_engine::train::FineTuneConfig,
    model_dir: &std::path::Path,
) -> ApiResult<()> {
    use mlxtune_engine::models::{spec_from_config, HfConfig};
    let spec = HfConfig::read(model_dir)
        .and_then(|c| spec_from_config(&c))
        .map_err(|e| ApiError::invalid("model", e.to_string()))?;
    let p = &mut config.parameters;
    p.sequence_length = p.sequence_length.min(spec.max_position_embeddings as u32);
    Ok(())
}

/// The directory a job trains from: `baseModel` through the registry; a fine-tuned
/// adapter is fused into its base once (continued training starts from base + adapter).
async fn base_model_dir(state: &AppState, name: &str) -> ApiResult<std::path::PathBuf> {
    if let Some(dir) = hub_metadata_only(state, name).await? {
        return Ok(dir);
    }
    let r = match names::resolve(state, name, "baseModel").await {
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
            return Err(ApiError::invalid("baseModel", e.message))
        }
        other => other?,
    };
    let Some(adapter) = r.adapter else {
        return Ok(r.dir);
    };
    let key = mlxtune_engine::fsutil::hex(&<sha2::Sha256 as sha2::Digest>::digest(r.id.as_bytes()));
    let out = state
        .settings
        .storage
        .data_dir
        .join("models")
        .join("fused")
        .join(&key[..16]);
    if out.exists() {
        return Ok(out);
    }
    let (dir, target) = (r.dir.clone(), out.clone());
    tokio::task::spawn_blocking(move || fuse_for_training(&dir, &adapter, &target))
        .await
        .map_err(|e| ApiError::internal("fusing a base model", e))?
        .map_err(|e| ApiError::invalid("baseModel", e.to_string()))?;
    Ok(out)
}

/// A Hugging Face id no one has registered yet: only its config and tokenizer are fetched
/// now (the pre-flight needs them); the worker fetches the weights with progress events.
async fn hub_metadata_only(state: &AppState, name: &str) -> ApiResult<Option<std::path::PathBuf>> {
    let name = names::canonical(state, name);
    let local = crate::validate::confine(name, &state.settings.paths.model_roots, "baseModel");
    if !crate::hub::is_repo_id(name)
        || !state.settings.models.download
        || local.is_ok()
        || db::get_model(&state.db, name).await?.is_some()
    {
        return Ok(None);
    }
    let cfg = crate::hub::HubConfig::from_env();
    crate::hub::download_part(name, &cfg, None, false)
        .await
        .map(Some)
        .map_err(|e| ApiError::invalid("baseModel", e.to_string()))
}

fn fuse_for_training(
    dir: &std::path::Path,
    adapter: &std::path::Path,
    out: &std::path::Path,
) -> mlxtune_engine::Result<()> {
    use mlxtune_engine::{adapters::Adapter, fuse, LoadOptions, Model};
    let mut model = Model::load(dir, &LoadOptions::default())?;
    let a = Adapter::load(adapter)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| mlxtune_engine::EngineError::Io {
            path: parent.into(),
            source: e,
        })?;
    }
    fuse::fuse_and_save(&mut model, Some(&a), true, out, u64::MAX)
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// A job id: the page continues after it.
    after: Option<String>,
    /// 1..100, default 20.
    limit: Option<i64>,
    /// Only jobs in this state (validating_files, queued, running, paused, succeeded,
    /// failed, cancelled).
    status: Option<String>,
}

/// GET /v1/fine_tuning/jobs
#[utoipa::path(get, path = "/v1/fine_tuning/jobs", operation_id = "listFineTuningJobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<JobList>> {
    let limit = history::limit_in(q.limit, 20, 100)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid("status", e))?;
    let rows = db::list_jobs(&state.db, q.after.as_deref(), limit + 1, status).await?;
    let has_more = rows.len() as i64 > limit;
    Ok(Json(JobList {
        object: "list".into(),
        data: rows
            .into_iter()
            .take(limit as usize)
            .map(Job::from)
            .collect(),
        has_more,
    }))
}

/// GET /v1/fine_tuning/jobs/{id}
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}", operation_id = "retrieveFineTuningJob", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(job_or_404(&state, &id).await?.into()))
}
