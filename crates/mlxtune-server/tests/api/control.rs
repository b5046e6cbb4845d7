//! Control under pressure (issue 10): numbers that would wedge a worker are refused, a
//! cancel wins over a later pause, concurrent deletes are idempotent, control requests are
//! live events on the stream, and a job past the wall-clock limit stops and fails.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

/// A job that runs for minutes unless stopped.
fn long_job() -> Value {
    let mut cfg = product_config();
    cfg["parameters"]["epochs"] = json!(5000);
    cfg
}

async fn running(app: &TestApp, cfg: &Value) -> String {
    let (status, job) = app.post("/v1/fine_tuning/jobs", cfg).await;
    assert_eq!(status, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    app.wait_status(&id, &["running"]).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_that_would_wedge_a_worker_are_refused_by_name() {
    let app = spawn_app(vec![]).await;
    for (path, value, param) in [
        (
            "/gradientAccumulationSteps",
            json!(4294967295u64),
            "gradientAccumulationSteps",
        ),
        (
            "/parameters/learningRate",
            json!(1e308),
            "parameters.learningRate",
        ),
        ("/parameters/epochs", json!(1e12), "parameters.epochs"),
        ("/maxSteps", json!(u64::MAX), "maxSteps"),
        ("/optimization", json!([]), "optimization"),
        ("/parameters/batchSize", json!(1.5), "parameters.batchSize"),
    ] {
        let mut cfg = product_config();
        set(&mut cfg, path, value);
        let (status, body) = app.post("/v1/fine_tuning/jobs", &cfg).await;
        assert_eq!(
            (status, body["error"]["param"].as_str()),
            (422, Some(param)),
            "{body}"
        );
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("untagged"),
            "{body}"
        );
    }
}

fn set(doc: &mut Value, path: &str, value: Value) {
    let (parent, key) = path.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        doc
    } else {
        doc.pointer_mut(parent).unwrap()
    };
    target[key] = value;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_wins_over_a_later_pause() {
    a_cancel_wins_over_a_later_pause_with(spawn_app(vec![]).await).await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn a_cancel_wins_over_a_later_pause_with(app: TestApp) {
    let id = running(&app, &long_job()).await;
    let (s, _) = app
        .post(&format!("/v1/fine_tuning/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, body) = app
        .post(&format!("/v1/fine_tuning/jobs/{id}/pause"), &json!({}))
        .await;
    assert_eq!(s, 409, "{body}");
    // Refused while the cancel is under way, or, if the worker already finished it, because
    // the job is cancelled (a race the test does not control).
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("being cancelled") || message.contains("a cancelled job"),
        "{body}"
    );
    let job = app
        .wait_status(&id, &["cancelled", "paused", "succeeded"])
        .await;
    assert_eq!(job["status"], "cancelled");
    let (s, body) = app
        .post(&format!("/v1/fine_tuning/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 409, "a finished job says so: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_of_a_finished_job_answer_once() {
    concurrent_deletes_of_a_finished_job_answer_once_with(spawn_app(vec![]).await).await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn concurrent_deletes_of_a_finished_job_answer_once_with(app: TestApp) {
    let mut cfg = product_config();
    cfg["parameters"]["epochs"] = json!(1);
    let (_, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    let id = job["id"].as_str().unwrap().to_string();
    app.wait_status(&id, &["succeeded"]).await;
    let path = format!("/v1/fine_tuning/jobs/{id}");
    let deletes = (0..8).map(|_| app.delete(&path));
    let mut codes: Vec<u16> = futures_util::future::join_all(deletes)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    codes.sort();
    assert_eq!(codes, [200, 404, 404, 404, 404, 404, 404, 404]);
}

/// The messages of a job's stream until `until` appears among them.
async fn stream_until(url: &str, until: &str) -> Vec<String> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (_, mut read) = ws.split();
    let mut seen = vec![];
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(60), read.next()).await {
        let Ok(text) = msg.into_text() else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        let message = v["message"].as_str().unwrap_or("").to_string();
        seen.push(message.clone());
        if message.starts_with(until) {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_requests_are_live_events_and_replayed() {
    let app = spawn_app_with(vec![], Default::default(), 60_000).await;
    let id = running(&app, &long_job()).await;
    let url = format!(
        "ws://127.0.0.1:{}/v1/fine_tuning/jobs/{id}/stream",
        app.port
    );
    let live = tokio::spawn({
        let url = url.clone();
        async move { stream_until(&url, "cancellation requested").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let control = |what: &str| format!("/v1/fine_tuning/jobs/{id}/{what}");
    assert_eq!(app.post(&control("pause"), &json!({})).await.0, 200);
    app.wait_status(&id, &["paused"]).await;
    assert_eq!(app.post(&control("resume"), &json!({})).await.0, 200);
    app.wait_status(&id, &["running"]).await;
    assert_eq!(app.post(&control("cancel"), &json!({})).await.0, 200);
    let seen = live.await.unwrap();
    for said in ["pause requested", "resumed", "cancellation requested"] {
        assert!(
            seen.iter().any(|m| m.starts_with(said)),
            "{said} not live: {seen:?}"
        );
    }
    app.wait_status(&id, &["cancelled"]).await;
    let replay = stream_until(&format!("{url}?after=0"), "cancellation requested").await;
    for said in ["pause requested", "resumed", "cancellation requested"] {
        assert!(
            replay.iter().any(|m| m.starts_with(said)),
            "{said} not replayed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_the_wall_clock_limit_stops_checkpointed_and_fails() {
    let app = spawn_app_tuned(vec![], |s| s.workers.max_job_seconds = 2).await;
    let mut cfg = long_job();
    cfg["checkpoint"] = json!({ "everySteps": 1000000 });
    let id = running(&app, &cfg).await;
    let job = app
        .wait_status(&id, &["failed", "succeeded", "cancelled"])
        .await;
    assert_eq!(job["error"]["code"], "time_limit_exceeded", "{job}");
    let step = job["progress"]["step"].as_i64().unwrap();
    let msg = job["error"]["message"].as_str().unwrap();
    assert!(msg.contains("workers.max_job_seconds"), "{msg}");
    let (_, ckpts) = app
        .get(&format!("/v1/fine_tuning/jobs/{id}/checkpoints"))
        .await;
    let steps = ckpts["data"].as_array().unwrap().iter();
    let steps: Vec<i64> = steps.map(|c| c["step_number"].as_i64().unwrap()).collect();
    assert!(
        step == 0 || steps.contains(&step),
        "checkpointed at step {step}: {ckpts}"
    );
}

/// The two orders of a cancel and a trainer's last step, on the real database: a cancel
/// recorded first ends the job `cancelled` even though the trainer completed, and its model
/// is not registered; a job that completed first has its model registered by the same write
/// that ends it, and answers the cancel with "already finished".
#[tokio::test]
async fn a_cancel_recorded_before_the_last_step_ends_wins_and_one_after_is_refused() {
    use mlxtune_server::api::{JobStatus, ModelKind, ModelObject};
    use mlxtune_server::db;
    let dir = tempfile::tempdir().unwrap();
    let pool = db::connect(&db::Location::Sqlite(dir.path().join("jobs.sqlite3")))
        .await
        .unwrap();
    for id in ["ftjob-a", "ftjob-b"] {
        insert_queued(&pool, id).await;
        db::claim_next(&pool, "w", 30).await.unwrap().unwrap();
    }
    let model = |id: &str| ModelObject {
        id: format!("ft:tiny:{id}"),
        object: "model".into(),
        created: 0,
        owned_by: "mlxtune".into(),
        kind: ModelKind::FineTuned,
        source: "/out".into(),
        path: None,
        lineage: None,
        loaded: false,
    };
    assert!(db::request_cancel(&pool, "ftjob-a").await.unwrap());
    let cases = [
        ("ftjob-a", JobStatus::Cancelled),
        ("ftjob-b", JobStatus::Succeeded),
    ];
    for (id, want) in cases {
        let m = model(id);
        let ended = db::settle(&pool, id, JobStatus::Succeeded, Some(&m)).await;
        assert_eq!(ended.unwrap(), Some(want));
        let registered = db::get_model(&pool, &m.id).await.unwrap().is_some();
        assert_eq!(registered, want == JobStatus::Succeeded, "{id}");
    }
    assert!(
        !db::request_cancel(&pool, "ftjob-b").await.unwrap(),
        "already finished"
    );
}

/// The fence on steps: once another worker holds a job (its lease expired and it was
/// claimed again), a step from the worker that lost it is not recorded — neither its
/// metrics nor the job's progress — and the holder's is.
#[tokio::test]
async fn a_step_from_a_worker_that_lost_its_job_is_not_recorded() {
    use mlxtune_server::db;
    let dir = tempfile::tempdir().unwrap();
    let location = db::Location::Sqlite(dir.path().join("jobs.sqlite3"));
    step_fence_holds_on(db::connect(&location).await.unwrap()).await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn step_fence_holds_on(pool: mlxtune_server::db::Db) {
    use mlxtune_server::api::JobStatus;
    use mlxtune_server::db;
    let id = "ftjob-fenced";
    insert_queued(&pool, id).await;
    let (a, b) = ("node-a/worker-0", "node-b/worker-0");
    db::claim_next(&pool, a, 30).await.unwrap().unwrap();
    let requeued = db::transition(&pool, id, &[JobStatus::Running], JobStatus::Queued);
    assert!(requeued.await.unwrap());
    db::claim_next(&pool, b, 30).await.unwrap().unwrap();
    let step: mlxtune_engine::train::StepMetrics = serde_json::from_value(json!({
        "step": 3, "total_steps": 10, "epoch": 0.3, "total_epochs": 1.0, "loss": 2.5,
        "learning_rate": 1e-3, "grad_norm": 1.0, "tokens_per_second": 10.0,
        "all_tokens_per_second": 10.0, "padding_waste": 0.0, "trained_tokens": 96,
        "peak_memory_bytes": 0, "active_memory_bytes": 0, "elapsed_seconds": 1.0,
        "eta_seconds": 2.0, "completion_percentage": 30.0
    }))
    .unwrap();
    assert!(!db::record_step(&pool, id, a, &step).await.unwrap());
    assert!(db::metrics(&pool, id).await.unwrap().is_empty());
    let row = db::get_job(&pool, id).await.unwrap().unwrap();
    assert_eq!(row.step, 0, "the progress is untouched");
    assert!(db::record_step(&pool, id, b, &step).await.unwrap());
    assert_eq!(db::metrics(&pool, id).await.unwrap(), vec![step]);
    let row = db::get_job(&pool, id).await.unwrap().unwrap();
    assert_eq!((row.step, row.trained_tokens), (3, 96));
}
