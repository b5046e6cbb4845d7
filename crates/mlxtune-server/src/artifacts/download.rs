//! Downloads: a committed directory into a temporary one beside its destination, every
//! file's size and sha256 checked against the manifest as it arrives, then renamed into
//! place; a failed or refused download leaves nothing but what was there before.

use std::path::Path;

use futures_util::StreamExt;
use mlxtune_engine::train::checkpoint::{checkpoints_dir, step_of};
use object_store::path::Path as Key;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::manifest::{self, FileEntry, Manifest};
use super::upload::OUTPUTS_MARKER;
use super::{best_of, write_local, ArtifactError, Result, Store};

/// The manifest of the job's `remote` folder, or None when nothing is committed there.
async fn manifest(store: &Store, job: &str, remote: &str) -> Result<Option<Manifest>> {
    let key = store.key(job, &format!("{remote}/{}", manifest::NAME));
    match read_small(store, &key).await? {
        Some(bytes) => Manifest::parse(&bytes, &store.shown(&key)).map(Some),
        None => Ok(None),
    }
}

/// A small object's bytes, or None when there is no such object.
async fn read_small(store: &Store, key: &Key) -> Result<Option<Vec<u8>>> {
    let got = match store.objects.get(key).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store.failed(key)(e)),
    };
    let bytes = got.bytes().await.map_err(store.failed(key))?;
    Ok(Some(bytes.to_vec()))
}

/// Downloads one file to `path`, refusing it when it is not what `want` says.
async fn fetch_file(store: &Store, key: &Key, path: &Path, want: &FileEntry) -> Result<()> {
    let url = store.shown(key);
    let got = store.objects.get(key).await.map_err(store.failed(key))?;
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(ArtifactError::io(parent))?;
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(ArtifactError::io(path))?;
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    let mut body = got.into_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(store.failed(key))?;
        size += chunk.len() as u64;
        if size > want.size {
            break;
        }
        hash.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(ArtifactError::io(path))?;
    }
    if size != want.size {
        let (expected, actual) = (want.size, size);
        return Err(ArtifactError::Size {
            url,
            expected,
            actual,
        });
    }
    let actual = mlxtune_engine::fsutil::hex(&hash.finalize());
    if actual != want.sha256 {
        let expected = want.sha256.clone();
        return Err(ArtifactError::Checksum {
            url,
            expected,
            actual,
        });
    }
    file.sync_all().await.map_err(ArtifactError::io(path))
}

/// Downloads the job's committed `remote` folder into `tmp` (removed again on failure).
async fn fetch_dir(store: &Store, job: &str, remote: &str, tmp: &Path) -> Result<Manifest> {
    let url = store.shown(&store.key(job, remote));
    let m = manifest(store, job, remote)
        .await?
        .ok_or(ArtifactError::Missing { url })?;
    for f in &m.files {
        let key = store.key(job, &format!("{remote}/{}", f.path));
        if let Err(e) = fetch_file(store, &key, &tmp.join(&f.path), f).await {
            let _ = tokio::fs::remove_dir_all(tmp).await;
            return Err(e);
        }
    }
    Ok(m)
}

/// A temporary name beside `name` in `dir` (`.step-…` ones are swept like the trainer's).
fn temporary(dir: &Path, name: &str) -> std::path::PathBuf {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    dir.join(format!(".{name}.tmp-download-{}", &tag[..8]))
}

/// Replaces `dest` (file or directory) with `from`.
async fn replace(from: &Path, dest: &Path) -> Result<()> {
    match tokio::fs::metadata(dest).await {
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(dest).await,
        Ok(_) => tokio::fs::remove_file(dest).await,
        Err(_) => Ok(()),
    }
    .map_err(ArtifactError::io(dest))?;
    tokio::fs::rename(from, dest)
        .await
        .map_err(ArtifactError::io(dest))
}

/// Brings the committed checkpoint `name` into the checkpoints directory `root`.
async fn place_checkpoint(store: &Store, job: &str, root: &Path, name: &str) -> Result<()> {
    let tmp = temporary(root, name);
    fetch_dir(store, job, &format!("checkpoints/{name}"), &tmp).await?;
    replace(&tmp, &root.join(name)).await
}

/// The step of the local checkpoint `latest` names, when it is complete.
fn local_step(root: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(root.join("latest")).ok()?;
    let name = name.trim();
    root.join(name)
        .join("state.json")
        .is_file()
        .then(|| step_of(name))?
}

/// Brings the store's latest committed checkpoint into `output` when the local one is
/// missing or older (with the best checkpoint it names, and the `latest` and `best`
/// pointers); the name of the checkpoint downloaded.
pub async fn checkpoint(store: &Store, job: &str, output: &Path) -> Result<Option<String>> {
    let Some(bytes) = read_small(store, &store.key(job, "checkpoints/latest")).await? else {
        return Ok(None);
    };
    let name = String::from_utf8_lossy(&bytes).trim().to_string();
    let root = checkpoints_dir(output);
    if step_of(&name).is_none() || local_step(&root) >= step_of(&name) {
        return Ok(None);
    }
    tokio::fs::create_dir_all(&root)
        .await
        .map_err(ArtifactError::io(&root))?;
    place_checkpoint(store, job, &root, &name).await?;
    if let Some(best) = best_of(&root.join(&name)) {
        if !root.join(&best).join("state.json").is_file() {
            place_checkpoint(store, job, &root, &best).await?;
        }
        write_local(&root.join("best"), best.as_bytes())?;
    }
    write_local(&root.join("latest"), name.as_bytes())?;
    Ok(Some(name))
}

/// Downloads a succeeded job's outputs into `dir`: each top-level entry renamed into place,
/// then the manifest kept there (what says they are complete).
pub async fn outputs(store: &Store, job: &str, dir: &Path) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(ArtifactError::io(dir))?;
    let tmp = temporary(dir, "outputs");
    let m = fetch_dir(store, job, "outputs", &tmp).await?;
    let mut tops: Vec<&str> = m
        .files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    tops.dedup();
    for top in tops {
        replace(&tmp.join(top), &dir.join(top)).await?;
    }
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    write_local(&dir.join(OUTPUTS_MARKER), &m.to_bytes())
}

/// Downloads a job's committed datasets into `dir` (replacing what is there).
pub async fn datasets(store: &Store, job: &str, dir: &Path) -> Result<Manifest> {
    let parent = dir.parent().unwrap_or(dir);
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(ArtifactError::io(parent))?;
    let tmp = temporary(parent, super::datasets::REMOTE);
    let m = fetch_dir(store, job, super::datasets::REMOTE, &tmp).await?;
    replace(&tmp, dir).await?;
    Ok(m)
}
