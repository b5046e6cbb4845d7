//! `GET /metrics` as Prometheus reads it: the exposition is parsed by the official Python
//! client's parser (`prometheus_client`, from PyPI, installed by scripts/pytools.sh) and the
//! series say what happened: requests by route and status, jobs by state, a running job's
//! tokens/s and loss, open streams, memory.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// The samples of the exposition text, as Prometheus's own parser reads them.
fn parse(text: &str) -> Vec<Value> {
    use std::io::Write;
    let site = python_site("prometheus", "MLXTUNE_PROMETHEUS_SITE", "prometheus_client");
    let mut child = std::process::Command::new("python3")
        .args(["-c", PARSE])
        .env("PYTHONPATH", &site)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

async fn scrape(app: &TestApp) -> Vec<Value> {
    let r = app
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_requests_jobs_training_and_memory() {
    let app = spawn_app(vec!["k".into()]).await;
    let anonymous = reqwest::get(format!("{}/metrics", app.base)).await.unwrap();
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "metrics need the key when keys are set"
    );

    let mut long = product_config();
    long["maxSteps"] = json!(100000);
    let (_, job) = app.post("/v1/fine_tuning/jobs", &long).await;
    let id = job["id"].as_str().unwrap().to_string();
    app.wait_status(&id, &["running"]).await;
    let (ws, _) = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://127.0.0.1:{}/v1/fine_tuning/jobs/{id}/stream",
            app.port
        ))
        .map(|mut r| {
            r.headers_mut()
                .insert("authorization", "Bearer k".parse().unwrap());
            r
        })
        .unwrap(),
    )
    .await
    .unwrap();
    // Wait until the job has reported a step, so that its series exist.
    for _ in 0..600 {
        let (_, j) = app.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
        if j["latest_metrics"].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = scrape(&app).await;
    let job_label = [("job_id", id.as_str())];
    let tps = value(&s, "mlxtune_training_tokens_per_second", &job_label).unwrap();
    let loss = value(&s, "mlxtune_training_loss", &job_label).unwrap();
    assert!(tps > 0.0 && loss > 0.0 && loss.is_finite(), "{tps} {loss}");
    assert_eq!(
        value(&s, "mlxtune_jobs", &[("status", "running")]),
        Some(1.0)
    );
    assert_eq!(value(&s, "mlxtune_workers_busy", &[]), Some(1.0));
    assert_eq!(value(&s, "mlxtune_workers", &[]), Some(1.0));
    assert_eq!(value(&s, "mlxtune_websocket_clients", &[]), Some(1.0));
    assert!(value(&s, "mlxtune_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(&s, "mlxtune_mlx_peak_memory_bytes", &[]).is_some());
    let created = [
        ("method", "POST"),
        ("route", "/v1/fine_tuning/jobs"),
        ("status", "200"),
    ];
    assert_eq!(
        value(&s, "mlxtune_http_requests_total", &created),
        Some(1.0)
    );
    let unauthorized = [("route", "/metrics"), ("status", "401")];
    assert_eq!(
        value(&s, "mlxtune_http_requests_total", &unauthorized),
        Some(1.0)
    );
    let route = [("route", "/v1/fine_tuning/jobs/{id}"), ("le", "+Inf")];
    assert!(value(&s, "mlxtune_http_request_duration_seconds_bucket", &route).unwrap() >= 1.0);

    // Once the job ends, its series go and the state gauges follow.
    drop(ws);
    app.post(&format!("/v1/fine_tuning/jobs/{id}/cancel"), &json!({}))
        .await;
    app.wait_status(&id, &["cancelled"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = scrape(&app).await;
    assert_eq!(value(&s, "mlxtune_training_loss", &job_label), None);
    assert_eq!(
        value(&s, "mlxtune_jobs", &[("status", "cancelled")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "mlxtune_jobs", &[("status", "running")]),
        Some(0.0)
    );
    assert_eq!(value(&s, "mlxtune_workers_busy", &[]), Some(0.0));
    assert_eq!(value(&s, "mlxtune_websocket_clients", &[]), Some(0.0));
}
