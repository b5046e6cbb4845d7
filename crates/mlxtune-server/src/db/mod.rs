//! The job service's database, on one of two backends: SQLite (the default: one file in the
//! data directory, several processes of one host) or PostgreSQL (several machines sharing
//! one queue), chosen by `storage.database_url` ([`Location`]). Each table's module
//! ([`jobs`], [`events`], [`metrics`], [`files`], [`models`], [`leases`], [`preflight`])
//! holds its typed rows and operations; the SQL of each backend lives in [`sqlite`] and
//! [`postgres`], every query a sqlx macro checked at compile time against the offline data
//! in `/.sqlx` (`scripts/sqlx-prepare.sh` prepares both backends).

pub mod events;
pub mod files;
pub mod jobs;
pub mod leases;
pub mod metrics;
pub mod models;
pub mod preflight;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("mlxtune-server needs a database backend: feature `sqlite`, `postgres` or both");

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub use events::{add_event, events};
pub use jobs::{
    cancel_requested, claim_next, count_by_status, delete_job, fail, get_job, insert_job,
    list_jobs, request_cancel, settle, transition, JobRow, NewJob,
};
pub use metrics::{metrics, record_step};
pub use models::{delete_model, derived_from, get_model, insert_model, list_models, model_in_use};

/// Where the database is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (created with its directory when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server: `postgres://user:password@host:port/database`.
    Postgres(String),
}

impl std::fmt::Debug for Location {
    /// Never shows a PostgreSQL password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "SQLite {}", p.display()),
            Location::Postgres(url) => write!(f, "PostgreSQL {}", crate::remote::redacted(url)),
        }
    }
}

impl Location {
    /// `storage.database_url` as written: empty (None: SQLite in the data directory),
    /// `sqlite://<path>` or `postgres://…` (`postgresql://…`).
    pub fn parse(url: &str) -> Result<Option<Location>, String> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            return match path {
                "" => Err(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/mlxtune/db.sqlite3".into(),
                ),
                p => Ok(Some(Location::Sqlite(PathBuf::from(p)))),
            };
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Some(Location::Postgres(url.to_string())));
        }
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        Err(format!(
            "unsupported database {:?}: expected empty (SQLite in the data directory), \
             sqlite://<path> or postgres://user:password@host:port/database",
            crate::remote::redacted(scheme)
        ))
    }
}

/// An open database: a pool of the backend [`Location`] named.
#[derive(Clone, Debug)]
pub enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Runs one backend operation on whichever backend `db` is, awaited:
/// `on!(db, jobs::get_job(id))` is `sqlite::jobs::get_job(pool, id)` on SQLite and
/// `postgres::jobs::get_job(pool, id)` on PostgreSQL.
macro_rules! on {
    ($db:expr, $module:ident :: $f:ident ( $($arg:expr),* $(,)? )) => {
        match $db {
            #[cfg(feature = "sqlite")]
            $crate::db::Db::Sqlite(pool) => $crate::db::sqlite::$module::$f(pool, $($arg),*).await,
            #[cfg(feature = "postgres")]
            $crate::db::Db::Postgres(pool) => {
                $crate::db::postgres::$module::$f(pool, $($arg),*).await
            }
        }
    };
}
pub(crate) use on;

/// Opens the database and applies its backend's migrations (`migrations/sqlite` or
/// `migrations/postgres`), one process at a time.
pub async fn connect(location: &Location) -> anyhow::Result<Db> {
    match location {
        #[cfg(feature = "sqlite")]
        Location::Sqlite(path) => Ok(Db::Sqlite(sqlite::connect(path).await?)),
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => Ok(Db::Postgres(postgres::connect(url).await?)),
        #[allow(unreachable_patterns)]
        other => anyhow::bail!("{other:?}: this build has no such database backend"),
    }
}

impl Db {
    /// How often a process's event feed reads new events when nothing woke it: SQLite has
    /// no notifications, so often; PostgreSQL wakes the feed with `NOTIFY` (`listen`).
    pub fn feed_poll(&self) -> std::time::Duration {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => std::time::Duration::from_millis(200),
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => std::time::Duration::from_secs(2),
        }
    }

    /// Wakes `kick` whenever any process stores an event (PostgreSQL's `LISTEN`, in a task
    /// that reconnects); nothing on SQLite, whose feed polls.
    pub fn listen(&self, kick: std::sync::Arc<tokio::sync::Notify>) {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => drop(kick),
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => {
                tokio::spawn(postgres::events::listen(pool.clone(), kick));
            }
        }
    }
}

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
