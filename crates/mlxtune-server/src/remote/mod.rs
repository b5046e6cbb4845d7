//! Datasets by URI: `s3://bucket/key` (object_store; credentials and endpoint from settings,
//! else the standard AWS environment) and `http(s)://`. Each is downloaded as a stream into
//! `<data_dir>/cache/datasets/<sha256>.jsonl`, keyed by content, and used from there.
//! Downloads reach public addresses only unless allowed (`guard.rs`), stop at
//! `remote.max_download_bytes`, leave nothing behind when refused, and show URIs without
//! their credentials (`redact.rs`).

mod guard;
mod redact;
pub mod s3;

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use guard::is_public;
pub use redact::redacted;

use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;

/// Whether `uri` names a remote dataset.
pub fn is_remote(uri: &str) -> bool {
    uri.starts_with("s3://") || uri.starts_with("http://") || uri.starts_with("https://")
}

/// Where downloaded datasets live.
pub fn cache_dir(settings: &Settings) -> PathBuf {
    settings.storage.data_dir.join("cache").join("datasets")
}

/// A download under way: its announced size and its bytes.
struct Download {
    len: Option<u64>,
    body: BoxStream<'static, ApiResult<Bytes>>,
}

/// The errors of one download, each naming the URI without its credentials.
struct Failures<'a> {
    param: &'a str,
    shown: String,
}

impl Failures<'_> {
    fn invalid(&self, why: impl std::fmt::Display) -> ApiError {
        ApiError::invalid(self.param, format!("`{}`: {why}", self.shown))
    }

    /// The one answer for a host that cannot be reached, whatever the reason (refused
    /// address, no such name, closed port, timeout), so answers cannot map a network.
    fn unreachable(&self, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(uri = %self.shown, error = %cause, "dataset download failed");
        self.invalid(guard::Refused)
    }
}

/// A downloaded dataset in the cache. Dropped without [`Fetched::keep`] (its submission was
/// refused), the file is removed, unless an earlier download had brought the same content.
pub struct Fetched {
    path: PathBuf,
    remove_on_drop: bool,
}

impl Fetched {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dataset stays in the cache (its job was accepted).
    pub fn keep(mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads `uri` (streamed, hashed on the way, at most `remote.max_download_bytes`) into
/// the cache. A refused or failed download leaves no file.
#[tracing::instrument(skip_all, fields(uri = %redacted(uri)))]
pub async fn fetch(uri: &str, settings: &Settings, param: &str) -> ApiResult<Fetched> {
    let fail = Failures {
        param,
        shown: redacted(uri).into_owned(),
    };
    let download = if uri.starts_with("s3://") {
        open_s3(uri, settings, &fail).await?
    } else {
        open_http(uri, settings, &fail).await?
    };
    let max = settings.remote.max_download_bytes;
    if download.len.is_some_and(|n| n > max) {
        return Err(too_large(&fail, max));
    }
    let dir = cache_dir(settings);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal("cache dir", e))?;
    let tmp = dir.join(format!(".download-{}", uuid::Uuid::new_v4().simple()));
    let result = save(download.body, &tmp, &dir, max, &fail).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

fn too_large(fail: &Failures, max: u64) -> ApiError {
    fail.invalid(format!(
        "larger than remote.max_download_bytes ({max} bytes)"
    ))
}

/// Writes the body to `tmp`, then renames it to its content hash in `dir`.
async fn save(
    mut body: BoxStream<'static, ApiResult<Bytes>>,
    tmp: &Path,
    dir: &Path,
    max: u64,
    fail: &Failures<'_>,
) -> ApiResult<Fetched> {
    let io = |e: std::io::Error| ApiError::internal("cache file", e);
    let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
    let (mut hash, mut written) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        written += chunk.len() as u64;
        if written > max {
            return Err(too_large(fail, max));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    let name = mlxtune_engine::fsutil::hex(&hash.finalize());
    let dest = dir.join(format!("{name}.jsonl"));
    let fresh = !tokio::fs::try_exists(&dest).await.unwrap_or(true);
    tokio::fs::rename(tmp, &dest).await.map_err(io)?;
    Ok(Fetched {
        path: dest,
        remove_on_drop: fresh,
    })
}

async fn open_http(uri: &str, settings: &Settings, fail: &Failures<'_>) -> ApiResult<Download> {
    let url = reqwest::Url::parse(uri).map_err(|e| fail.invalid(e))?;
    let remote = &settings.remote;
    guard::check_literal(url.host_str().unwrap_or(""), remote.allow_private_addresses)
        .map_err(|e| fail.unreachable(&e))?;
    let client = guard::client(remote).map_err(|e| ApiError::internal("http client", e))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail.unreachable(&e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail.invalid(format!("the server answered {status}")));
    }
    let len = response.content_length();
    let shown = fail.shown.clone();
    let param = fail.param.to_string();
    let body = response
        .bytes_stream()
        .map_err(move |e| {
            tracing::warn!(uri = %shown, error = %e.without_url(), "dataset download broke off");
            ApiError::invalid(&param, format!("`{shown}`: the download broke off"))
        })
        .boxed();
    Ok(Download { len, body })
}

async fn open_s3(uri: &str, settings: &Settings, fail: &Failures<'_>) -> ApiResult<Download> {
    let (bucket, key) = uri["s3://".len()..]
        .split_once('/')
        .ok_or_else(|| fail.invalid("expected s3://bucket/key"))?;
    let store = s3::store(bucket, settings).map_err(|e| match e {
        s3::S3Error::Refused(r) => fail.unreachable(&r),
        s3::S3Error::Build(b) => fail.invalid(b),
    })?;
    let got = store
        .get(&ObjectPath::from(key))
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => fail.invalid("not found"),
            other => fail.unreachable(&other),
        })?;
    let len = Some(got.meta.size);
    let (shown, param) = (fail.shown.clone(), fail.param.to_string());
    let body = got
        .into_stream()
        .map_err(move |e| {
            tracing::warn!(uri = %shown, error = %e, "dataset download broke off");
            ApiError::invalid(&param, format!("`{shown}`: the download broke off"))
        })
        .boxed();
    Ok(Download { len, body })
}
