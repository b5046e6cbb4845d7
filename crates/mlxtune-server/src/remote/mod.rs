//! Datasets by URI: `s3://bucket/key` (object_store; credentials and endpoint from settings,
//! else the standard AWS environment) and `http(s)://`. Each is downloaded as a stream into
//! `<data_dir>/cache/datasets/<sha256>.jsonl`, keyed by content, and used from there.

use std::path::PathBuf;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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

fn store_for(
    uri: &str,
    settings: &Settings,
    param: &str,
) -> ApiResult<(Box<dyn ObjectStore>, ObjectPath)> {
    let bad = |m: String| ApiError::invalid(param, m);
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad(format!("`{uri}`: expected s3://bucket/key")))?;
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        let s3 = &settings.s3;
        if !s3.endpoint.is_empty() {
            b = b
                .with_endpoint(&s3.endpoint)
                .with_allow_http(s3.endpoint.starts_with("http://"));
        }
        if !s3.region.is_empty() {
            b = b.with_region(&s3.region);
        }
        if !s3.access_key_id.is_empty() {
            b = b
                .with_access_key_id(&s3.access_key_id)
                .with_secret_access_key(&s3.secret_access_key);
        }
        let store = b.build().map_err(|e| bad(format!("`{uri}`: {e}")))?;
        return Ok((Box::new(store), ObjectPath::from(key)));
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| bad(format!("`{uri}`: not a URI")))?;
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| bad(format!("`{uri}`: no path")))?;
    let store = object_store::http::HttpBuilder::new()
        .with_url(format!("{scheme}://{host}"))
        .with_client_options(object_store::ClientOptions::new().with_allow_http(scheme == "http"))
        .build()
        .map_err(|e| bad(format!("`{uri}`: {e}")))?;
    Ok((Box::new(store), ObjectPath::from(path)))
}

/// Downloads `uri` (streamed, hashed on the way) and returns the cached file.
#[tracing::instrument(skip(settings))]
pub async fn fetch(uri: &str, settings: &Settings, param: &str) -> ApiResult<PathBuf> {
    let (store, path) = store_for(uri, settings, param)?;
    let dir = cache_dir(settings);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal("cache dir", e))?;
    let tmp = dir.join(format!(".download-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let got = store
            .get(&path)
            .await
            .map_err(|e| ApiError::invalid(param, format!("`{uri}` cannot be read: {e}")))?;
        let mut stream = got.into_stream();
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ApiError::internal("cache file", e))?;
        let mut hash = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::invalid(param, format!("`{uri}`: download failed: {e}")))?;
            hash.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::internal("cache file", e))?;
        }
        file.sync_all()
            .await
            .map_err(|e| ApiError::internal("cache file", e))?;
        let name: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let dest = dir.join(format!("{name}.jsonl"));
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| ApiError::internal("cache file", e))?;
        Ok(dest)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}
