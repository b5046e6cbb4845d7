//! mlxtune's job service: an axum REST + WebSocket API over SQLite (sqlx), and an
//! in-process worker pool running the engine's trainer.
//!
//! Layout, lowest first: `settings` (layered config), `api` (the typed JSON shapes),
//! `error` (the error body), `state` (shared handles), `db` (schema in /migrations, every
//! query, rows into `api` types), `remote` and `validate` (request → validated job),
//! `worker` (claiming, training, events), `routes` (handlers, auth, router), `openapi`
//! (the document, from the routes' annotations and the `api` types). Only this crate knows
//! HTTP and SQL.

pub mod api;
pub mod artifacts;
pub mod db;
pub mod ending;
pub mod error;
pub mod feed;
pub mod hub;
pub mod inference;
pub mod journal;
pub mod launched;
pub mod lease;
pub mod openapi;
mod openapi_generic;
pub mod reconcile;
pub mod recovery;
pub mod registry;
pub mod remote;
pub mod results;
pub mod routes;
mod serve;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod validate;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{broadcast, Notify};

pub use routes::router;
pub use settings::Settings;
pub use state::AppState;
use telemetry::Telemetry;

/// A built server: bound socket, migrated database, recovered jobs.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    port: u16,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        mlxtune_engine::runtime::init()?;
        std::fs::create_dir_all(&settings.storage.data_dir)?;
        let db = db::connect(&settings.database()).await?;
        let key_hashes = settings
            .auth
            .api_keys
            .iter()
            .map(|k| state::sha256_hex(k))
            .collect();
        let (events, _) = broadcast::channel(1024);
        let telemetry = Arc::new(Telemetry::new());
        let state = AppState {
            db,
            settings: Arc::new(settings.clone()),
            key_hashes: Arc::new(key_hashes),
            controls: Arc::new(Mutex::new(HashMap::new())),
            wake: Arc::new(Notify::new()),
            events,
            feed_kick: Arc::new(Notify::new()),
            node: settings.node().into(),
            shutting_down: Arc::new(AtomicBool::new(false)),
            openapi: openapi::document().to_string().into(),
            telemetry: telemetry.clone(),
            inference: Arc::new(inference::Inference::start(
                settings.inference.memory_budget_bytes,
                telemetry,
            )?),
        };
        let role = settings.server.role;
        let workers = if role.runs_workers() {
            settings.workers.count
        } else {
            0
        };
        state.telemetry.workers.set(workers as i64);
        feed::start(&state).await?;
        recovery::at_start(&state).await?;
        if role.serves_api() {
            // Pre-flights belong to the API: worker processes never run them.
            routes::jobs::preflight::resume_interrupted(&state).await?;
        }
        let listener =
            TcpListener::bind((settings.server.host.as_str(), settings.server.port)).await?;
        let port = listener.local_addr()?.port();
        if let Some(warning) = settings.exposure_warning() {
            tracing::warn!("{warning}");
        }
        Ok(Application {
            listener,
            state,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until ctrl-c / SIGTERM; running jobs then checkpoint and go back to the queue.
    /// What runs is `server.role`'s: the API, the workers (`<node>/worker-<i>`) with the
    /// sweep of expired leases, or both.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let state = self.state.clone();
        let role = state.settings.server.role;
        let mut workers: Vec<_> = Vec::new();
        let mut sweep = None;
        if role.runs_workers() {
            for i in 0..state.settings.workers.count {
                let name = format!("{}/worker-{i}", state.node);
                workers.push(tokio::spawn(worker::run(state.clone(), name)));
            }
            sweep = Some(tokio::spawn(recovery::sweep(state.clone())));
        }
        let app = match role.serves_api() {
            true => router(state.clone()),
            false => routes::worker_router(state.clone()),
        };
        let stop = state.clone();
        let limits = state.settings.server.clone();
        serve::serve(self.listener, app, &limits, async move {
            shutdown_signal().await;
            stop.shutting_down.store(true, Ordering::SeqCst);
            stop.wake.notify_waiters();
        })
        .await?;
        if let Some(s) = sweep {
            s.abort();
        }
        for w in workers {
            let _ = w.await;
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
