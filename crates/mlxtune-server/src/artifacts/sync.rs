//! Checkpoint uploads beside a running trainer: every checkpoint the trainer reports is
//! offered to one upload task, which sends the newest offered (an older one still waiting
//! is skipped). A failed upload is a warning on the job, and the next checkpoint is tried
//! as usual; training never waits for the store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use mlxtune_engine::train::{Event, Level};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{upload, Store};
use crate::api::EventKind;
use crate::journal::store_event;
use crate::state::{AppState, LOST};

/// The upload task of one running job.
pub struct CheckpointSync {
    store: Store,
    control: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

impl CheckpointSync {
    /// With a store: the trainer's events passed on as they come, each checkpoint offered
    /// for upload on the way. Without one: the events as they are.
    pub fn tap(
        state: &AppState,
        job: &str,
        control: Arc<AtomicU8>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> (Option<CheckpointSync>, mpsc::UnboundedReceiver<Event>) {
        let Ok(Some(store)) = Store::open(&state.settings) else {
            return (None, events);
        };
        let (offer, offered) = watch::channel(None::<PathBuf>);
        let (out, passed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let Event::Checkpoint { path, .. } = &ev {
                    offer.send_replace(Some(path.clone()));
                }
                if out.send(ev).is_err() {
                    break;
                }
            }
        });
        let uploads = Uploads {
            state: state.clone(),
            store: store.clone(),
            job: job.to_string(),
            control: control.clone(),
        };
        let task = tokio::spawn(uploads.run(offered));
        (
            Some(CheckpointSync {
                store,
                control,
                task,
            }),
            passed,
        )
    }

    /// Waits until the upload of the last checkpoint offered has ended; the store, unless
    /// another process runs the job now.
    pub async fn finish(self) -> Option<Store> {
        let _ = self.task.await;
        (self.control.load(Ordering::SeqCst) != LOST).then_some(self.store)
    }
}

struct Uploads {
    state: AppState,
    store: Store,
    job: String,
    control: Arc<AtomicU8>,
}

impl Uploads {
    async fn run(self, mut offered: watch::Receiver<Option<PathBuf>>) {
        while offered.changed().await.is_ok() {
            let Some(dir) = offered.borrow_and_update().clone() else {
                continue;
            };
            // Another process runs the job now: its checkpoints are its own.
            if self.control.load(Ordering::SeqCst) == LOST {
                return;
            }
            if let Err(e) = upload::checkpoint(&self.store, &self.job, &dir).await {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                let text = format!("checkpoint {name} was not uploaded to the artifacts store ({e}); the next checkpoint tries again");
                warn(&self.state, &self.job, &text).await;
            }
        }
    }
}

/// A warning on the job (and in the log).
pub(super) async fn warn(state: &AppState, job: &str, text: &str) {
    tracing::warn!(job_id = %job, "{text}");
    let what = (Level::Warn, EventKind::Message, text);
    let _ = store_event(state, job, what, None, true).await;
}
