//! Defect 6: dataset URIs reach public hosts only (unless allowed), every unreachable host
//! gets the same answer, downloads are capped and leave nothing when refused, and URIs are
//! shown without credentials.

use serde_json::Value;

use super::{config_with_data, FileServer};
use crate::helpers::*;

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_cannot_point_at_loopback_private_or_link_local_hosts_and_credentials_are_hidden()
{
    let files = FileServer::start(10).await;
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let f = files.port;
    let uris = [
        format!("http://127.0.0.1:{f}/data/chat.jsonl"),
        format!("http://localhost:{f}/data/chat.jsonl"),
        format!("http://[::ffff:127.0.0.1]:{f}/data/chat.jsonl"),
        format!("http://[::1]:{f}/data/chat.jsonl"),
        format!("http://127.1:{f}/data/chat.jsonl"),
        format!("http://localhost:{}/openapi.json", app.port),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/train.jsonl".to_string(),
        "http://0.0.0.0:1/train.jsonl".to_string(),
    ];
    for uri in &uris {
        let (s, v) = app
            .post("/v1/fine_tuning/jobs", &config_with_data(uri))
            .await;
        assert_eq!(s, 422, "{uri}: {v}");
        assert_eq!(v["error"]["param"], "dataset.trainingData");
        assert_eq!(
            message(&v),
            format!("`{uri}`: the host is unreachable or not allowed")
        );
    }
    assert_eq!(files.hits(), 0, "no request reached the loopback server");

    let secret = format!("http://admin:hunter2@127.0.0.1:{f}/data/chat.jsonl?token=abc123");
    let (_, v) = app
        .post("/v1/fine_tuning/jobs", &config_with_data(&secret))
        .await;
    assert_eq!(
        message(&v),
        format!("`http://***@127.0.0.1:{f}/data/chat.jsonl?***`: the host is unreachable or not allowed")
    );

    // An S3 endpoint on loopback is refused the same way.
    let s3 = spawn_app_tuned(vec![], |s| {
        s.workers.count = 0;
        s.s3.endpoint = format!("http://127.0.0.1:{f}");
        s.s3.region = "us-east-1".into();
        s.s3.access_key_id = "test".into();
        s.s3.secret_access_key = "test".into();
    })
    .await;
    let (s, v) = s3
        .post("/v1/fine_tuning/jobs", &config_with_data("s3://b/k.jsonl"))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        message(&v).ends_with("the host is unreachable or not allowed"),
        "{v}"
    );
    assert_eq!(files.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_reads_like_a_refused_host() {
    let app = spawn_app_tuned(vec![], |s| {
        s.workers.count = 0;
        s.remote.allow_private_addresses = true;
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let uri = format!("http://127.0.0.1:{port}/train.jsonl");
    let (s, v) = app
        .post("/v1/fine_tuning/jobs", &config_with_data(&uri))
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        message(&v),
        format!("`{uri}`: the host is unreachable or not allowed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_over_the_cap_or_refused_by_the_preflight_leave_nothing_in_the_cache() {
    let files = FileServer::start(30_000).await;
    let app = spawn_app_tuned(vec![], |s| {
        s.workers.count = 0;
        s.remote.allow_private_addresses = true;
        s.remote.max_download_bytes = 4096;
    })
    .await;
    let cache = app.root.join("data/cache/datasets");
    let cached = || -> Vec<String> {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into())
                    .collect()
            })
            .unwrap_or_default()
    };
    for path in ["big", "big-stream"] {
        let uri = format!("http://127.0.0.1:{}/{path}", files.port);
        let (s, v) = app
            .post("/v1/fine_tuning/jobs", &config_with_data(&uri))
            .await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(
            message(&v),
            format!("`{uri}`: larger than remote.max_download_bytes (4096 bytes)")
        );
        assert_eq!(cached(), Vec::<String>::new(), "after {path}");
    }
    let bad = format!("http://127.0.0.1:{}/bad.jsonl", files.port);
    let (s, v) = app
        .post("/v1/fine_tuning/jobs", &config_with_data(&bad))
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        cached(),
        Vec::<String>::new(),
        "a refused dataset is removed"
    );
    let good = format!("http://127.0.0.1:{}/data/chat.jsonl", files.port);
    let (s, v) = app
        .post("/v1/fine_tuning/jobs", &config_with_data(&good))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(cached().len(), 1, "an accepted job's dataset stays");
}
