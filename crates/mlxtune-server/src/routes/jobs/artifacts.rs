//! A succeeded job's results, downloadable: `metrics.csv` (per step, like OpenAI's result
//! file), the adapters as `adapters.tar.gz` (mlx-lm layout: extract and pass the directory to
//! `mlxtune eval --adapter`) and `peft.tar.gz` (PEFT layout), or a full fine-tune's
//! `model.tar.gz`. Archives are written while they are sent, never held in memory.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;

use super::job_or_404;
use crate::api::ErrorBody;
use crate::api::JobStatus;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/fine_tuning/jobs/{id}/artifacts/{name}", get(download))
}

/// What a finished output directory holds, by artifact name.
fn available(output_dir: &FsPath) -> Vec<String> {
    let mut names = vec!["metrics.csv".to_string()];
    for (name, marker) in [
        ("adapters.tar.gz", "adapters.safetensors"),
        ("peft.tar.gz", "peft"),
        ("model.tar.gz", "model"),
    ] {
        if output_dir.join(marker).exists() {
            names.push(name.into());
        }
    }
    names
}

/// GET /v1/fine_tuning/jobs/{id}/artifacts/{name}
#[tracing::instrument(skip(state))]
#[utoipa::path(get, path = "/v1/fine_tuning/jobs/{id}/artifacts/{name}", operation_id = "downloadFineTuningJobArtifact",
    params(("id" = String, Path, description = "job id"),
           ("name" = String, Path, description = "metrics.csv, adapters.tar.gz, peft.tar.gz or model.tar.gz")),
    responses((status = 200, content_type = "application/octet-stream", body = String),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "the outputs are not on this node and the artifacts store could not provide them (code artifact_unavailable or artifact_checksum_mismatch)")))]
pub async fn download(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let row = job_or_404(&state, &id).await?;
    if row.status != JobStatus::Succeeded {
        return Err(ApiError::conflict(format!(
            "a {} job has no results yet; they are ready once it succeeded",
            row.status
        )));
    }
    let out =
        crate::artifacts::outputs_here(&state.settings, &id, FsPath::new(&row.output_dir)).await?;
    if !available(&out).contains(&name) {
        return Err(ApiError::not_found(&format!(
            "artifact {name} of {id} (this job has: {})",
            available(&out).join(", ")
        )));
    }
    if name == "metrics.csv" {
        let csv = crate::results::metrics_csv(&state, &id).await?;
        return Ok(([(header::CONTENT_TYPE, "text/csv")], csv).into_response());
    }
    let entries: Vec<(PathBuf, String)> = match name.as_str() {
        "adapters.tar.gz" => ["adapters.safetensors", "adapter_config.json"]
            .iter()
            .map(|f| (out.join(f), f.to_string()))
            .collect(),
        "peft.tar.gz" => vec![(out.join("peft"), "peft".into())],
        _ => vec![(out.join("model"), "model".into())],
    };
    let disposition = format!("attachment; filename=\"{id}-{name}\"");
    let body = stream_tar_gz(entries);
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// A `.tar.gz` of `entries` (files or directories, each under its name), produced on a
/// blocking thread as the client reads it.
fn stream_tar_gz(entries: Vec<(PathBuf, String)>) -> Body {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter(tx.clone());
        let gz = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let result = entries
            .iter()
            .try_for_each(|(path, name)| {
                if path.is_dir() {
                    tar.append_dir_all(name, path)
                } else {
                    tar.append_path_with_name(path, name)
                }
            })
            .and_then(|()| tar.into_inner()?.finish()?.flush());
        if let Err(e) = result {
            tracing::warn!(error = %e, "artifact archive stopped");
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Bytes written go to the response; a client that left stops the archive.
struct ChannelWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client left"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
