//! Base models by Hugging Face id, from a Hub served inside the test in the Hub's URL layout
//! (`/api/models/{repo}/revision/main`, `/{repo}/resolve/{revision}/{file}`, `HF_ENDPOINT`
//! pointed at it): the download lands in the Hub's cache layout, resumes a transfer that
//! dropped mid-way with a `Range` request, refuses a file whose checksum is wrong (leaving
//! nothing under its final name), and says clearly when the Hub cannot be reached.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone, Default)]
struct Hub {
    /// Requests seen: "METHOD file range".
    log: Arc<Mutex<Vec<String>>>,
    /// Files already cut off once (the first GET of a large file drops half-way).
    dropped: Arc<Mutex<Vec<String>>>,
}

fn file_bytes(file: &str) -> Option<Vec<u8>> {
    std::fs::read(fixture("lfm2").join(file)).ok()
}

fn etag(repo: &str, file: &str, bytes: &[u8]) -> String {
    if file.ends_with(".safetensors") {
        // Large files: the Hub's ETag is their SHA-256 (test-org/bad lies about it).
        let content: &[u8] = if repo.ends_with("bad") {
            b"something else"
        } else {
            bytes
        };
        mlxtune_engine::fsutil::hex(&Sha256::digest(content))
    } else {
        format!(
            "git-{}",
            mlxtune_engine::fsutil::hex(&Sha256::digest(bytes))
        )
    }
}

async fn info(Path((org, name)): Path<(String, String)>) -> Response {
    let files: Vec<_> = std::fs::read_dir(fixture("lfm2"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .map(|f| json!({ "rfilename": f }))
        .collect();
    axum::Json(json!({ "id": format!("{org}/{name}"), "sha": COMMIT, "siblings": files }))
        .into_response()
}

async fn resolve(
    State(hub): State<Hub>,
    method: Method,
    headers: HeaderMap,
    Path((org, name, _rev, file)): Path<(String, String, String, String)>,
) -> Response {
    let Some(bytes) = file_bytes(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    hub.log
        .lock()
        .unwrap()
        .push(format!("{method} {file} {range}"));
    let tag = etag(&name, &file, &bytes);
    let base = [
        ("etag", format!("\"{tag}\"")),
        ("x-repo-commit", COMMIT.to_string()),
    ];
    if method == Method::HEAD {
        return (base, [("content-length", bytes.len().to_string())]).into_response();
    }
    let from: usize = range
        .strip_prefix("bytes=")
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    let rest = bytes[from.min(bytes.len())..].to_vec();
    let status = if from > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let first_time = !hub.dropped.lock().unwrap().contains(&file);
    if file.ends_with(".safetensors") && from == 0 && first_time && org == "test-org" {
        hub.dropped.lock().unwrap().push(file.clone());
        // Half the file, then the connection breaks.
        let half = rest[..rest.len() / 2].to_vec();
        use futures_util::StreamExt;
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(half)]);
        let broken = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Err(std::io::Error::other("dropped"))
        });
        let body = Body::from_stream(first.chain(broken));
        return (
            status,
            base,
            [("content-length", rest.len().to_string())],
            body,
        )
            .into_response();
    }
    (status, base, rest).into_response()
}

async fn serve_hub() -> (String, Hub) {
    let hub = Hub::default();
    let app = axum::Router::new()
        .route(
            "/api/models/{org}/{name}/revision/main",
            axum::routing::get(info),
        )
        .route(
            "/{org}/{name}/resolve/{rev}/{file}",
            axum::routing::get(resolve).head(resolve),
        )
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}"), hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hugging_face_id_downloads_resumes_is_checked_and_serves() {
    let (endpoint, hub) = serve_hub().await;
    let cache = tempfile::tempdir().unwrap();
    // Only this test reads these variables.
    std::env::set_var("HF_ENDPOINT", &endpoint);
    std::env::set_var("HF_HUB_CACHE", cache.path());
    let app = spawn_app(vec![]).await;

    let (s, m) = app
        .post("/v1/models", &json!({ "source": "test-org/tiny" }))
        .await;
    assert_eq!(s, 200, "{m}");
    let snapshot = cache
        .path()
        .join("models--test-org--tiny/snapshots")
        .join(COMMIT);
    assert_eq!(m["path"].as_str(), Some(snapshot.to_str().unwrap()));
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        let link = snapshot.join(f);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{f}"
        );
        assert_eq!(std::fs::read(&link).unwrap(), file_bytes(f).unwrap(), "{f}");
    }
    let refs = cache.path().join("models--test-org--tiny/refs/main");
    assert_eq!(std::fs::read_to_string(refs).unwrap(), COMMIT);
    let log = hub.log.lock().unwrap().clone();
    let resumed = log
        .iter()
        .any(|l| l.starts_with("GET model.safetensors bytes=") && !l.ends_with("bytes=0-"));
    assert!(
        resumed,
        "the dropped transfer resumes with a Range request: {log:?}"
    );
    let blobs: Vec<String> = std::fs::read_dir(cache.path().join("models--test-org--tiny/blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        blobs.iter().all(|b| !b.ends_with(".incomplete")),
        "{blobs:?}"
    );

    let body =
        json!({"model": "test-org/tiny", "prompt": "Hello", "max_tokens": 3, "temperature": 0});
    let (s, v) = app.post("/v1/completions", &body).await;
    assert_eq!(s, 200, "{v}");

    // A job on a Hugging Face id nobody has fetched: the submission fetches its config and
    // tokenizer, the worker the weights, with progress events on the job.
    let mut cfg = product_config();
    cfg["baseModel"] = json!("test-org/fresh");
    cfg["maxSteps"] = json!(2);
    let (s, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    assert_eq!(s, 200, "{job}");
    let id = job["id"].as_str().unwrap();
    app.wait_status(id, &["succeeded"]).await;
    let (_, ev) = app
        .get(&format!("/v1/fine_tuning/jobs/{id}/events?limit=1000"))
        .await;
    let texts: Vec<&str> = ev["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    let progress: Vec<&&str> = texts
        .iter()
        .filter(|t| t.starts_with("downloading model.safetensors of test-org/fresh"))
        .collect();
    assert!(
        progress.len() >= 2 && progress.last().unwrap().contains(": 100% of"),
        "{texts:?}"
    );
    let (s, m) = app.get("/v1/models").await;
    assert_eq!(s, 200);
    assert!(
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "test-org/fresh"),
        "{m}"
    );

    // A file whose content does not match its checksum is refused, and not kept.
    let (s, v) = app
        .post("/v1/models", &json!({ "source": "other-org/bad" }))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{v}"
    );
    assert!(!cache
        .path()
        .join("models--other-org--bad/snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());

    // No Hub at all: one clear error.
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let (s, v) = app
        .post("/v1/models", &json!({ "source": "test-org/elsewhere" }))
        .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("source")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the Hugging Face Hub"),
        "{v}"
    );
}
