//! What a worker does with a job's artifacts around its run. Before: the job's files are
//! this node's `<data_dir>/jobs/<id>`, and a resumed job gets the store's latest committed
//! checkpoint there when the local one is missing or older (a corrupt download fails the
//! job, naming the file). After: a paused or stopped job's last checkpoint is committed (a
//! warning when it cannot be: a node without this directory then resumes from an older
//! one); a completed job's outputs are uploaded, tried three times, and the job fails with
//! `artifact_upload_failed` when they cannot be, its local files untouched.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use mlxtune_engine::train::checkpoint::checkpoints_dir;
use mlxtune_engine::train::{Outcome, TrainResult};

use super::sync::warn;
use super::{download, local_dir, upload, ArtifactError, CheckpointSync, Store};
use crate::db::JobRow;
use crate::ending::Failure;
use crate::journal::note;
use crate::state::AppState;

/// How often a final upload is tried before it counts as failed.
const ATTEMPTS: u32 = 3;

fn failure(code: &'static str, message: String) -> Failure {
    Failure {
        code,
        param: None,
        message,
    }
}

/// A failed download as the job's failure: `artifact_checksum_mismatch` when the store holds
/// something else than its manifest says, else `artifact_download_failed`; `what` first.
pub(super) fn download_failed(what: &str, e: ArtifactError) -> Failure {
    let code = match e.is_corrupt() {
        true => "artifact_checksum_mismatch",
        false => "artifact_download_failed",
    };
    failure(code, format!("{what}: {e}"))
}

/// The job as this node runs it: with a store, its output directory is this node's own,
/// holding the latest committed checkpoint when the job resumes.
pub async fn before_run(state: &AppState, mut job: JobRow) -> Result<JobRow, Failure> {
    let what = "the job's checkpoint could not be restored";
    let download_failed = |e: ArtifactError| download_failed(what, e);
    let Some(store) = Store::open(&state.settings).map_err(download_failed)? else {
        return Ok(job);
    };
    let dir = local_dir(&state.settings, &job.id);
    job.output_dir = dir.display().to_string();
    if !job.resume {
        return Ok(job);
    }
    let fetched = download::checkpoint(&store, &job.id, &dir).await;
    if let Some(name) = fetched.map_err(download_failed)? {
        let text = format!("downloaded checkpoint {name} from the artifacts store (every file checked against its manifest)");
        let _ = note(state, &job.id, &text).await;
    }
    Ok(job)
}

/// The run's result once its artifacts are in the store (see the module's documentation).
pub async fn after_run(
    state: &AppState,
    job: &JobRow,
    sync: Option<CheckpointSync>,
    result: Result<TrainResult, Failure>,
) -> Result<TrainResult, Failure> {
    let Some(sync) = sync else { return result };
    let Some(store) = sync.finish().await else {
        return result;
    };
    let Ok(r) = result else { return result };
    let output = r.output_dir.clone();
    match r.outcome {
        Outcome::Completed | Outcome::EarlyStopped => {
            let sent = attempts(|| upload::outputs(&store, &job.id, &output)).await;
            let text = |e: ArtifactError| {
                format!("the job's outputs could not be uploaded to the artifacts store after {ATTEMPTS} attempts ({e}); they are kept in {} on {}", output.display(), state.node)
            };
            sent.map(|_| r)
                .map_err(|e| failure("artifact_upload_failed", text(e)))
        }
        Outcome::Paused => {
            if let Err(e) = last_checkpoint(&store, &job.id, &output).await {
                let text = format!("the last checkpoint was not uploaded to the artifacts store after {ATTEMPTS} attempts ({e}); a node without this data directory resumes from an older one");
                warn(state, &job.id, &text).await;
            }
            Ok(r)
        }
        Outcome::Cancelled => Ok(r),
    }
}

/// Commits the checkpoint `latest` names in `output`, if any.
async fn last_checkpoint(store: &Store, job: &str, output: &Path) -> super::Result<()> {
    let root = checkpoints_dir(output);
    let Ok(name) = std::fs::read_to_string(root.join("latest")) else {
        return Ok(());
    };
    let dir = root.join(name.trim());
    attempts(|| upload::checkpoint(store, job, &dir)).await
}

/// Runs `send` up to [`ATTEMPTS`] times, waiting 1 s, then 2 s, between them.
async fn attempts<T, F, Fut>(mut send: F) -> super::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = super::Result<T>>,
{
    let mut wait = Duration::from_secs(1);
    let mut tried = 1;
    loop {
        match send().await {
            Err(e) if tried < ATTEMPTS => {
                tracing::warn!(error = %e, "uploading to the artifacts store; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                (wait, tried) = (wait * 2, tried + 1);
            }
            done => return done,
        }
    }
}
