//! The end of a background pre-flight (`validating_files`): the job is queued with its
//! validated spec, or failed with the error; neither touches a job cancelled meanwhile.

use super::{on, Db};

/// `validating_files` → `queued` with `spec`; false when the job is no longer validating.
pub async fn passed(db: &Db, id: &str, spec: &str) -> sqlx::Result<bool> {
    on!(db, preflight::passed(id, spec))
}

/// `validating_files` → `failed` with the pre-flight's error; false when the job is no
/// longer validating.
pub async fn failed(
    db: &Db,
    id: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> sqlx::Result<bool> {
    on!(db, preflight::failed(id, code, message, param))
}
