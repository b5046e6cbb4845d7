//! The service as a client sees it: a real server on port 0, a fresh SQLite database per
//! test, real training on the tiny fixtures.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mlxtune_server::settings::{
    AuthSettings, PathSettings, ServerSettings, StorageSettings, WorkerSettings,
};
use mlxtune_server::{Application, Settings};
use serde_json::{json, Value};

struct TestApp {
    base: String,
    port: u16,
    client: reqwest::Client,
    key: Option<String>,
    _dir: tempfile::TempDir,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

const SENTENCES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "Sphinx of black quartz, judge my vow.",
];

async fn spawn_app(api_keys: Vec<String>) -> TestApp {
    spawn_app_with(api_keys, Default::default(), 0).await
}

async fn spawn_app_with(
    api_keys: Vec<String>,
    s3: mlxtune_server::settings::S3Settings,
    stream_update_interval_ms: u64,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let datasets = dir.path().join("datasets");
    copy_dir(&fixture("lfm2"), &models.join("lfm2-tiny"));
    std::fs::create_dir_all(&datasets).unwrap();
    let chat: Vec<String> = SENTENCES
        .iter()
        .map(|s| json!({"messages": [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": s}]}).to_string())
        .collect();
    std::fs::write(datasets.join("chat.jsonl"), chat.join("\n")).unwrap();
    std::fs::write(datasets.join("bad.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n{\"messages\": 7}\n").unwrap();
    std::fs::write(dir.path().join("secret.jsonl"), "{\"text\": \"outside\"}\n").unwrap();
    let settings = Settings {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            max_body_bytes: 64 * 1024,
            cors_origins: vec!["http://dashboard.test".into()],
            stream_update_interval_ms,
        },
        storage: StorageSettings {
            data_dir: dir.path().join("data"),
            database_path: String::new(),
        },
        workers: WorkerSettings { count: 1 },
        paths: PathSettings {
            model_roots: vec![models],
            dataset_roots: vec![datasets],
        },
        auth: AuthSettings {
            api_keys: api_keys.clone(),
        },
        s3,
    };
    let app = Application::build(settings).await.unwrap();
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::new(),
        key: api_keys.first().cloned(),
        _dir: dir,
    }
}

/// The product document's LoRA example, pointed at the fixture and a local dataset.
fn product_config() -> Value {
    json!({
        "baseModel": "lfm2-tiny",
        "dataset": { "trainingData": "local://chat.jsonl", "validationData": "local://chat.jsonl", "format": "chat" },
        "parameters": { "learningRate": 3e-3, "batchSize": 2, "epochs": 5, "sequenceLength": 128, "loraRank": 8, "loraAlpha": 16 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "fp32", "appleSliliconOptimized": true }
    })
}

impl TestApp {
    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(m, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_status(&self, id: &str, want: &[&str]) -> Value {
        let start = Instant::now();
        loop {
            let (_, job) = self.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
            if want.contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "job {id} stuck in {}",
                job["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_example_config_trains_to_success_and_the_stream_shows_the_loss_falling() {
    let app = spawn_app(vec![]).await;
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
    let after = ev["data"][4]["id"].as_i64().unwrap();
    let (_, ev2) = app
        .get(&format!(
            "/v1/fine_tuning/jobs/{id}/events?after={after}&limit=1000"
        ))
        .await;
    assert!(ev2["data"][0]["id"].as_i64().unwrap() > after);
    let (_, ck) = app
        .get(&format!("/v1/fine_tuning/jobs/{id}/checkpoints"))
        .await;
    assert!(!ck["data"].as_array().unwrap().is_empty());
    let (_, list) = app.get("/v1/fine_tuning/jobs?status=succeeded").await;
    assert_eq!(list["data"][0]["id"], id.as_str());
}

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
async fn pause_then_resume_ends_with_the_same_losses_and_illegal_transitions_are_409() {
    let app = spawn_app(vec![]).await;
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
    let r = app
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/fine_tuning/jobs/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = app.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_run_in_order_and_cancel_works_queued_and_running() {
    let app = spawn_app(vec![]).await;
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
            .as_i64()
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
    ];
    for (m, p) in routes {
        assert!(doc["paths"][p][m].is_object(), "{m} {p} missing");
    }
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

struct Moto(std::process::Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chat_jsonl() -> String {
    SENTENCES
        .iter()
        .map(|s| json!({"messages": [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": s}]}).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_come_from_s3_and_http_through_the_cache() {
    use object_store::ObjectStore;
    // A real S3-compatible server (moto, from PyPI; the test command installs it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let moto = Moto(
        std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server is installed (pip install 'moto[server]')"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "moto_server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/mlxtune-data"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("mlxtune-data")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    store
        .put(
            &object_store::path::Path::from("train/chat.jsonl"),
            chat_jsonl().into(),
        )
        .await
        .unwrap();
    let s3 = mlxtune_server::settings::S3Settings {
        endpoint: endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
    };
    let app = spawn_app_with(vec![], s3, 0).await;
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

/// Reads a job stream until the job's terminal status; returns the messages' types and the
/// steps of its training updates.
async fn read_stream(url: &str) -> (Vec<String>, Vec<i64>) {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (_, mut read) = ws.split();
    let (mut kinds, mut steps) = (vec![], vec![]);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(60), read.next()).await {
        let Ok(text) = msg.into_text() else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        kinds.push(v["type"].as_str().unwrap_or("").to_string());
        if v["type"] == "mlx_training_update" {
            steps.push(v["data"]["step"].as_i64().unwrap());
        }
        if v["type"] == "status" && v["data"]["status"] == "succeeded" {
            break;
        }
    }
    (kinds, steps)
}

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
    let reader = tokio::spawn({
        let url = url.clone();
        async move { read_stream(&url).await }
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
    let (_, replay_steps) = read_stream(&format!("{url}?after=0")).await;
    assert_eq!(replay_steps, (1..=total).collect::<Vec<_>>());
}
