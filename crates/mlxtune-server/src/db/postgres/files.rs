//! The `files` table's SQL on PostgreSQL.

use sqlx::PgPool;

use crate::db::files::{NewFile, RawFile};
use crate::db::now;

pub async fn succeeded_without_results(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT id FROM jobs WHERE status = 'succeeded'
           AND NOT EXISTS (SELECT 1 FROM files WHERE files.id = 'file-' || substr(jobs.id, 7))
         ORDER BY seq"
    )
    .fetch_all(pool)
    .await
}

pub async fn insert_file(pool: &PgPool, f: &NewFile<'_>) -> sqlx::Result<()> {
    let t = now();
    sqlx::query!(
        "INSERT INTO files (id, created_at, filename, purpose, bytes, records, path)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
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

pub async fn get_file(pool: &PgPool, id: &str) -> sqlx::Result<Option<RawFile>> {
    sqlx::query_as!(
        RawFile,
        "SELECT id, created_at, filename, purpose, bytes, records FROM files WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

pub async fn file_path(pool: &PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT path FROM files WHERE id = $1", id)
        .fetch_optional(pool)
        .await
}

pub async fn list_files(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<RawFile>> {
    sqlx::query_as!(
        RawFile,
        "SELECT id, created_at, filename, purpose, bytes, records FROM files
         WHERE $1::TEXT IS NULL OR seq < (SELECT seq FROM files WHERE id = $1)
         ORDER BY seq DESC LIMIT $2",
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

/// The stored configuration and spec are JSON text, read here as `jsonb`.
pub async fn job_using_file(
    pool: &PgPool,
    id: &str,
    path: &str,
) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query!(
        "SELECT id, status FROM jobs
         WHERE status IN ('validating', 'queued', 'running', 'paused')
           AND (config::jsonb #>> '{dataset,trainingData}' = $1
             OR config::jsonb #>> '{dataset,validationData}' = $1
             OR spec::jsonb ->> 'train_data' = $2
             OR spec::jsonb ->> 'valid_data' = $2)
         ORDER BY seq LIMIT 1",
        id,
        path
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.id, r.status)))
}

pub async fn delete_file(pool: &PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("DELETE FROM files WHERE id = $1 RETURNING path", id)
        .fetch_optional(pool)
        .await
}
