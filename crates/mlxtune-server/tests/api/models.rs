//! The service serves what it trains: a succeeded job's model appears in `/v1/models` with
//! its lineage and answers `/v1/chat/completions` (plain and streamed), `/v1/completions` and
//! `/v1/models/{id}/generate` with the adapter's greedy tokens — those `mlxtune generate
//! --adapter` gives; registering, deleting, continued training, bad requests, the policy
//! beside training, and eviction under a small memory budget.

use std::time::Duration;

use mlxtune_engine::adapters::Adapter;
use mlxtune_engine::generate::{generate, GenerateOptions};
use mlxtune_engine::mlx_rs::Dtype;
use mlxtune_engine::{LoadOptions, Model, Tokenizer};
use serde_json::{json, Value};

use crate::helpers::*;

/// Trains the product example briefly; returns the job.
async fn trained(app: &TestApp, name: Option<&str>) -> Value {
    let mut cfg = product_config();
    cfg["maxSteps"] = json!(4);
    if let Some(n) = name {
        cfg["name"] = json!(n);
    }
    let (s, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    assert_eq!(s, 200, "{job}");
    app.wait_status(job["id"].as_str().unwrap(), &["succeeded"])
        .await
}

/// What `mlxtune generate --model <fixture> --adapter <job output> --chat` gives, greedily.
fn greedy_with_adapter(adapter_dir: &str, prompt: &str, max_tokens: usize) -> String {
    let dir = fixture("lfm2");
    let opts = LoadOptions {
        dtype: Some(Dtype::Float32),
        quantize: None,
    };
    let mut model = Model::load(&dir, &opts).unwrap();
    Adapter::load(std::path::Path::new(adapter_dir))
        .unwrap()
        .attach(&mut model)
        .unwrap();
    let tok = Tokenizer::from_dir(&dir, Some(&model.spec.tokens())).unwrap();
    let text = tok
        .apply_chat_template(&[json!({"role": "user", "content": prompt})], None, true)
        .unwrap();
    let ids = tok.encode(&text, false).unwrap();
    let g_opts = GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    };
    generate(&model, &tok, &ids, &g_opts, &mut |_| true)
        .unwrap()
        .text
}

/// The text of a streamed answer, read from its server-sent events.
async fn streamed(app: &TestApp, path: &str, body: &Value) -> (Vec<Value>, bool) {
    let r = app
        .req(reqwest::Method::POST, path)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let done = data.last() == Some(&"[DONE]");
    let chunks = data
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (chunks, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_model_is_listed_with_lineage_and_serves_the_adapters_greedy_tokens() {
    a_trained_model_is_listed_with_lineage_and_serves_the_adapters_greedy_tokens_with(
        spawn_app(vec![]).await,
    )
    .await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn a_trained_model_is_listed_with_lineage_and_serves_the_adapters_greedy_tokens_with(
    app: TestApp,
) {
    let job = trained(&app, Some("demo")).await;
    let jid = job["id"].as_str().unwrap();
    let ft = job["fine_tuned_model"].as_str().unwrap().to_string();
    assert_eq!(ft, format!("ft:lfm2-tiny:demo:{jid}"));
    let (_, list) = app.get("/v1/models").await;
    let m = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == ft)
        .unwrap()
        .clone();
    assert_eq!(m["object"], "model");
    assert_eq!(m["kind"], "fine_tuned");
    let l = &m["lineage"];
    assert_eq!(
        (l["base_model"].as_str(), l["job_id"].as_str()),
        (Some("lfm2-tiny"), Some(jid))
    );
    assert!(l["train_loss"].as_f64().unwrap() > 0.0 && l["valid_loss"].as_f64().unwrap() > 0.0);
    let adapter = l["adapter_path"].as_str().unwrap().to_string();

    let want = greedy_with_adapter(&adapter, "Say it.", 8);
    let body = json!({"model": ft, "messages": [{"role": "user", "content": "Say it."}], "max_tokens": 8, "temperature": 0});
    let (s, c) = app.post("/v1/chat/completions", &body).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["choices"][0]["message"]["content"], want.as_str());
    assert_eq!(c["object"], "chat.completion");
    let u = &c["usage"];
    assert_eq!(
        u["total_tokens"],
        u["prompt_tokens"].as_i64().unwrap() + u["completion_tokens"].as_i64().unwrap()
    );

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = streamed(&app, "/v1/chat/completions", &sbody).await;
    assert!(done, "the stream ends with [DONE]");
    for c in &chunks {
        app.openapi.check_schema("ChatCompletionChunk", c);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want);
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, c["choices"][0]["finish_reason"].as_str());
    assert_eq!(chunks.last().unwrap()["usage"], c["usage"]);

    let (s, g) = app
        .post(
            &format!("/v1/models/{ft}/generate"),
            &json!({"prompt": "Say it.", "maxTokens": 8, "temperature": 0, "chat": true}),
        )
        .await;
    assert_eq!((s, g["text"].as_str()), (200, Some(want.as_str())), "{g}");
    let (s, t) = app
        .post(
            "/v1/completions",
            &json!({"model": ft, "prompt": "The quick", "max_tokens": 4, "temperature": 0}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["object"], "text_completion");
    let (_, list) = app.get("/v1/models").await;
    let loaded: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["loaded"] == true)
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, vec![ft.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inference_requests_name_the_field() {
    let app = spawn_app(vec![]).await;
    let msg = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"model": "no-such-model", "messages": msg}),
            404,
            "model",
        ),
        (
            json!({"model": "lfm2-tiny", "messages": msg, "max_tokens": 100000}),
            422,
            "max_tokens",
        ),
        (
            json!({"model": "lfm2-tiny", "messages": [{"role": "user", "content": 5}]}),
            422,
            "messages[0].content",
        ),
        (
            json!({"model": "lfm2-tiny", "messages": [{"role": "robot", "content": "x"}]}),
            422,
            "messages[0].role",
        ),
        (
            json!({"model": "lfm2-tiny", "messages": msg, "n": 2}),
            422,
            "n",
        ),
        (
            json!({"model": "lfm2-tiny", "messages": msg, "temperature": 3}),
            422,
            "temperature",
        ),
        (
            json!({"model": "lfm2-tiny", "messages": msg, "logit_bias": {}}),
            422,
            "logit_bias",
        ),
        (
            json!({"model": "lfm2-tiny", "messages": []}),
            422,
            "messages",
        ),
    ];
    for (body, status, param) in cases {
        let (s, v) = app.post("/v1/chat/completions", &body).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (status, Some(param)),
            "{body}: {v}"
        );
    }
    // A base model by path works without registering it.
    let (s, v) = app
        .post(
            "/v1/completions",
            &json!({"model": "lfm2-tiny", "prompt": "Hello", "max_tokens": 3, "temperature": 0}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_holds_bases_and_fine_tunes_and_training_comes_first() {
    registry_holds_bases_and_fine_tunes_and_training_comes_first_with(spawn_app(vec![]).await)
        .await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn registry_holds_bases_and_fine_tunes_and_training_comes_first_with(app: TestApp) {
    let (s, m) = app
        .post("/v1/models", &json!({"id": "tiny", "source": "lfm2-tiny"}))
        .await;
    assert_eq!((s, m["kind"].as_str()), (200, Some("base")), "{m}");
    let (s, _) = app
        .post("/v1/models", &json!({"id": "tiny", "source": "lfm2-tiny"}))
        .await;
    assert_eq!(s, 409);
    let (s, v) = app
        .post("/v1/models", &json!({"source": "lfm2-tiny", "path": "x"}))
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (422, Some("path")));
    // A job on the registered name; its model then blocks deleting the base.
    let mut cfg = product_config();
    cfg["baseModel"] = json!("tiny");
    cfg["maxSteps"] = json!(3);
    let (_, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    let job = app
        .wait_status(job["id"].as_str().unwrap(), &["succeeded"])
        .await;
    let ft = job["fine_tuned_model"].as_str().unwrap().to_string();
    let (s, _) = app.delete("/v1/models/tiny").await;
    assert_eq!(s, 409, "a fine-tuned model is based on it");

    // Continued training from the fine-tuned model (fused into its base once).
    let mut more = product_config();
    more["baseModel"] = json!(ft);
    more["maxSteps"] = json!(2);
    let (s, j2) = app.post("/v1/fine_tuning/jobs", &more).await;
    assert_eq!(s, 200, "{j2}");
    let j2 = app
        .wait_status(j2["id"].as_str().unwrap(), &["succeeded"])
        .await;
    let (_, m2) = app
        .get(&format!(
            "/v1/models/{}",
            j2["fine_tuned_model"].as_str().unwrap()
        ))
        .await;
    assert_eq!(m2["lineage"]["base_model"], ft.as_str());
    // The first job cannot be deleted while a model is based on its model.
    let first = format!("/v1/fine_tuning/jobs/{}", job["id"].as_str().unwrap());
    let (s, v) = app.delete(&first).await;
    assert_eq!(s, 409, "{v}");
    let why = v["error"]["message"].as_str().unwrap();
    assert!(why.contains(&format!("`{ft}` is the base of")), "{v}");

    // While a job trains, inference waits its turn (policy "refuse"), and the model of a
    // job still training is not served.
    let mut long = product_config();
    long["maxSteps"] = json!(100000);
    let (_, busy) = app.post("/v1/fine_tuning/jobs", &long).await;
    let busy_id = busy["id"].as_str().unwrap().to_string();
    app.wait_status(&busy_id, &["running"]).await;
    let body =
        json!({"model": ft, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let (s, v) = app.post("/v1/chat/completions", &body).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("busy_training")),
        "{v}"
    );
    let pending = format!("ft:lfm2-tiny:mlxtune:{busy_id}");
    let (s, v) = app
        .post(
            "/v1/chat/completions",
            &json!({"model": pending, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    app.post(
        &format!("/v1/fine_tuning/jobs/{busy_id}/cancel"),
        &json!({}),
    )
    .await;
    app.wait_status(&busy_id, &["cancelled"]).await;
    let (s, _) = app
        .delete(&format!(
            "/v1/models/{}",
            j2["fine_tuned_model"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 200);
    let (s, v) = app.get("/v1/models/nope").await;
    assert_eq!((s, v["error"]["param"].as_str()), (404, Some("model")));
    // With the model based on it gone, the first job goes, and its model with it.
    let (s, v) = app.delete(&first).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app.get(&format!("/v1/models/{ft}")).await;
    assert_eq!(s, 404, "a deleted job's model is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_memory_budget_keeps_only_the_last_model_loaded() {
    let app = spawn_app_tuned(vec![], |s| s.inference.memory_budget_bytes = 1).await;
    copy_dir(&fixture("llama"), &app.root.join("models/llama-tiny"));
    for model in ["lfm2-tiny", "llama-tiny", "lfm2-tiny"] {
        app.post("/v1/models", &json!({"id": model, "source": model}))
            .await;
        let (s, v) = app
            .post(
                "/v1/completions",
                &json!({"model": model, "prompt": "Hi", "max_tokens": 2, "temperature": 0}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (_, list) = app.get("/v1/models").await;
        let loaded: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["loaded"] == true)
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            loaded,
            vec![model],
            "only the most recent model stays over the budget"
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gguf_file_under_the_model_roots_trains_and_serves() {
    use mlxtune_engine::gguf::{export_gguf, GgufQuant};
    let app = spawn_app(vec![]).await;
    let opts = LoadOptions {
        dtype: Some(Dtype::Float32),
        quantize: None,
    };
    let model = Model::load(&fixture("lfm2"), &opts).unwrap();
    let file = app.root.join("models/lfm2-tiny.gguf");
    export_gguf(
        &model,
        &file,
        "F32".parse::<GgufQuant>().unwrap(),
        &mut |_| {},
    )
    .unwrap();
    let mut cfg = product_config();
    cfg["baseModel"] = json!("lfm2-tiny.gguf");
    cfg["maxSteps"] = json!(2);
    let (s, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    assert_eq!(s, 200, "{job}");
    let job = app
        .wait_status(job["id"].as_str().unwrap(), &["succeeded"])
        .await;
    let ft = job["fine_tuned_model"].as_str().unwrap();
    for model in ["lfm2-tiny.gguf", ft] {
        let body = json!({"model": model, "prompt": "Hello", "max_tokens": 3, "temperature": 0});
        let (s, v) = app.post("/v1/completions", &body).await;
        assert_eq!(s, 200, "{model}: {v}");
    }
}
