//! The PostgreSQL backend: one queue for workers on several machines.

pub mod events;
pub mod files;
pub mod jobs;
pub mod leases;
pub mod metrics;
pub mod models;
pub mod preflight;

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// Connects and applies `migrations/postgres` (sqlx's PostgreSQL migrator holds an advisory
/// lock meanwhile, so processes starting together migrate once). The error names the
/// server without its password.
pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let shown = crate::remote::redacted(url);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| format!("storage.database_url: connecting to {shown}"))?;
    sqlx::migrate!("../../migrations/postgres")
        .run(&pool)
        .await
        .with_context(|| format!("storage.database_url: migrating {shown}"))?;
    Ok(pool)
}
