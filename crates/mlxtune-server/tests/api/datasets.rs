//! Datasets by URI: s3:// (a real moto server) and http(s):// through the cache.

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_come_from_s3_and_http_through_the_cache() {
    use object_store::ObjectStore;
    let (moto, s3) = start_moto("mlxtune-data").await;
    let store = bucket(&s3, "mlxtune-data");
    store
        .put(
            &object_store::path::Path::from("train/chat.jsonl"),
            chat_jsonl().into(),
        )
        .await
        .unwrap();
    // The test's servers are on loopback, which downloads may reach only when allowed.
    let app = spawn_app_tuned(vec![], |s| {
        s.s3 = s3;
        s.remote.allow_private_addresses = true;
    })
    .await;
    let mut cfg = product_config();
    cfg["dataset"]["trainingData"] = json!("s3://mlxtune-data/train/chat.jsonl");
    cfg["dataset"]
        .as_object_mut()
        .unwrap()
        .remove("validationData");
    cfg["maxSteps"] = json!(3);
    let (s, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(
        job["config"]["dataset"]["trainingData"], "s3://mlxtune-data/train/chat.jsonl",
        "the job keeps its URI"
    );
    app.wait_status(job["id"].as_str().unwrap(), &["succeeded"])
        .await;
    let mut missing = cfg.clone();
    missing["dataset"]["trainingData"] = json!("s3://mlxtune-data/nope.jsonl");
    let (s, v) = app.post("/v1/fine_tuning/jobs", &missing).await;
    assert_eq!(
        (s, v["error"]["param"].as_str().unwrap()),
        (422, "dataset.trainingData"),
        "{v}"
    );
    drop(moto);

    // http(s): a server that answers like a static file host.
    let body = chat_jsonl();
    let files = axum::Router::new().route(
        "/data/chat.jsonl",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [
                        ("last-modified", "Wed, 25 Nov 2026 10:00:00 GMT"),
                        ("etag", "\"v1\""),
                        ("content-type", "application/jsonl"),
                    ],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, files).await });
    let mut cfg2 = cfg.clone();
    cfg2["dataset"]["trainingData"] =
        json!(format!("http://127.0.0.1:{http_port}/data/chat.jsonl"));
    let (s, job) = app.post("/v1/fine_tuning/jobs", &cfg2).await;
    assert_eq!(s, 200, "{job}");
    app.wait_status(job["id"].as_str().unwrap(), &["succeeded"])
        .await;
}
