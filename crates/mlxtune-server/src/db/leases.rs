//! Leases of running jobs and the control requests their workers read: several processes
//! share one queue, so a claim (`jobs::claim_next`) holds the job only while its worker
//! renews the lease, and a pause or cancel requested on any process reaches the worker
//! through the job's row.

use super::{now, on, Db};

/// What the worker holding a job is asked to do, as recorded on the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub cancel: bool,
    pub pause: bool,
}

/// A job taken from a holder whose lease expired: its id and the worker that held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub id: String,
    pub worker: String,
}

impl From<(String, Option<String>)> for Expired {
    fn from((id, worker): (String, Option<String>)) -> Expired {
        Expired {
            id,
            worker: worker.unwrap_or_else(|| "an unknown worker".into()),
        }
    }
}

/// Extends `worker`'s lease on a running job by `seconds` from now; false when the job is
/// no longer running under this worker (another process took it over, or it ended).
pub async fn renew(db: &Db, id: &str, worker: &str, seconds: u64) -> sqlx::Result<bool> {
    let expires = now() + seconds as i64;
    on!(db, leases::renew(id, worker, expires))
}

/// The requests recorded on a job `worker` runs; None when it no longer runs it.
pub async fn requests(db: &Db, id: &str, worker: &str) -> sqlx::Result<Option<Requests>> {
    Ok(
        on!(db, leases::requests(id, worker))?.map(|(cancel, pause)| Requests {
            cancel: cancel != 0,
            pause: pause != 0,
        }),
    )
}

/// Records a pause request on a running job whose cancel was not requested; false
/// otherwise (the worker running it, on any process, pauses it at its next micro-batch).
pub async fn request_pause(db: &Db, id: &str) -> sqlx::Result<bool> {
    on!(db, leases::request_pause(id))
}

/// Running jobs whose lease expired (rows from before leases have none), or held by a
/// worker of `node` (this process's own name: what it ran before it restarted), are taken
/// from their holder: those whose cancel was requested end `cancelled` (first list), the
/// others go back to the queue to resume from their checkpoint. Each update is atomic, so
/// two processes sweeping at once take each job once.
pub async fn recover_expired(
    db: &Db,
    node: Option<&str>,
) -> sqlx::Result<(Vec<Expired>, Vec<Expired>)> {
    let prefix = node.map(|n| format!("{n}/"));
    let prefix = prefix.as_deref();
    let cancelled = on!(db, leases::cancel_expired(prefix))?;
    let queued = on!(db, leases::requeue_expired(prefix))?;
    Ok((
        cancelled.into_iter().map(Expired::from).collect(),
        queued.into_iter().map(Expired::from).collect(),
    ))
}

/// The ids of the running jobs (of any process).
pub async fn running_ids(db: &Db) -> sqlx::Result<std::collections::HashSet<String>> {
    Ok(on!(db, leases::running_ids())?.into_iter().collect())
}
