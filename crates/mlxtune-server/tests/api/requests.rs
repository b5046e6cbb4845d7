//! Requests at the edge: bad bodies get the right status and param, API keys and CORS, the
//! OpenAPI document.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status_and_param() {
    let app = spawn_app(vec![]).await;
    let r = app
        .client
        .post(format!("{}/v1/fine_tuning/jobs", app.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    let huge = json!({ "baseModel": "x".repeat(100_000) });
    let (s, _) = app.post("/v1/fine_tuning/jobs", &huge).await;
    assert_eq!(s, 413);
    let mut cases: Vec<(Value, &str)> = vec![];
    let mut c = product_config();
    c["parameters"]["learningRate"] = json!(0);
    cases.push((c, "parameters.learningRate"));
    let mut c = product_config();
    c["parameters"].as_object_mut().unwrap().remove("epochs");
    cases.push((c, "parameters.epochs"));
    let mut c = product_config();
    c["baseModel"] = json!("no-such-model");
    cases.push((c, "baseModel"));
    let mut c = product_config();
    c["baseModel"] = json!("../../../../etc");
    cases.push((c, "baseModel"));
    let mut c = product_config();
    c["dataset"]["trainingData"] = json!("local://../secret.jsonl");
    cases.push((c, "dataset.trainingData"));
    let mut c = product_config();
    c["dataset"]["trainingData"] = json!("ftp://host/train.jsonl");
    cases.push((c, "dataset.trainingData"));
    let mut c = product_config();
    c["dataset"]["trainingData"] = json!("bad.jsonl");
    cases.push((c, "dataset.trainingData"));
    let mut c = product_config();
    c["parameters"]["sequenceLength"] = json!(100000);
    cases.push((c, "parameters.sequenceLength"));
    for (body, param) in cases {
        let (s, v) = app.post("/v1/fine_tuning/jobs", &body).await;
        assert_eq!(s, 422, "{param}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert!(v["error"]["message"].is_string());
    }
    let (_, v) = app
        .post("/v1/fine_tuning/jobs", &{
            let mut c = product_config();
            c["dataset"]["trainingData"] = json!("bad.jsonl");
            c
        })
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad.jsonl:2"),
        "{v}"
    );
    let (s, _) = app.get("/v1/fine_tuning/jobs/ftjob-nope").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_when_configured() {
    let app = spawn_app(vec!["sk-test-1".into()]).await;
    let anon = reqwest::Client::new();
    let r = anon
        .get(format!("{}/v1/fine_tuning/jobs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = anon
        .get(format!("{}/v1/fine_tuning/jobs", app.base))
        .bearer_auth("sk-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = anon
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = app.get("/v1/fine_tuning/jobs").await;
    assert_eq!(s, 200);
    // CORS: the configured origin is allowed, preflight included; others get no grant.
    let r = anon
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/fine_tuning/jobs", app.base),
        )
        .header("Origin", "http://dashboard.test")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://dashboard.test"
    );
    let r = anon
        .get(format!("{}/healthz", app.base))
        .header("Origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route() {
    let app = spawn_app(vec!["k".into()]).await;
    let r = reqwest::get(format!("{}/openapi.json", app.base))
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "readable without a key, for client generators"
    );
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = [
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("post", "/v1/fine_tuning/jobs"),
        ("get", "/v1/fine_tuning/jobs"),
        ("get", "/v1/fine_tuning/jobs/{id}"),
        ("delete", "/v1/fine_tuning/jobs/{id}"),
        ("post", "/v1/fine_tuning/jobs/{id}/cancel"),
        ("post", "/v1/fine_tuning/jobs/{id}/pause"),
        ("post", "/v1/fine_tuning/jobs/{id}/resume"),
        ("get", "/v1/fine_tuning/jobs/{id}/events"),
        ("get", "/v1/fine_tuning/jobs/{id}/metrics"),
        ("get", "/v1/fine_tuning/jobs/{id}/checkpoints"),
        ("get", "/v1/fine_tuning/jobs/{id}/stream"),
        ("get", "/v1/fine_tuning/stream"),
        ("get", "/v1/models"),
        ("post", "/v1/models"),
        ("get", "/v1/models/{id}"),
        ("delete", "/v1/models/{id}"),
        ("post", "/v1/models/{id}/generate"),
        ("post", "/v1/chat/completions"),
        ("post", "/v1/completions"),
    ];
    for (m, p) in routes {
        assert!(doc["paths"][p][m].is_object(), "{m} {p} missing");
    }
    // OpenAPI 3.1: every operationId is unique (client generators rely on it).
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate operationIds: {ids:?}");
    let schemas = &doc["components"]["schemas"];
    for s in [
        "FineTuneConfig",
        "Job",
        "JobList",
        "EventList",
        "ErrorBody",
        "MetricsList",
        "CheckpointList",
    ] {
        assert!(schemas[s].is_object(), "schema {s}");
    }
    assert!(schemas["FineTuneConfig"]["properties"]["baseModel"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
