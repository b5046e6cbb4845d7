//! `/v1/files`: data uploaded for fine-tuning (OpenAI's Files API). An upload is streamed
//! to disk under `files.max_upload_bytes`, checked line by line (the JSONL pre-flight,
//! `file:line` errors), and kept under `<data_dir>/files/`. A job's `trainingData` /
//! `training_file` may then name the file id.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use utoipa::IntoParams;

use crate::api::file::{FileDeleted, FileList, FileObject};
use crate::api::{ErrorBody, JobStatus};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::results;
use crate::state::AppState;

/// The routes, with their own body limit (uploads are larger than JSON bodies).
pub fn routes(state: &AppState) -> Router<AppState> {
    let limit = state
        .settings
        .files
        .max_upload_bytes
        .saturating_add(64 * 1024);
    Router::new()
        .route("/v1/files", get(list).post(upload))
        .route("/v1/files/{id}", get(get_one).delete(delete))
        .route("/v1/files/{id}/content", get(content))
        .layer(DefaultBodyLimit::max(limit as usize))
}

/// Where uploads live.
pub fn files_dir(state: &AppState) -> std::path::PathBuf {
    state.settings.storage.data_dir.join("files")
}

/// POST /v1/files (multipart: `file`, `purpose=fine-tune`)
#[tracing::instrument(skip_all)]
#[utoipa::path(post, path = "/v1/files", operation_id = "createFile",
    request_body(content = crate::api::file::FileUpload, content_type = "multipart/form-data"),
    responses((status = 200, body = FileObject), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    mut form: Multipart,
) -> ApiResult<Json<FileObject>> {
    let id = format!("file-{}", uuid::Uuid::new_v4().simple());
    let dir = files_dir(&state);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal("files directory", e))?;
    let part = dir.join(format!("{id}.part"));
    let result = receive(&state, &mut form, &part).await;
    let (filename, purpose, bytes) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let check = {
        let (part, name) = (part.clone(), filename.clone());
        tokio::task::spawn_blocking(move || crate::validate::check_jsonl(&part, &name))
            .await
            .map_err(|e| ApiError::internal("file check", e))?
    };
    let records = match check {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let path = dir.join(format!("{id}.jsonl"));
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| ApiError::internal("storing an upload", e))?;
    let new = db::files::NewFile {
        id: &id,
        filename: &filename,
        purpose: &purpose,
        bytes: bytes as i64,
        records: records as i64,
        path: &path.display().to_string(),
    };
    db::files::insert_file(&state.db, &new).await?;
    tracing::info!(file_id = %id, bytes, records, "file uploaded");
    let file = db::files::get_file(&state.db, &id).await?;
    file.map(Json)
        .ok_or_else(|| ApiError::internal("upload", "the stored file is gone"))
}

/// Reads the form: `purpose` must be `fine-tune`; `file` is streamed into `part`.
async fn receive(
    state: &AppState,
    form: &mut Multipart,
    part: &std::path::Path,
) -> ApiResult<(String, String, u64)> {
    let max = state.settings.files.max_upload_bytes;
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(max)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_multipart", e.body_text())
        }
    };
    let (mut purpose, mut file) = (None, None);
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(bad)?),
            Some("file") => {
                let name = field.file_name().unwrap_or("upload.jsonl").to_string();
                let mut out = tokio::fs::File::create(part)
                    .await
                    .map_err(|e| ApiError::internal("upload file", e))?;
                let mut bytes = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    bytes += chunk.len() as u64;
                    if bytes > max {
                        return Err(too_large(max));
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| ApiError::internal("upload write", e))?;
                }
                out.sync_all()
                    .await
                    .map_err(|e| ApiError::internal("upload sync", e))?;
                file = Some((name, bytes));
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    other,
                    "is not a field of an upload (file, purpose)",
                ))
            }
            None => return Err(ApiError::invalid("(form)", "a form field has no name")),
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::invalid("purpose", "is required"))?;
    if purpose != "fine-tune" {
        return Err(ApiError::invalid(
            "purpose",
            format!("`{purpose}` is not supported; only `fine-tune` is"),
        ));
    }
    let (name, bytes) = file.ok_or_else(|| ApiError::invalid("file", "is required"))?;
    Ok((name, purpose, bytes))
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "file_too_large",
        format!("the file is over files.max_upload_bytes ({max} bytes)"),
    )
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// A file id: the page continues after it.
    after: Option<String>,
    /// 1..100, default 20.
    limit: Option<i64>,
}

/// GET /v1/files
#[utoipa::path(get, path = "/v1/files", operation_id = "listFiles", params(ListQuery),
    responses((status = 200, body = FileList), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<FileList>> {
    let limit = super::jobs::history::limit_in(q.limit, 20, 100)?;
    results::sync(&state).await?;
    let mut data = db::files::list_files(&state.db, q.after.as_deref(), limit + 1).await?;
    let has_more = data.len() as i64 > limit;
    data.truncate(limit as usize);
    Ok(Json(FileList {
        object: "list".into(),
        data,
        has_more,
    }))
}

async fn file_or_404(state: &AppState, id: &str) -> ApiResult<FileObject> {
    results::sync(state).await?;
    db::files::get_file(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("file {id}")))
}

/// GET /v1/files/{id}
#[utoipa::path(get, path = "/v1/files/{id}", operation_id = "retrieveFile", params(("id" = String, Path, description = "file id")),
    responses((status = 200, body = FileObject), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<FileObject>> {
    Ok(Json(file_or_404(&state, &id).await?))
}

/// GET /v1/files/{id}/content: the bytes as uploaded (a results file's CSV), streamed.
#[utoipa::path(get, path = "/v1/files/{id}/content", operation_id = "retrieveFileContent", params(("id" = String, Path, description = "file id")),
    responses((status = 200, content_type = "application/jsonl", body = String), (status = 404, body = ErrorBody)))]
pub async fn content(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    results::sync(&state).await?;
    let path = db::files::file_path(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("file {id}")))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal("reading a file", e))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let kind = match path.ends_with(".csv") {
        true => "text/csv",
        false => "application/jsonl",
    };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

/// DELETE /v1/files/{id}: not while a job that will still read it exists, nor a results
/// file while its job exists (409 naming the job).
#[utoipa::path(delete, path = "/v1/files/{id}", operation_id = "deleteFile", params(("id" = String, Path, description = "file id")),
    responses((status = 200, body = FileDeleted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<FileDeleted>> {
    let file = file_or_404(&state, &id).await?;
    if let Some(job) = results::owner(&state, &id)
        .await?
        .filter(|_| file.purpose == results::PURPOSE)
    {
        return Err(ApiError::conflict(format!(
            "file {id} holds the results of job {job}; it goes when the job is deleted (DELETE /v1/fine_tuning/jobs/{job})"
        )));
    }
    let path = db::files::file_path(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("file {id}")))?;
    if let Some((job, status)) = db::files::job_using_file(&state.db, &id, &path).await? {
        let status = status
            .parse::<JobStatus>()
            .map_or(status, |s| s.to_string());
        return Err(ApiError::conflict(format!(
            "file {id} is used by job {job} ({status}); delete it once the job has finished, or cancel the job first"
        )));
    }
    let path = db::files::delete_file(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("file {id}")))?;
    let _ = tokio::fs::remove_file(&path).await;
    Ok(Json(FileDeleted {
        id,
        object: "file".into(),
        deleted: true,
    }))
}
