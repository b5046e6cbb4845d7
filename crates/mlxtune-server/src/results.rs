//! A succeeded job's results in the Files API, as OpenAI has them: its per-step metrics as
//! a CSV file (`file-<job hex>`, purpose `fine-tune-results`) named by the job's
//! `result_files`. The file is registered from the job's stored metrics the first time the
//! Files API is used after the job succeeded (so it exists whatever process ran the job),
//! lives while the job does, and goes with it.

use crate::api::job::results_file_id;
use crate::api::EventData;
use crate::db;
use crate::db::files::NewFile;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The purpose of a results file.
pub const PURPOSE: &str = "fine-tune-results";

/// Registers the results file of every succeeded job that has none yet.
pub async fn sync(state: &AppState) -> ApiResult<()> {
    for job in db::files::succeeded_without_results(&state.db).await? {
        register(state, &job).await?;
    }
    Ok(())
}

/// Writes the job's metrics CSV under `<data_dir>/files/` and registers it.
async fn register(state: &AppState, job: &str) -> ApiResult<()> {
    let id = results_file_id(job);
    let csv = metrics_csv(state, job).await?;
    let dir = state.settings.storage.data_dir.join("files");
    let path = dir.join(format!("{id}.csv"));
    let (tmp, to, data) = (
        dir.join(format!("{id}.csv.part")),
        path.clone(),
        csv.clone(),
    );
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, &to)
    })
    .await
    .map_err(|e| ApiError::internal("results file task", e))?
    .map_err(|e| ApiError::internal("writing a results file", e))?;
    let file = NewFile {
        id: &id,
        filename: &format!("{job}-metrics.csv"),
        purpose: PURPOSE,
        bytes: csv.len() as i64,
        records: csv.lines().count().saturating_sub(1) as i64,
        path: &path.display().to_string(),
    };
    db::files::insert_file(&state.db, &file).await?;
    Ok(())
}

/// The job whose results file `file` is, while the job exists.
pub async fn owner(state: &AppState, file: &str) -> ApiResult<Option<String>> {
    let Some(hex) = file.strip_prefix("file-") else {
        return Ok(None);
    };
    let job = format!("ftjob-{hex}");
    Ok(db::get_job(&state.db, &job).await?.map(|_| job))
}

/// Removes a deleted job's results file.
pub async fn forget(state: &AppState, job: &str) -> ApiResult<()> {
    if let Some(path) = db::files::delete_file(&state.db, &results_file_id(job)).await? {
        let _ = tokio::fs::remove_file(path).await;
    }
    Ok(())
}

/// `step,train_loss,learning_rate,tokens_per_second,valid_loss,valid_mean_token_accuracy`.
pub async fn metrics_csv(state: &AppState, id: &str) -> ApiResult<String> {
    let steps = db::metrics(&state.db, id).await?;
    let validations: Vec<_> = db::events(&state.db, id, 0, i64::MAX)
        .await?
        .into_iter()
        .filter_map(|e| match e.data {
            Some(EventData::Validation(v)) => Some(v),
            _ => None,
        })
        .collect();
    let mut csv = String::from(
        "step,train_loss,learning_rate,tokens_per_second,valid_loss,valid_mean_token_accuracy\n",
    );
    for m in steps {
        let v = validations.iter().find(|v| v.step == m.step);
        let opt = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            m.step,
            m.loss,
            m.learning_rate,
            m.tokens_per_second,
            opt(v.map(|v| v.val_loss)),
            opt(v.map(|v| v.val_token_accuracy)),
        ));
    }
    Ok(csv)
}
