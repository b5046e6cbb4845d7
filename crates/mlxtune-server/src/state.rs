//! Shared state of the API and the workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Notify};

use crate::inference::Inference;
use crate::settings::Settings;
use crate::telemetry::Telemetry;

/// What a running job's trainer is asked to do at its next step.
pub const RUN: u8 = 0;
pub const PAUSE: u8 = 1;
pub const CANCEL: u8 = 2;
/// The job ran past `workers.max_job_seconds`: it checkpoints, stops and fails.
pub const TIME_LIMIT: u8 = 3;
/// Its progress could not be recorded (a full disk): it stops and fails once it can be.
pub const DISK_FULL: u8 = 4;
/// Its lease was lost (another process took the job over): it stops at once and writes
/// nothing more about the job.
pub const LOST: u8 = 5;

/// One event as streamed: the job, the event id and the event object.
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub job_id: String,
    pub event_id: i64,
    /// Serialized once for every subscriber.
    pub text: Arc<str>,
}

#[derive(Clone)]
pub struct AppState {
    pub db: crate::db::Db,
    pub settings: Arc<Settings>,
    /// sha256 hex of each configured API key.
    pub key_hashes: Arc<Vec<String>>,
    /// Control flags of running jobs.
    pub controls: Arc<Mutex<HashMap<String, Arc<AtomicU8>>>>,
    /// Wakes idle workers when a job is queued.
    pub wake: Arc<Notify>,
    pub events: broadcast::Sender<Broadcast>,
    /// Wakes this process's event feed (`feed.rs`) after a live event is stored.
    pub feed_kick: Arc<Notify>,
    /// This process's name among those sharing the database (`server.node_name`, else
    /// `<hostname>-<pid>`); its workers claim jobs as `<node>/worker-<i>`.
    pub node: Arc<str>,
    /// Set on SIGTERM / ctrl-c: running jobs checkpoint and go back to the queue.
    pub shutting_down: Arc<AtomicBool>,
    /// The OpenAPI document as served at `/openapi.json`.
    pub openapi: Arc<str>,
    /// Prometheus metrics (`/metrics`).
    pub telemetry: Arc<Telemetry>,
    /// Loaded models and the inference slot.
    pub inference: Arc<Inference>,
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
