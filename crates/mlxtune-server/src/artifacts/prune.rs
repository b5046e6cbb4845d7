//! A deleted job's objects: everything under `<prefix>/<job id>/`, listed and deleted. A
//! store that cannot be reached leaves them (a warning in the log; a lifecycle rule on the
//! prefix catches what is left).

use futures_util::{StreamExt, TryStreamExt};

use super::Store;
use crate::settings::Settings;

/// Deletes the job's objects from the configured store, if any.
pub async fn forget(settings: &Settings, job: &str) {
    let store = match Store::open(settings) {
        Ok(Some(store)) => store,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(job_id = %job, error = %e, "the deleted job's objects stay in the artifacts store");
            return;
        }
    };
    let prefix = store.key(job, "");
    let listed = store.objects.list(Some(&prefix)).map_ok(|m| m.location);
    let deleted: Vec<_> = store.objects.delete_stream(listed.boxed()).collect().await;
    let failed = deleted.iter().filter(|r| r.is_err()).count();
    let shown = store.shown(&prefix);
    match deleted.iter().find_map(|r| r.as_ref().err()) {
        Some(e) => {
            tracing::warn!(job_id = %job, error = %e, failed, "some of the deleted job's objects stay in {shown}")
        }
        None => {
            tracing::info!(job_id = %job, objects = deleted.len(), "deleted the job's objects in {shown}")
        }
    }
}
