//! Jobs through their life: the product example trains to success, pause/resume, cancel,
//! ordering, pagination and deletion.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_example_config_trains_to_success_and_the_stream_shows_the_loss_falling() {
    the_product_example_config_trains_to_success_and_the_stream_shows_the_loss_falling_with(
        spawn_app(vec![]).await,
    )
    .await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn the_product_example_config_trains_to_success_and_the_stream_shows_the_loss_falling_with(
    app: TestApp,
) {
    let (status, job) = app.post("/v1/fine_tuning/jobs", &product_config()).await;
    assert_eq!(status, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert!(["queued", "running"].contains(&job["status"].as_str().unwrap()));
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{}/v1/fine_tuning/jobs/{id}/stream",
        app.port
    ))
    .await
    .unwrap();
    let (_, mut read) = ws.split();
    let mut losses = vec![];
    let mut snapshot = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(30), read.next()).await
        else {
            break;
        };
        let Ok(text) = msg.into_text() else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        app.openapi.check_stream_message(&v);
        if v["type"] == "snapshot" {
            snapshot = true;
        }
        if v["type"] == "mlx_training_update" {
            let d = &v["data"];
            for k in [
                "epoch",
                "total_epochs",
                "current_loss",
                "learning_rate",
                "gpu_memory_used",
                "gpu_memory_total",
                "tokens_per_second",
                "step",
                "total_steps",
                "completion_percentage",
            ] {
                assert!(!d[k].is_null(), "{k} missing in {d}");
            }
            losses.push(d["current_loss"].as_f64().unwrap());
        }
        if v["type"] == "status" && v["data"]["status"] == "succeeded" {
            break;
        }
    }
    assert!(snapshot, "a snapshot comes first");
    assert!(losses.len() >= 5, "{losses:?}");
    assert!(losses.last().unwrap() < &losses[0], "{losses:?}");
    let job = app.wait_status(&id, &["succeeded"]).await;
    assert_eq!(job["progress"]["completion_percentage"], 100.0);
    assert!(job["fine_tuned_model"].as_str().unwrap().contains(&id));
    assert!(job["trained_tokens"].as_i64().unwrap() > 0);
    let (_, m) = app.get(&format!("/v1/fine_tuning/jobs/{id}/metrics")).await;
    assert_eq!(
        m["data"].as_array().unwrap().len() as i64,
        job["progress"]["total_steps"].as_i64().unwrap()
    );
    let (_, ev) = app
        .get(&format!("/v1/fine_tuning/jobs/{id}/events?limit=5"))
        .await;
    assert_eq!(ev["data"].as_array().unwrap().len(), 5);
    assert_eq!(ev["has_more"], true);
    // OpenAI's event ids; a page continues after one, and after its bare number (clients
    // from before these ids) alike.
    let after = ev["data"][4]["id"].as_str().unwrap().to_string();
    let n: i64 = after.strip_prefix("ftevent-").unwrap().parse().unwrap();
    let events = format!("/v1/fine_tuning/jobs/{id}/events");
    let (_, ev2) = app.get(&format!("{events}?after={after}&limit=1000")).await;
    let (_, old) = app.get(&format!("{events}?after={n}&limit=1000")).await;
    assert_eq!(ev2["data"], old["data"]);
    let next = ev2["data"][0]["id"].as_str().unwrap();
    let next: i64 = next.strip_prefix("ftevent-").unwrap().parse().unwrap();
    assert!(next > n);
    let (status, bad) = app.get(&format!("{events}?after=ftjob-1")).await;
    assert_eq!(status, 422);
    assert_eq!(bad["error"]["param"], "after");
    let (_, ck) = app
        .get(&format!("/v1/fine_tuning/jobs/{id}/checkpoints"))
        .await;
    assert!(!ck["data"].as_array().unwrap().is_empty());
    let (_, list) = app.get("/v1/fine_tuning/jobs?status=succeeded").await;
    assert_eq!(list["data"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_then_resume_ends_with_the_same_losses_and_illegal_transitions_are_409() {
    pause_then_resume_ends_with_the_same_losses_and_illegal_transitions_are_409_with(
        spawn_app(vec![]).await,
    )
    .await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn pause_then_resume_ends_with_the_same_losses_and_illegal_transitions_are_409_with(
    app: TestApp,
) {
    let mut cfg = product_config();
    cfg["maxSteps"] = json!(10);
    cfg["dataset"]
        .as_object_mut()
        .unwrap()
        .remove("validationData");
    let (_, straight) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    let sid = straight["id"].as_str().unwrap().to_string();
    app.wait_status(&sid, &["succeeded"]).await;

    let (_, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    let id = job["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post(&format!("/v1/fine_tuning/jobs/{id}/resume"), &json!({}))
        .await;
    assert_eq!(s, 409, "a queued job cannot be resumed");
    app.wait_status(&id, &["running"]).await;
    let (s, v) = app
        .post(&format!("/v1/fine_tuning/jobs/{id}/pause"), &json!({}))
        .await;
    assert!(s == 200 || s == 409, "{v}");
    let job = app.wait_status(&id, &["paused", "succeeded"]).await;
    if job["status"] == "paused" {
        assert!(job["progress"]["step"].as_i64().unwrap() < 10);
        let (s, _) = app
            .post(&format!("/v1/fine_tuning/jobs/{id}/resume"), &json!({}))
            .await;
        assert_eq!(s, 200);
        app.wait_status(&id, &["succeeded"]).await;
    }
    let losses = |v: &Value| -> Vec<f64> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect()
    };
    let (_, a) = app
        .get(&format!("/v1/fine_tuning/jobs/{sid}/metrics"))
        .await;
    let (_, b) = app.get(&format!("/v1/fine_tuning/jobs/{id}/metrics")).await;
    assert_eq!(losses(&a), losses(&b));
    let (s, _) = app
        .post(&format!("/v1/fine_tuning/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 409, "a succeeded job cannot be cancelled");
    let (s, v) = app.delete(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!((s, v["deleted"].as_bool()), (200, Some(true)));
    let (s, _) = app.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_run_in_order_and_cancel_works_queued_and_running() {
    submissions_run_in_order_and_cancel_works_queued_and_running_with(spawn_app(vec![]).await)
        .await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn submissions_run_in_order_and_cancel_works_queued_and_running_with(app: TestApp) {
    let mut long = product_config();
    long["maxSteps"] = json!(100000);
    long["dataset"]
        .as_object_mut()
        .unwrap()
        .remove("validationData");
    let (_, busy) = app.post("/v1/fine_tuning/jobs", &long).await;
    let busy = busy["id"].as_str().unwrap().to_string();
    app.wait_status(&busy, &["running"]).await;

    let mut cfg = product_config();
    cfg["maxSteps"] = json!(2);
    cfg["dataset"]
        .as_object_mut()
        .unwrap()
        .remove("validationData");
    let posts: Vec<_> = (0..10)
        .map(|_| app.post("/v1/fine_tuning/jobs", &cfg))
        .collect();
    let mut ids = vec![];
    for (s, v) in futures_util::future::join_all(posts).await {
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "queued");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // A queued job is cancelled at once; the running one within a step.
    let (s, v) = app
        .post(
            &format!("/v1/fine_tuning/jobs/{}/cancel", ids[9]),
            &json!({}),
        )
        .await;
    assert_eq!((s, v["status"].as_str().unwrap()), (200, "cancelled"));
    let (s, _) = app
        .post(&format!("/v1/fine_tuning/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 200);
    app.wait_status(&busy, &["cancelled"]).await;
    for id in &ids[..9] {
        app.wait_status(id, &["succeeded"]).await;
    }
    // Submission order (the list, oldest last) is the order in which training started.
    let (_, list) = app.get("/v1/fine_tuning/jobs?limit=100").await;
    let submitted: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .filter(|i| ids[..9].contains(i))
        .collect();
    let mut started: Vec<(i64, String)> = vec![];
    for id in &ids[..9] {
        let (_, ev) = app
            .get(&format!("/v1/fine_tuning/jobs/{id}/events?limit=1000"))
            .await;
        let first = ev["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["data"]["status"] == "running")
            .unwrap()["id"]
            .as_str()
            .and_then(|i| i.strip_prefix("ftevent-")?.parse::<i64>().ok())
            .unwrap();
        started.push((first, id.clone()));
    }
    started.sort();
    let by_start: Vec<String> = started.into_iter().map(|(_, id)| id).collect();
    assert_eq!(by_start, submitted);
    let (_, c) = app.get(&format!("/v1/fine_tuning/jobs/{}", ids[9])).await;
    assert_eq!(c["status"], "cancelled");
    let (_, page) = app.get("/v1/fine_tuning/jobs?limit=4").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 4);
    assert_eq!(page["has_more"], true);
    let after = page["data"][3]["id"].as_str().unwrap();
    let (_, next) = app
        .get(&format!("/v1/fine_tuning/jobs?limit=4&after={after}"))
        .await;
    assert_ne!(next["data"][0]["id"], page["data"][3]["id"]);
}
