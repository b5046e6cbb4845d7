//! The `files` table's SQL on SQLite.

use sqlx::SqlitePool;

use crate::db::files::{NewFile, RawFile};
use crate::db::now;

pub async fn succeeded_without_results(pool: &SqlitePool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM jobs WHERE status = 'succeeded'
           AND NOT EXISTS (SELECT 1 FROM files WHERE files.id = 'file-' || substr(jobs.id, 7))
         ORDER BY seq"#
    )
    .fetch_all(pool)
    .await
}

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

pub async fn get_file(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<RawFile>> {
    sqlx::query_as!(
        RawFile,
        "SELECT id AS \"id!\", created_at, filename, purpose, bytes, records FROM files WHERE id = ?1",
        id
    )
    .fetch_optional(pool)
    .await
}

pub async fn file_path(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT path FROM files WHERE id = ?1", id)
        .fetch_optional(pool)
        .await
}

pub async fn list_files(
    pool: &SqlitePool,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<RawFile>> {
    sqlx::query_as!(
        RawFile,
        "SELECT id AS \"id!\", created_at, filename, purpose, bytes, records FROM files
         WHERE ?1 IS NULL OR seq < (SELECT seq FROM files WHERE id = ?1)
         ORDER BY seq DESC LIMIT ?2",
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

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

pub async fn delete_file(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("DELETE FROM files WHERE id = ?1 RETURNING path", id)
        .fetch_optional(pool)
        .await
}
