//! The `models` table: the registry of base and fine-tuned models.

use super::{decode_error, on, Db};
use crate::api::{Lineage, ModelKind, ModelObject};

/// A model row as sqlx reads it.
pub(super) struct RawModel {
    pub(super) id: String,
    pub(super) created_at: i64,
    pub(super) kind: String,
    pub(super) source: String,
    pub(super) path: Option<String>,
    pub(super) base_model: Option<String>,
    pub(super) job_id: Option<String>,
    pub(super) checkpoint: Option<String>,
    pub(super) train_loss: Option<f64>,
    pub(super) valid_loss: Option<f64>,
    pub(super) adapter_path: Option<String>,
    pub(super) fused_path: Option<String>,
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

/// A model as a backend stores it: the registry entry with its lineage flattened.
pub(super) struct ModelRecord<'a> {
    pub(super) id: &'a str,
    pub(super) kind: &'a str,
    pub(super) source: &'a str,
    pub(super) path: Option<&'a str>,
    pub(super) base_model: Option<&'a str>,
    pub(super) job_id: Option<&'a str>,
    pub(super) checkpoint: Option<&'a str>,
    pub(super) train_loss: Option<f64>,
    pub(super) valid_loss: Option<f64>,
    pub(super) adapter_path: Option<&'a str>,
    pub(super) fused_path: Option<&'a str>,
}

impl<'a> From<&'a ModelObject> for ModelRecord<'a> {
    fn from(m: &'a ModelObject) -> ModelRecord<'a> {
        let l = m.lineage.as_ref();
        ModelRecord {
            id: &m.id,
            kind: m.kind.as_str(),
            source: &m.source,
            path: m.path.as_deref(),
            base_model: l.map(|l| l.base_model.as_str()),
            job_id: l.map(|l| l.job_id.as_str()),
            checkpoint: l.and_then(|l| l.checkpoint.as_deref()),
            train_loss: l.and_then(|l| l.train_loss),
            valid_loss: l.and_then(|l| l.valid_loss),
            adapter_path: l.and_then(|l| l.adapter_path.as_deref()),
            fused_path: l.and_then(|l| l.fused_path.as_deref()),
        }
    }
}

/// Registers a model; false when the id is taken.
pub async fn insert_model(db: &Db, m: &ModelObject) -> sqlx::Result<bool> {
    on!(db, models::insert_model(&ModelRecord::from(m)))
}

pub async fn get_model(db: &Db, id: &str) -> sqlx::Result<Option<ModelObject>> {
    on!(db, models::get_model(id))?
        .map(ModelObject::try_from)
        .transpose()
}

/// Every model, oldest first.
pub async fn list_models(db: &Db) -> sqlx::Result<Vec<ModelObject>> {
    on!(db, models::list_models())?
        .into_iter()
        .map(ModelObject::try_from)
        .collect()
}

/// Models that name `base` as their base model.
pub async fn derived_from(db: &Db, base: &str) -> sqlx::Result<Vec<String>> {
    on!(db, models::derived_from(base))
}

pub async fn delete_model(db: &Db, id: &str) -> sqlx::Result<bool> {
    on!(db, models::delete_model(id))
}

/// Whether a job that may still run trains on `model` (as named in its config).
pub async fn model_in_use(db: &Db, model: &str) -> sqlx::Result<bool> {
    Ok(on!(db, models::jobs_training_on(model))? > 0)
}
