//! The `models` table's SQL on PostgreSQL.

use sqlx::PgPool;

use crate::db::models::{ModelRecord, RawModel};
use crate::db::now;

/// Registers a model through a pool or inside a transaction.
pub async fn insert_model<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    m: &ModelRecord<'_>,
) -> sqlx::Result<bool> {
    let t = now();
    let r = sqlx::query!(
        "INSERT INTO models (id, created_at, kind, source, path, base_model, job_id,
                checkpoint, train_loss, valid_loss, adapter_path, fused_path)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING",
        m.id,
        t,
        m.kind,
        m.source,
        m.path,
        m.base_model,
        m.job_id,
        m.checkpoint,
        m.train_loss,
        m.valid_loss,
        m.adapter_path,
        m.fused_path
    )
    .execute(ex)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get_model(pool: &PgPool, id: &str) -> sqlx::Result<Option<RawModel>> {
    sqlx::query_as!(
        RawModel,
        "SELECT id, created_at, kind, source, path, base_model, job_id, checkpoint,
                train_loss, valid_loss, adapter_path, fused_path
         FROM models WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

pub async fn list_models(pool: &PgPool) -> sqlx::Result<Vec<RawModel>> {
    sqlx::query_as!(
        RawModel,
        "SELECT id, created_at, kind, source, path, base_model, job_id, checkpoint,
                train_loss, valid_loss, adapter_path, fused_path
         FROM models ORDER BY created_at, id"
    )
    .fetch_all(pool)
    .await
}

pub async fn derived_from(pool: &PgPool, base: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("SELECT id FROM models WHERE base_model = $1", base)
        .fetch_all(pool)
        .await
}

pub async fn delete_model(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query!("DELETE FROM models WHERE id = $1", id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Queued, running or paused jobs whose config names `model` as the base.
pub async fn jobs_training_on(pool: &PgPool, model: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!" FROM jobs
           WHERE status IN ('queued', 'running', 'paused')
             AND config::jsonb ->> 'baseModel' = $1"#,
        model
    )
    .fetch_one(pool)
    .await
}
