//! Jobs' checkpoints and outputs on an object store (`storage.artifacts_url =
//! "s3://bucket/prefix"`, issue 16), so that a node that does not share the data directory
//! can resume a job or serve its model. Under `<prefix>/<job id>/`:
//! - `checkpoints/step-NNNNNNNN/<file>…`, then `checkpoints/step-NNNNNNNN/manifest.json`
//!   (every file's size and sha256; written last, it commits the checkpoint), then
//!   `checkpoints/latest` (the name of the newest committed checkpoint);
//! - `outputs/<file>…` (adapters, PEFT copy or full model), then `outputs/manifest.json`;
//! - `datasets/{train,valid}.jsonl`, then `datasets/manifest.json`: the datasets the node
//!   that accepted the job keeps in its own data directory (uploads, fetched datasets).
//!
//! A reader goes by manifests only, so it never sees a half-uploaded set. Downloads land in
//! a temporary directory beside their destination, are checked file by file against the
//! manifest, and are renamed into place. With a store, each node keeps its copy of a job's
//! files in its own `<data_dir>/jobs/<job id>`, whatever path the job row holds.
//!
//! `manifest.rs` the manifest, `upload.rs` and `download.rs` the transfers, `sync.rs` the
//! checkpoint uploads beside a running trainer, `jobs.rs` what a worker does before and
//! after a run, `served.rs` a fine-tuned model's files for inference and export,
//! `datasets.rs` a job's datasets from the node that accepted it to the one that runs it,
//! `prune.rs` a deleted job's objects.

mod datasets;
mod download;
mod jobs;
mod manifest;
mod prune;
mod served;
mod sync;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as Key;
use object_store::ObjectStore;

pub use datasets::{here as datasets_here, share as share_datasets};
pub use jobs::{after_run, before_run};
pub use prune::forget;
pub use served::{lineage_here, outputs_here};
pub use sync::CheckpointSync;

use crate::remote::s3::{self, S3Error};
use crate::settings::{ArtifactsUrl, Settings};

/// Why a transfer failed; each names the object or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("no client for {url}: {source}")]
    Client { url: String, source: S3Error },
    #[error("{url}: {source}")]
    Store {
        url: String,
        source: object_store::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{url}: sha256 {actual} does not match the manifest's {expected}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: {actual} bytes where the manifest says {expected}")]
    Size {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("{url}: not a manifest: {why}")]
    Manifest { url: String, why: String },
    #[error("{url} is not in the store")]
    Missing { url: String },
}

impl ArtifactError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
        move |source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the store holds something other than what its manifest says.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            ArtifactError::Checksum { .. } | ArtifactError::Size { .. }
        )
    }
}

pub type Result<T> = std::result::Result<T, ArtifactError>;

/// The artifacts store of `storage.artifacts_url`.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    url: ArtifactsUrl,
}

impl Store {
    /// The configured store; None without `storage.artifacts_url`.
    pub fn open(settings: &Settings) -> Result<Option<Store>> {
        let Some(url) = settings.storage.artifacts_url.clone() else {
            return Ok(None);
        };
        let objects = s3::store(&url.bucket, settings).map_err(|source| ArtifactError::Client {
            url: url.to_string(),
            source,
        })?;
        Ok(Some(Store {
            objects: Arc::new(objects),
            url,
        }))
    }

    /// The key of `rest` (`/`-separated) under the job's prefix.
    fn key(&self, job: &str, rest: &str) -> Key {
        let prefix = match self.url.prefix.as_str() {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Key::from(format!("{prefix}{job}/{rest}"))
    }

    /// A key as `s3://bucket/key`, for messages.
    fn shown(&self, key: &Key) -> String {
        format!("s3://{}/{key}", self.url.bucket)
    }

    /// A failed read of `key` (an absent object is `Missing`).
    fn failed(&self, key: &Key) -> impl FnOnce(object_store::Error) -> ArtifactError + '_ {
        let url = self.shown(key);
        move |source| match source {
            object_store::Error::NotFound { .. } => ArtifactError::Missing { url },
            source => ArtifactError::Store { url, source },
        }
    }

    /// A failed write of `key`.
    fn refused(&self, key: &Key) -> impl FnOnce(object_store::Error) -> ArtifactError + '_ {
        let url = self.shown(key);
        move |source| ArtifactError::Store { url, source }
    }
}

/// Where this node keeps a job's files when a store is configured.
pub fn local_dir(settings: &Settings, job: &str) -> PathBuf {
    settings.storage.data_dir.join("jobs").join(job)
}

/// The name of the best checkpoint that the checkpoint in `dir` records, if any.
fn best_of(dir: &Path) -> Option<String> {
    use mlxtune_engine::train::checkpoint::{step_dir_name, TrainState};
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    let state: TrainState = serde_json::from_str(&text).ok()?;
    state.best_step.map(step_dir_name)
}

/// Writes a small local file atomically (temporary file, fsync, rename).
fn write_local(path: &Path, bytes: &[u8]) -> Result<()> {
    mlxtune_engine::fsutil::write_atomic(path, bytes).map_err(|e| ArtifactError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}
