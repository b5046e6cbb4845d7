//! Defect 10: every error is the JSON error object (query strings, unknown routes, wrong
//! methods, a stream without `Upgrade`), and inputs that used to pass the pre-flight and
//! fail later, or fail confusingly, are answered at once and by name.

use serde_json::{json, Value};

use super::{config_with_data, error_of};
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_unknown_routes_wrong_methods_and_plain_stream_requests_get_json_errors() {
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let (s, v) = app.get("/v1/fine_tuning/jobs?limit=abc").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    assert_eq!(v["error"]["param"], "limit", "{v}");
    let (s, v) = app.get("/v1/fine_tuning/stream").await;
    assert_eq!(s, 400, "{v}");

    let r = app
        .client
        .get(format!("{}/v1/no-such-route", app.base))
        .send()
        .await
        .unwrap();
    let (s, v) = error_of(&app, r).await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
    assert_eq!(v["error"]["message"], "no route GET /v1/no-such-route");

    let r = app
        .client
        .delete(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("allow"), "405 keeps Allow");
    let (s, v) = error_of(&app, r).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

async fn refused(app: &TestApp, cfg: &Value, param: &str) -> String {
    let (s, v) = app.post("/v1/fine_tuning/jobs", cfg).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["param"], param, "{v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemes_byte_order_marks_weights_and_chat_contents_are_checked_at_submission() {
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let data = app.root.join("datasets");
    let m = refused(
        &app,
        &config_with_data("ftp://h/t.jsonl"),
        "dataset.trainingData",
    )
    .await;
    assert!(
        m.contains("ftp:// scheme is not supported") && m.contains("http://, https://, s3://"),
        "{m}"
    );

    std::fs::write(data.join("bom.jsonl"), format!("\u{feff}{}", chat_jsonl())).unwrap();
    let (s, v) = app
        .post("/v1/fine_tuning/jobs", &config_with_data("bom.jsonl"))
        .await;
    assert_eq!(s, 200, "a byte-order mark is accepted: {v}");

    let chat = |content: Value| {
        json!({"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]})
            .to_string()
    };
    std::fs::write(data.join("number.jsonl"), chat(json!(7))).unwrap();
    let m = refused(
        &app,
        &config_with_data("number.jsonl"),
        "dataset.trainingData",
    )
    .await;
    assert!(
        m.contains("number.jsonl:1") && m.contains("messages[0].content must be a string"),
        "{m}"
    );
    std::fs::write(
        data.join("image.jsonl"),
        chat(json!([{"type": "image_url"}])),
    )
    .unwrap();
    let m = refused(
        &app,
        &config_with_data("image.jsonl"),
        "dataset.trainingData",
    )
    .await;
    assert!(
        m.contains("image.jsonl:1") && m.contains("messages[0].content[0]"),
        "{m}"
    );
    let parts = json!([{"type": "text", "text": "Say"}, {"type": "text", "text": "it."}]);
    std::fs::write(data.join("parts.jsonl"), chat(parts)).unwrap();
    let (s, v) = app
        .post("/v1/fine_tuning/jobs", &config_with_data("parts.jsonl"))
        .await;
    assert_eq!(s, 200, "OpenAI's text parts train: {v}");

    for (name, len) in [("truncated", Some(100)), ("empty", Some(0))] {
        let dir = app.root.join("models").join(name);
        copy_dir(&fixture("lfm2"), &dir);
        let weights = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("model.safetensors"));
        weights.unwrap().set_len(len.unwrap()).unwrap();
        let mut cfg = product_config();
        cfg["baseModel"] = json!(name);
        let m = refused(&app, &cfg, "baseModel").await;
        assert!(
            m.contains("model.safetensors") && m.contains("truncated"),
            "{name}: {m}"
        );
    }
}
