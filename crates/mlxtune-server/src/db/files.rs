//! The `files` table: uploaded data files.

use sqlx::SqlitePool;

use super::now;
use crate::api::file::FileObject;

/// A file row as sqlx reads it.
struct RawFile {
    id: String,
    created_at: i64,
    filename: String,
    purpose: String,
    bytes: i64,
    records: i64,
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
pub async fn succeeded_without_results(pool: &SqlitePool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM jobs WHERE status = 'succeeded'
           AND NOT EXISTS (SELECT 1 FROM files WHERE files.id = 'file-' || substr(jobs.id, 7))
         ORDER BY seq"#
    )
    .fetch_all(pool)
    .await
}

/// Inserts `f` unless a file with its id exists: a results file is registered once (its
/// id is its job's); uploads have fresh random ids.
pub async fn insert_file(pool: &SqlitePool, f: &NewFile<'_>) -> sqlx::Result<()> {
    let t = now();
    sqlx::query!(
        "INSERT OR IGNORE INTO files (id, seq, created_at, filename, purpose, bytes, records, path)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM files), ?2, ?3, ?4, ?5, ?6, ?7)",
        f.id,
        t,
        f.filename,
        f.purpose,
        f.bytes,
        f.records,
        f.path
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn get_file(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<FileObject>> {
    let row = sqlx::query_as!(
        RawFile,
        "SELECT id AS \"id!\", created_at, filename, purpose, bytes, records FROM files WHERE id = ?1",
        id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(FileObject::from))
}

/// Where a file's bytes are.
pub async fn file_path(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT path FROM files WHERE id = ?1", id)
        .fetch_optional(pool)
        .await
}

/// Newest first; `after` is a file id the page continues after.
pub async fn list_files(
    pool: &SqlitePool,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<FileObject>> {
    let rows = sqlx::query_as!(
        RawFile,
        "SELECT id AS \"id!\", created_at, filename, purpose, bytes, records FROM files
         WHERE ?1 IS NULL OR seq < (SELECT seq FROM files WHERE id = ?1)
         ORDER BY seq DESC LIMIT ?2",
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(FileObject::from).collect())
}

/// The oldest job that will still read the file (validating, queued, running or paused)
/// and its state as stored: one naming the file id as a dataset, or its path in the spec.
pub async fn job_using_file(
    pool: &SqlitePool,
    id: &str,
    path: &str,
) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query!(
        r#"SELECT id AS "id!", status FROM jobs
         WHERE status IN ('validating', 'queued', 'running', 'paused')
           AND (json_extract(config, '$.dataset.trainingData') = ?1
             OR json_extract(config, '$.dataset.validationData') = ?1
             OR json_extract(spec, '$.train_data') = ?2
             OR json_extract(spec, '$.valid_data') = ?2)
         ORDER BY seq LIMIT 1"#,
        id,
        path
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.id, r.status)))
}

/// Removes the row; its path, if it existed.
pub async fn delete_file(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("DELETE FROM files WHERE id = ?1 RETURNING path", id)
        .fetch_optional(pool)
        .await
}
