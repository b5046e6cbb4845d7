//! The SQLite backend: one file in WAL mode, shared by the processes of one host.

pub mod events;
pub mod files;
pub mod jobs;
pub mod leases;
pub mod metrics;
pub mod models;
pub mod preflight;

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// Opens (creating) the database in WAL mode and applies `migrations/sqlite`, one process
/// at a time (several may share the database, `docs/deploy.md`).
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
    sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
    drop(lock);
    Ok(pool)
}
