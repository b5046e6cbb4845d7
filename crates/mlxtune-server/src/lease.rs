//! The lease a worker holds on the job it runs, kept by a task beside the trainer (so a
//! step of any length never loses it): every third of `workers.lease_seconds` it is
//! renewed, and every `CONTROL_POLL` the job's recorded requests are read, so a pause or
//! cancel made on another process reaches this trainer's control flag. A lease found lost
//! (another process took the job over after it expired) sets the flag to `LOST`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::leases;
use crate::state::{AppState, CANCEL, LOST, PAUSE, RUN};

/// How often a running job's recorded control requests are read.
pub const CONTROL_POLL: Duration = Duration::from_millis(250);

/// The renewing task of one claimed job; dropping it stops the renewals.
pub struct Lease {
    task: tokio::task::JoinHandle<()>,
    state: AppState,
    id: String,
    worker: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    /// Stops the renewals once the trainer has returned, and tells whether the job is still
    /// this worker's to end: a process that stalled past its lease may wake with a trainer
    /// that ends at once (before the task notices), and must then record nothing. A
    /// database error counts as held (the ending's own writes report it).
    pub async fn release(self) -> bool {
        self.task.abort();
        !matches!(
            leases::requests(&self.state.db, &self.id, &self.worker).await,
            Ok(None)
        )
    }
}

/// Holds `worker`'s lease on job `id` from its claim until dropped, driving `control`.
pub fn hold(state: &AppState, id: &str, worker: &str, control: Arc<AtomicU8>) -> Lease {
    let (state, id, worker) = (state.clone(), id.to_string(), worker.to_string());
    let task = {
        let (state, id, worker) = (state.clone(), id.clone(), worker.clone());
        tokio::spawn(async move { keep(&state, &id, &worker, &control).await })
    };
    Lease {
        task,
        state,
        id,
        worker,
    }
}

/// The interval between renewals: a third of the lease, at least one second.
pub fn renew_every(lease_seconds: u64) -> Duration {
    Duration::from_millis((lease_seconds * 1000 / 3).max(1000))
}

async fn keep(state: &AppState, id: &str, worker: &str, control: &AtomicU8) {
    let seconds = state.settings.workers.lease_seconds;
    let mut renewed = Instant::now();
    let mut tick = tokio::time::interval(CONTROL_POLL);
    loop {
        tick.tick().await;
        if renewed.elapsed() >= renew_every(seconds) {
            match leases::renew(&state.db, id, worker, seconds).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return lost(control, id, worker),
                Err(e) => tracing::warn!(job_id = %id, error = %e, "renewing a lease"),
            }
        }
        match leases::requests(&state.db, id, worker).await {
            Ok(Some(r)) => apply(control, r),
            Ok(None) => return lost(control, id, worker),
            Err(e) => tracing::warn!(job_id = %id, error = %e, "reading control requests"),
        }
    }
}

/// A recorded cancel wins over anything but a lost lease; a pause only interrupts a run.
fn apply(control: &AtomicU8, r: leases::Requests) {
    if r.cancel {
        let _ = control.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
            (now != LOST && now != CANCEL).then_some(CANCEL)
        });
    } else if r.pause {
        let _ = control.compare_exchange(RUN, PAUSE, Ordering::SeqCst, Ordering::SeqCst);
    }
}

fn lost(control: &AtomicU8, id: &str, worker: &str) {
    tracing::warn!(job_id = %id, worker, "the job's lease was lost: stopping without recording more");
    control.store(LOST, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_cancel_overrides_a_pause_and_a_pause_only_a_run() {
        let c = AtomicU8::new(RUN);
        apply(
            &c,
            leases::Requests {
                cancel: false,
                pause: true,
            },
        );
        assert_eq!(c.load(Ordering::SeqCst), PAUSE);
        apply(
            &c,
            leases::Requests {
                cancel: true,
                pause: true,
            },
        );
        assert_eq!(c.load(Ordering::SeqCst), CANCEL);
        let lost = AtomicU8::new(LOST);
        apply(
            &lost,
            leases::Requests {
                cancel: true,
                pause: false,
            },
        );
        assert_eq!(lost.load(Ordering::SeqCst), LOST);
        assert_eq!(renew_every(30), Duration::from_secs(10));
        assert_eq!(renew_every(1), Duration::from_secs(1));
    }
}
