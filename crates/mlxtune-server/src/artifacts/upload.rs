//! Uploads: a directory's files, each hashed as it is sent, then its manifest; a checkpoint
//! (and the best checkpoint its state names, when the store lacks it), then `latest`; a
//! succeeded job's outputs; a job's datasets. Nothing local is changed but the outputs'
//! manifest copy.

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::manifest::{self, FileEntry, Manifest};
use super::{best_of, write_local, ArtifactError, Result, Store};

/// The top-level entries of an output directory that are uploaded: what serving, export
/// and continued training read.
pub const OUTPUTS: &[&str] = &[
    "adapters.safetensors",
    "adapter_config.json",
    "peft",
    "model",
];

/// Where this node keeps the outputs' manifest once they are complete in the directory.
pub const OUTPUTS_MARKER: &str = ".outputs-manifest.json";

/// Sends one file to `key` (in parts when it is large); its size and sha256.
async fn put_file(store: &Store, path: &Path, key: &Key) -> Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(ArtifactError::io(path))?;
    let mut writer = BufWriter::new(store.objects.clone(), key.clone());
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(ArtifactError::io(path)(e));
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hash.update(&buf);
        size += n as u64;
        if let Err(e) = writer.put(Bytes::from(buf)).await {
            let _ = writer.abort().await;
            return Err(store.refused(key)(e));
        }
    }
    writer.shutdown().await.map_err(|e| {
        let source = object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        };
        store.refused(key)(source)
    })?;
    Ok((size, mlxtune_engine::fsutil::hex(&hash.finalize())))
}

/// Uploads `files` (name in the folder, local path) under the job's `remote` folder, then
/// their manifest.
async fn upload_files(
    store: &Store,
    job: &str,
    remote: &str,
    files: &[(String, PathBuf)],
) -> Result<Manifest> {
    let mut entries = Vec::with_capacity(files.len());
    for (name, path) in files {
        let key = store.key(job, &format!("{remote}/{name}"));
        let (size, sha256) = put_file(store, path, &key).await?;
        entries.push(FileEntry {
            path: name.clone(),
            size,
            sha256,
        });
    }
    let m = Manifest { files: entries };
    put(
        store,
        &store.key(job, &format!("{remote}/{}", manifest::NAME)),
        m.to_bytes(),
    )
    .await?;
    Ok(m)
}

/// Uploads `files` of `dir` under the job's `remote` folder, then their manifest.
async fn upload_dir(
    store: &Store,
    job: &str,
    dir: &Path,
    remote: &str,
    files: &[String],
) -> Result<Manifest> {
    let files: Vec<(String, PathBuf)> = files.iter().map(|f| (f.clone(), dir.join(f))).collect();
    upload_files(store, job, remote, &files).await
}

async fn put(store: &Store, key: &Key, bytes: Vec<u8>) -> Result<()> {
    store
        .objects
        .put(key, bytes.into())
        .await
        .map(drop)
        .map_err(store.refused(key))
}

/// Commits the checkpoint directory `dir` unless the store has it already.
async fn commit_checkpoint(store: &Store, job: &str, dir: &Path) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let remote = format!("checkpoints/{name}");
    let marker = store.key(job, &format!("{remote}/{}", manifest::NAME));
    match store.objects.head(&marker).await {
        Ok(_) => return Ok(()),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store.failed(&marker)(e)),
    }
    let files = manifest::files_under(dir, None).map_err(ArtifactError::io(dir))?;
    upload_dir(store, job, dir, &remote, &files).await.map(drop)
}

/// Commits checkpoint `dir` (after the best one its state names, when that differs), then
/// points the store's `latest` at it.
pub async fn checkpoint(store: &Store, job: &str, dir: &Path) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    if let (Some(best), Some(root)) = (best_of(dir), dir.parent()) {
        if best != name {
            commit_checkpoint(store, job, &root.join(&best)).await?;
        }
    }
    commit_checkpoint(store, job, dir).await?;
    let latest = store.key(job, "checkpoints/latest");
    put(store, &latest, name.as_bytes().to_vec()).await
}

/// Uploads a succeeded job's outputs from `output`, then keeps their manifest there.
pub async fn outputs(store: &Store, job: &str, output: &Path) -> Result<Manifest> {
    let files = manifest::files_under(output, Some(OUTPUTS)).map_err(ArtifactError::io(output))?;
    let m = upload_dir(store, job, output, "outputs", &files).await?;
    write_local(&output.join(OUTPUTS_MARKER), &m.to_bytes())?;
    Ok(m)
}

/// Uploads a job's datasets (name, local path) under `datasets/`, then their manifest.
pub async fn datasets(store: &Store, job: &str, files: &[(String, PathBuf)]) -> Result<Manifest> {
    upload_files(store, job, super::datasets::REMOTE, files).await
}
