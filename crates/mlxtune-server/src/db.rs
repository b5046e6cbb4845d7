//! SQLite through sqlx: the pool (WAL), the migrations of `migrations/`, and every query.

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens (creating) the database in WAL mode and applies the migrations.
pub async fn connect(path: &Path) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await?;
    sqlx::migrate!("../../migrations").run(&pool).await?;
    Ok(pool)
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub status: String,
    pub name: Option<String>,
    pub config: String,
    pub spec: String,
    pub output_dir: String,
    pub step: i64,
    pub total_steps: Option<i64>,
    pub trained_tokens: i64,
    pub latest_metrics: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_param: Option<String>,
    pub worker: Option<String>,
    pub heartbeat_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub resume: i64,
}

pub const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled"];

impl JobRow {
    /// The job as the API shows it.
    pub fn to_json(&self) -> Value {
        let metrics: Option<Value> = self
            .latest_metrics
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok());
        let config: Value = serde_json::from_str(&self.config).unwrap_or(Value::Null);
        let pct = match self.total_steps {
            Some(t) if t > 0 => 100.0 * self.step as f64 / t as f64,
            _ if self.status == "succeeded" => 100.0,
            _ => 0.0,
        };
        let eta = metrics.as_ref().and_then(|m| m["eta_seconds"].as_f64());
        let error = self.error_code.as_ref().map(|code| {
            json!({ "code": code, "message": self.error_message, "param": self.error_param })
        });
        json!({
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "name": self.name,
            "model": config["baseModel"],
            "fine_tuned_model": (self.status == "succeeded").then(|| self.output_dir.clone()),
            "trained_tokens": self.trained_tokens,
            "progress": {
                "step": self.step,
                "total_steps": self.total_steps,
                "completion_percentage": pct,
            },
            "latest_metrics": metrics,
            "estimated_finish": match (self.status.as_str(), eta) {
                ("running", Some(e)) => Some(now() + e as i64),
                _ => None,
            },
            "error": error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "output_dir": self.output_dir,
            "config": config,
        })
    }
}

pub async fn insert_job(
    pool: &SqlitePool,
    id: &str,
    name: Option<&str>,
    config: &str,
    spec: &str,
    output_dir: &str,
) -> sqlx::Result<()> {
    let t = now();
    sqlx::query!(
        "INSERT INTO jobs (id, seq, created_at, updated_at, status, name, config, spec, output_dir)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?2, 'queued', ?3, ?4, ?5, ?6)",
        id,
        t,
        name,
        config,
        spec,
        output_dir
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn get_job(pool: &SqlitePool, id: &str) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id!", seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume
         FROM jobs WHERE id = ?1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// Jobs newest first; `after` is a job id (the page continues after it).
pub async fn list_jobs(
    pool: &SqlitePool,
    after: Option<&str>,
    limit: i64,
    status: Option<&str>,
) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id!", seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume
         FROM jobs
         WHERE (?1 IS NULL OR seq < (SELECT seq FROM jobs WHERE id = ?1))
           AND (?2 IS NULL OR status = ?2)
         ORDER BY seq DESC LIMIT ?3"#,
        after,
        status,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Atomically takes the oldest queued job for `worker`.
pub async fn claim_next(pool: &SqlitePool, worker: &str) -> sqlx::Result<Option<JobRow>> {
    let t = now();
    sqlx::query_as!(
        JobRow,
        r#"UPDATE jobs SET status = 'running', worker = ?1, heartbeat_at = ?2, updated_at = ?2,
                started_at = COALESCE(started_at, ?2)
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1)
           AND status = 'queued'
         RETURNING id AS "id!", seq, created_at, updated_at, status, name, config, spec, output_dir, step,
                total_steps, trained_tokens, latest_metrics, error_code, error_message, error_param,
                worker, heartbeat_at, started_at, finished_at, resume"#,
        worker,
        t
    )
    .fetch_optional(pool)
    .await
}

/// Moves a job from one of `from` to `to`; false when it was in another state.
pub async fn transition(
    pool: &SqlitePool,
    id: &str,
    from: &[&str],
    to: &str,
) -> sqlx::Result<bool> {
    let from_json = serde_json::to_string(from).unwrap_or_default();
    let terminal = TERMINAL.contains(&to);
    let t = now();
    let r = sqlx::query!(
        "UPDATE jobs SET status = ?1, updated_at = ?2,
                finished_at = CASE WHEN ?3 THEN ?2 ELSE finished_at END,
                resume = CASE WHEN ?1 = 'queued' THEN 1 ELSE resume END
         WHERE id = ?4 AND status IN (SELECT value FROM json_each(?5))",
        to,
        t,
        terminal,
        id,
        from_json
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn fail(
    pool: &SqlitePool,
    id: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> sqlx::Result<()> {
    let t = now();
    sqlx::query!(
        "UPDATE jobs SET status = 'failed', error_code = ?1, error_message = ?2, error_param = ?3,
                updated_at = ?4, finished_at = ?4 WHERE id = ?5",
        code,
        message,
        param,
        t,
        id
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn add_event(
    pool: &SqlitePool,
    job: &str,
    level: &str,
    kind: &str,
    message: &str,
    data: Option<&Value>,
) -> sqlx::Result<i64> {
    let (t, data) = (now(), data.map(|d| d.to_string()));
    let r = sqlx::query!(
        "INSERT INTO events (job_id, created_at, level, type, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        job,
        t,
        level,
        kind,
        message,
        data
    )
    .execute(pool)
    .await?;
    Ok(r.last_insert_rowid())
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub job_id: String,
    pub created_at: i64,
    pub level: String,
    pub kind: String,
    pub message: String,
    pub data: Option<String>,
}

impl EventRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "fine_tuning.job.event",
            "job_id": self.job_id,
            "created_at": self.created_at,
            "level": self.level,
            "type": self.kind,
            "message": self.message,
            "data": self.data.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
        })
    }
}

pub async fn events(
    pool: &SqlitePool,
    job: &str,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT id AS "id!", job_id, created_at, level, type AS kind, message, data
         FROM events WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"#,
        job,
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Records one step's metrics and the job's progress.
pub async fn record_step(
    pool: &SqlitePool,
    job: &str,
    step: i64,
    total: i64,
    trained_tokens: i64,
    metrics: &Value,
) -> sqlx::Result<()> {
    let text = metrics.to_string();
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT OR REPLACE INTO metrics (job_id, step, data) VALUES (?1, ?2, ?3)",
        job,
        step,
        text
    )
    .execute(&mut *tx)
    .await?;
    let t = now();
    sqlx::query!(
        "UPDATE jobs SET step = ?1, total_steps = ?2, trained_tokens = ?3, latest_metrics = ?4,
                heartbeat_at = ?5, updated_at = ?5 WHERE id = ?6",
        step,
        total,
        trained_tokens,
        text,
        t,
        job
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub async fn metrics(pool: &SqlitePool, job: &str) -> sqlx::Result<Vec<Value>> {
    let rows = sqlx::query_scalar!(
        "SELECT data FROM metrics WHERE job_id = ?1 ORDER BY step",
        job
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|d| serde_json::from_str(&d).ok())
        .collect())
}

/// Jobs a dead process left running go back to the queue, to resume from their checkpoint.
pub async fn recover_running(pool: &SqlitePool) -> sqlx::Result<Vec<String>> {
    let t = now();
    sqlx::query_scalar!(
        r#"UPDATE jobs SET status = 'queued', resume = 1, worker = NULL, updated_at = ?1
         WHERE status = 'running' RETURNING id AS "id!""#,
        t
    )
    .fetch_all(pool)
    .await
}

pub async fn delete_job(pool: &SqlitePool, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        "DELETE FROM jobs WHERE id = ?1 AND status IN ('succeeded', 'failed', 'cancelled')",
        id
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
