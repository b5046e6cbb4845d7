//! The `files` table: uploaded data files.

use super::{on, Db};
use crate::api::file::FileObject;

/// A file row as sqlx reads it.
pub(super) struct RawFile {
    pub(super) id: String,
    pub(super) created_at: i64,
    pub(super) filename: String,
    pub(super) purpose: String,
    pub(super) bytes: i64,
    pub(super) records: i64,
}

impl From<RawFile> for FileObject {
    fn from(r: RawFile) -> FileObject {
        FileObject {
            id: r.id,
            object: "file".into(),
            bytes: r.bytes,
            created_at: r.created_at,
            filename: r.filename,
            purpose: r.purpose,
            status: "processed".into(),
            records: r.records,
        }
    }
}

/// What an upload stores.
pub struct NewFile<'a> {
    pub id: &'a str,
    pub filename: &'a str,
    pub purpose: &'a str,
    pub bytes: i64,
    pub records: i64,
    pub path: &'a str,
}

/// Succeeded jobs whose results file (`file-` and the job id's hex) is not registered.
pub async fn succeeded_without_results(db: &Db) -> sqlx::Result<Vec<String>> {
    on!(db, files::succeeded_without_results())
}

/// Inserts `f` unless a file with its id exists: a results file is registered once (its
/// id is its job's); uploads have fresh random ids.
pub async fn insert_file(db: &Db, f: &NewFile<'_>) -> sqlx::Result<()> {
    on!(db, files::insert_file(f))
}

pub async fn get_file(db: &Db, id: &str) -> sqlx::Result<Option<FileObject>> {
    Ok(on!(db, files::get_file(id))?.map(FileObject::from))
}

/// Where a file's bytes are.
pub async fn file_path(db: &Db, id: &str) -> sqlx::Result<Option<String>> {
    on!(db, files::file_path(id))
}

/// Newest first; `after` is a file id the page continues after.
pub async fn list_files(db: &Db, after: Option<&str>, limit: i64) -> sqlx::Result<Vec<FileObject>> {
    Ok(on!(db, files::list_files(after, limit))?
        .into_iter()
        .map(FileObject::from)
        .collect())
}

/// The oldest job that will still read the file (validating, queued, running or paused)
/// and its state as stored: one naming the file id as a dataset, or its path in the spec.
pub async fn job_using_file(
    db: &Db,
    id: &str,
    path: &str,
) -> sqlx::Result<Option<(String, String)>> {
    on!(db, files::job_using_file(id, path))
}

/// Removes the row; its path, if it existed.
pub async fn delete_file(db: &Db, id: &str) -> sqlx::Result<Option<String>> {
    on!(db, files::delete_file(id))
}
