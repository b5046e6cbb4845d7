//! The end of a background pre-flight, in SQL on SQLite.

use sqlx::SqlitePool;

use crate::db::now;

pub async fn passed(pool: &SqlitePool, id: &str, spec: &str) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET status = 'queued', spec = ?1, updated_at = ?2
         WHERE id = ?3 AND status = 'validating'",
        spec,
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn failed(
    pool: &SqlitePool,
    id: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET status = 'failed', error_code = ?1, error_message = ?2,
                error_param = ?3, updated_at = ?4, finished_at = ?4
         WHERE id = ?5 AND status = 'validating'",
        code,
        message,
        param,
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
