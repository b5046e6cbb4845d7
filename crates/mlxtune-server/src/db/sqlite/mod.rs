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
    // Processes starting together on one database open and migrate it one at a time: an
    // exclusive lock on a file beside it. sqlx's SQLite migrator takes no lock of its own,
    // and switching a new database to WAL fails at once ("database is locked", without
    // waiting out the busy timeout) when another process is switching it too.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("migrations.lock"))?;
    lock.lock()?;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await?;
    sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
    drop(lock);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const NAME: &str = "db::sqlite::tests::processes_opening_a_new_database_at_once_all_open_it";

    fn now_ms() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    /// Processes starting together on a new database (an API process and its workers,
    /// `docs/deploy.md`) all open and migrate it. The test runs itself as four processes
    /// that open one new database at the same instant, ten times over.
    #[test]
    fn processes_opening_a_new_database_at_once_all_open_it() {
        if let Ok(path) = std::env::var("MLXTUNE_TEST_OPEN_DB") {
            let at: u128 = std::env::var("MLXTUNE_TEST_OPEN_AT")
                .unwrap()
                .parse()
                .unwrap();
            while now_ms() < at {
                std::thread::sleep(Duration::from_micros(100));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(super::connect(std::path::Path::new(&path)))
                .unwrap();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        for round in 0..10 {
            let path = dir.path().join(format!("{round}/mlxtune.db"));
            let at = (now_ms() + 300).to_string();
            let children: Vec<_> = (0..4)
                .map(|_| {
                    Command::new(&exe)
                        .args(["--exact", NAME, "--test-threads", "1"])
                        .env("MLXTUNE_TEST_OPEN_DB", &path)
                        .env("MLXTUNE_TEST_OPEN_AT", &at)
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for child in children {
                let out = child.wait_with_output().unwrap();
                let said = String::from_utf8_lossy(&out.stdout);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "round {round}: {err}");
                assert!(said.contains("1 passed"), "round {round}: {said}");
            }
        }
    }
}
