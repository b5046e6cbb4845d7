//! The job stream: rate-limited live updates and a complete replay.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_step_updates_are_rate_limited_and_replay_has_every_step() {
    // One live update per minute at most: a live client sees the first and the last step;
    // every step is stored and a client replaying with ?after=0 gets them all, in order.
    let app = spawn_app_with(vec![], Default::default(), 60_000).await;
    // A long job holds the only worker, so the second job is still queued when its stream
    // connects: everything that stream then gets is live.
    let mut long = product_config();
    long["parameters"]["epochs"] = json!(500);
    let (_, a) = app.post("/v1/fine_tuning/jobs", &long).await;
    let mut cfg = product_config();
    cfg["parameters"]["epochs"] = json!(2);
    let (status, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    assert_eq!(status, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let url = format!(
        "ws://127.0.0.1:{}/v1/fine_tuning/jobs/{id}/stream",
        app.port
    );
    let openapi = app.openapi.clone();
    let reader = tokio::spawn({
        let url = url.clone();
        async move { read_stream(&url, &openapi).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, job_b) = app.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(job_b["status"], "queued");
    let cancel = format!("/v1/fine_tuning/jobs/{}/cancel", a["id"].as_str().unwrap());
    let (code, _) = app.post(&cancel, &json!({})).await;
    assert_eq!(code, 200);
    let (kinds, live_steps) = reader.await.unwrap();
    assert_eq!(kinds.first().map(String::as_str), Some("snapshot"));
    let job = app.wait_status(&id, &["succeeded"]).await;
    let total = job["progress"]["total_steps"].as_i64().unwrap();
    assert!(total >= 4, "{job}");
    assert!(
        live_steps.len() <= 2,
        "rate-limited stream sent steps {live_steps:?}"
    );
    assert_eq!(
        live_steps.last(),
        Some(&total),
        "the last step always goes out"
    );
    let (_, replay_steps) = read_stream(&format!("{url}?after=0"), &app.openapi).await;
    assert_eq!(replay_steps, (1..=total).collect::<Vec<_>>());
}
