//! The `models` table: the registry of base and fine-tuned models.

use sqlx::SqlitePool;

use super::{decode_error, now};
use crate::api::{Lineage, ModelKind, ModelObject};

/// A model row as sqlx reads it.
struct RawModel {
    id: String,
    created_at: i64,
    kind: String,
    source: String,
    path: Option<String>,
    base_model: Option<String>,
    job_id: Option<String>,
    checkpoint: Option<String>,
    train_loss: Option<f64>,
    valid_loss: Option<f64>,
    adapter_path: Option<String>,
    fused_path: Option<String>,
}

impl TryFrom<RawModel> for ModelObject {
    type Error = sqlx::Error;

    fn try_from(r: RawModel) -> Result<ModelObject, sqlx::Error> {
        let kind = match r.kind.as_str() {
            "base" => ModelKind::Base,
            "fine_tuned" => ModelKind::FineTuned,
            other => return Err(decode_error("models.kind", other)),
        };
        let lineage = match (kind, r.base_model, r.job_id) {
            (ModelKind::FineTuned, Some(base_model), Some(job_id)) => Some(Lineage {
                base_model,
                job_id,
                checkpoint: r.checkpoint,
                train_loss: r.train_loss,
                valid_loss: r.valid_loss,
                adapter_path: r.adapter_path,
                fused_path: r.fused_path,
            }),
            _ => None,
        };
        Ok(ModelObject {
            id: r.id,
            object: "model".into(),
            created: r.created_at,
            owned_by: if kind == ModelKind::Base {
                "user"
            } else {
                "mlxtune"
            }
            .into(),
            kind,
            source: r.source,
            path: r.path,
            lineage,
            loaded: false,
        })
    }
}

/// Registers a model; false when the id is taken.
pub async fn insert_model(pool: &SqlitePool, m: &ModelObject) -> sqlx::Result<bool> {
    let t = now();
    let kind = m.kind.as_str();
    let l = m.lineage.as_ref();
    let (base, job, ckpt) = (
        l.map(|l| l.base_model.clone()),
        l.map(|l| l.job_id.clone()),
        l.and_then(|l| l.checkpoint.clone()),
    );
    let (train_loss, valid_loss) = (l.and_then(|l| l.train_loss), l.and_then(|l| l.valid_loss));
    let (adapter, fused) = (
        l.and_then(|l| l.adapter_path.clone()),
        l.and_then(|l| l.fused_path.clone()),
    );
    let r = sqlx::query!(
        "INSERT OR IGNORE INTO models (id, created_at, kind, source, path, base_model, job_id,
                checkpoint, train_loss, valid_loss, adapter_path, fused_path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        m.id,
        t,
        kind,
        m.source,
        m.path,
        base,
        job,
        ckpt,
        train_loss,
        valid_loss,
        adapter,
        fused
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get_model(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<ModelObject>> {
    sqlx::query_as!(
        RawModel,
        r#"SELECT id AS "id!", created_at, kind, source, path, base_model, job_id, checkpoint,
                train_loss, valid_loss, adapter_path, fused_path
         FROM models WHERE id = ?1"#,
        id
    )
    .fetch_optional(pool)
    .await?
    .map(ModelObject::try_from)
    .transpose()
}

/// Every model, oldest first.
pub async fn list_models(pool: &SqlitePool) -> sqlx::Result<Vec<ModelObject>> {
    sqlx::query_as!(
        RawModel,
        r#"SELECT id AS "id!", created_at, kind, source, path, base_model, job_id, checkpoint,
                train_loss, valid_loss, adapter_path, fused_path
         FROM models ORDER BY created_at, id"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(ModelObject::try_from)
    .collect()
}

/// Models that name `base` as their base model.
pub async fn derived_from(pool: &SqlitePool, base: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM models WHERE base_model = ?1"#,
        base
    )
    .fetch_all(pool)
    .await
}

pub async fn delete_model(pool: &SqlitePool, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query!("DELETE FROM models WHERE id = ?1", id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether a job that may still run trains on `model` (as named in its config).
pub async fn model_in_use(pool: &SqlitePool, model: &str) -> sqlx::Result<bool> {
    let n = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!: i64" FROM jobs
           WHERE status IN ('queued', 'running', 'paused')
             AND json_extract(config, '$.baseModel') = ?1"#,
        model
    )
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}
