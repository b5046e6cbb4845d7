//! Shared helpers of the service tests: a real server on port 0 with a fresh database per
//! test, typed request helpers whose every response is checked against the server's own
//! OpenAPI document, the fixtures, a stream reader.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mlxtune_server::settings::{
    AuthSettings, DatabaseUrl, PathSettings, ServerSettings, StorageSettings, WorkerSettings,
};
use mlxtune_server::{Application, Settings};
use serde_json::{json, Value};

pub use crate::openapi_check::OpenApiCheck;
pub use crate::postgres_server::Postgres;

pub struct TestApp {
    /// The test's directory: `models/`, `datasets/`, `data/`.
    pub root: PathBuf,
    /// Checks every response against the served OpenAPI document.
    pub openapi: Arc<OpenApiCheck>,
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub key: Option<String>,
    /// The server's shared state (its settings, its shutdown flag).
    pub state: mlxtune_server::AppState,
    _dir: tempfile::TempDir,
    /// The PostgreSQL server of an app on PostgreSQL, stopped with the app.
    _postgres: Option<Postgres>,
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

pub const SENTENCES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "Sphinx of black quartz, judge my vow.",
];

pub async fn spawn_app(api_keys: Vec<String>) -> TestApp {
    spawn_app_with(api_keys, Default::default(), 0).await
}

pub async fn spawn_app_with(
    api_keys: Vec<String>,
    s3: mlxtune_server::settings::S3Settings,
    stream_update_interval_ms: u64,
) -> TestApp {
    spawn_app_tuned(api_keys, |s| {
        s.s3 = s3;
        s.server.stream_update_interval_ms = stream_update_interval_ms;
    })
    .await
}

/// A server whose database is a scratch PostgreSQL server (`storage.database_url`).
pub async fn spawn_app_on_postgres() -> TestApp {
    let pg = Postgres::start();
    let url = DatabaseUrl::try_from(pg.url.clone()).unwrap();
    let mut app = spawn_app_tuned(vec![], |s| s.storage.database_url = url).await;
    app._postgres = Some(pg);
    app
}

/// A server whose settings `tune` adjusts first.
pub async fn spawn_app_tuned(api_keys: Vec<String>, tune: impl FnOnce(&mut Settings)) -> TestApp {
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
    let mut settings = Settings {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            max_body_bytes: 64 * 1024,
            cors_origins: vec!["http://dashboard.test".into()],
            stream_update_interval_ms: 0,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            max_connections: 1024,
            role: mlxtune_server::settings::Role::All,
            node_name: String::new(),
        },
        storage: StorageSettings {
            data_dir: dir.path().join("data"),
            database_path: String::new(),
            database_url: Default::default(),
            artifacts_url: None,
        },
        workers: WorkerSettings {
            count: 1,
            max_job_seconds: 0,
            stop_timeout_seconds: 120,
            lease_seconds: 30,
            scheduling: mlxtune_engine::runtime::Scheduling::Memory,
        },
        paths: PathSettings {
            model_roots: vec![models],
            dataset_roots: vec![datasets],
        },
        auth: AuthSettings {
            api_keys: api_keys.clone(),
        },
        s3: Default::default(),
        models: Default::default(),
        inference: Default::default(),
        files: Default::default(),
        remote: Default::default(),
    };
    tune(&mut settings);
    let app = Application::build(settings).await.unwrap();
    let port = app.port();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    let base = format!("http://127.0.0.1:{port}");
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    TestApp {
        root: dir.path().to_path_buf(),
        openapi: Arc::new(OpenApiCheck::new(doc)),
        base,
        port,
        client: reqwest::Client::new(),
        key: api_keys.first().cloned(),
        state,
        _dir: dir,
        _postgres: None,
    }
}

/// The product document's LoRA example, pointed at the fixture and a local dataset.
pub fn product_config() -> Value {
    json!({
        "baseModel": "lfm2-tiny",
        "dataset": { "trainingData": "local://chat.jsonl", "validationData": "local://chat.jsonl", "format": "chat" },
        "parameters": { "learningRate": 3e-3, "batchSize": 2, "epochs": 5, "sequenceLength": 128, "loraRank": 8, "loraAlpha": 16 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "fp32", "appleSliliconOptimized": true }
    })
}

impl TestApp {
    pub fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(m, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap();
        self.checked("post", path, r).await
    }

    /// The status and JSON body, after checking the body against the document's schema
    /// for this route and status.
    async fn checked(&self, method: &str, path: &str, r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        self.openapi.check_response(method, path, status, &body);
        (status, body)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::DELETE, path)
            .send()
            .await
            .unwrap();
        self.checked("delete", path, r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        self.checked("get", path, r).await
    }

    /// The messages of a job's events, oldest first.
    pub async fn messages(&self, id: &str) -> Vec<String> {
        let (_, ev) = self
            .get(&format!("/v1/fine_tuning/jobs/{id}/events?limit=1000"))
            .await;
        ev["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    }

    /// The job's messages once one of them satisfies `want` (a status event is written just
    /// after its state change, so a client that saw the state may read the events first).
    pub async fn wait_message(&self, id: &str, want: impl Fn(&str) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let said = self.messages(id).await;
            if said.iter().any(|m| want(m)) {
                return said;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "job {id}: no such message in {said:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, want: &[&str]) -> Value {
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

pub struct Moto(pub std::process::Child);

/// A real S3-compatible server (moto, from PyPI; the test command installs it) on a free
/// port of loopback, with the bucket `bucket`; it stops when the handle drops.
pub async fn start_moto(bucket: &str) -> (Moto, mlxtune_server::settings::S3Settings) {
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
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let s3 = mlxtune_server::settings::S3Settings {
        endpoint,
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
    };
    (moto, s3)
}

/// A client of `bucket` on the test's S3 server.
pub fn bucket(
    s3: &mlxtune_server::settings::S3Settings,
    bucket: &str,
) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region(&s3.region)
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(&s3.secret_access_key)
        .build()
        .unwrap()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn chat_jsonl() -> String {
    SENTENCES
        .iter()
        .map(|s| json!({"messages": [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": s}]}).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a job stream until the job's terminal status; returns the messages' types and the
/// steps of its training updates.
pub async fn read_stream(url: &str, openapi: &OpenApiCheck) -> (Vec<String>, Vec<i64>) {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (_, mut read) = ws.split();
    let (mut kinds, mut steps) = (vec![], vec![]);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(60), read.next()).await {
        let Ok(text) = msg.into_text() else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        openapi.check_stream_message(&v);
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

/// A Python tool folder installed by scripts/pytools.sh (`.native/pytools/<name>-site`, or
/// `$<env>`); fails the test when `module` is missing there.
pub fn python_site(name: &str, env: &str, module: &str) -> PathBuf {
    let site = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.native/pytools")
            .join(format!("{name}-site"))
    });
    assert!(
        site.join(module).is_dir(),
        "{module} is not installed in {} (run scripts/pytools.sh)",
        site.display()
    );
    site
}

/// A queued job row on `db`, as a submission stores it (for tests of the database itself).
pub async fn insert_queued(db: &mlxtune_server::db::Db, id: &str) {
    let config = product_config().to_string();
    let job = mlxtune_server::db::NewJob {
        id,
        status: mlxtune_server::api::JobStatus::Queued,
        name: None,
        config: &config,
        spec: "{}",
        output_dir: "/nowhere",
        metadata: None,
    };
    mlxtune_server::db::insert_job(db, &job).await.unwrap();
}
