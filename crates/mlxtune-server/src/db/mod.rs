//! SQLite through sqlx: the pool (WAL), the migrations of `migrations/`, and every query,
//! by table: [`jobs`], [`events`], [`metrics`]. Each query is a sqlx macro checked at
//! compile time against the offline data in `/.sqlx`; rows become typed values here, once.

pub mod events;
pub mod files;
pub mod jobs;
pub mod leases;
pub mod metrics;
pub mod models;
pub mod preflight;

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use events::{add_event, events};
pub use jobs::{
    cancel_requested, claim_next, count_by_status, delete_job, fail, get_job, insert_job,
    list_jobs, request_cancel, settle, transition, JobRow, NewJob,
};
pub use metrics::{metrics, record_step};
pub use models::{delete_model, derived_from, get_model, insert_model, list_models, model_in_use};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A stored value that does not read back as its type.
fn decode_error(what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("{what}: {e}").into())
}

/// Opens (creating) the database in WAL mode and applies the migrations (one process at a
/// time: several may share the database, `docs/deploy.md`).
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
    // Processes starting together on one database migrate it one at a time (sqlx's SQLite
    // migrator takes no lock of its own): an exclusive lock on a file beside it.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("migrations.lock"))?;
    lock.lock()?;
    sqlx::migrate!("../../migrations").run(&pool).await?;
    drop(lock);
    Ok(pool)
}
