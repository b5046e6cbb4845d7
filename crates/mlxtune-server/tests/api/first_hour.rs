//! Walls a new user hit (issue 17), each proven gone: misspelled fields are 422s naming the
//! path and the closest name, OpenAI's job body is understood, errors carry OpenAI's `type`.

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_config_field_is_a_422_naming_it_and_the_closest_name() {
    let app = spawn_app(vec![]).await;
    let mut c = product_config();
    c["lora"] = json!({"dropuot": 0.1});
    let (s, v) = app.post("/v1/fine_tuning/jobs", &c).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["param"], "lora.dropuot");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("did you mean lora.dropout?"), "{m}");
    let mut c = product_config();
    c["lora"] = json!({"numLayerz": 2});
    let (_, v) = app.post("/v1/fine_tuning/jobs", &c).await;
    assert_eq!(v["error"]["param"], "lora.numLayerz");
    let mut c = product_config();
    c["learningRate"] = json!(1e-3);
    let (s, v) = app.post("/v1/fine_tuning/jobs", &c).await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("learningRate"))
    );
    let (s, v) = app.get("/v1/fine_tuning/jobs/ftjob-none").await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_job_body_is_mapped_onto_the_config_and_trains() {
    let app = spawn_app(vec![]).await;
    let body = json!({
        "model": "lfm2-tiny", "training_file": "local://chat.jsonl", "suffix": "first-hour",
        "seed": 7, "validation_file": "local://chat.jsonl", "metadata": {"team": "first-hour"},
        "checkpoint": {"everySteps": 1}, "eval": {"everySteps": 1},
        "method": {"type": "supervised", "supervised": {"hyperparameters":
            {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 20}}}
    });
    let (s, job) = app.post("/v1/fine_tuning/jobs", &body).await;
    assert_eq!(s, 200, "{job}");
    let c = &job["config"];
    assert_eq!(c["baseModel"], "lfm2-tiny");
    assert_eq!(c["dataset"]["trainingData"], "local://chat.jsonl");
    assert_eq!(c["name"], "first-hour");
    assert_eq!(c["seed"], 7);
    assert_eq!(c["parameters"]["batchSize"], 2);
    assert!((c["parameters"]["learningRate"].as_f64().unwrap() - 2e-3).abs() < 1e-12);
    let done = app
        .wait_status(job["id"].as_str().unwrap(), &["succeeded", "failed"])
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // The job object carries OpenAI's fields too.
    assert_eq!(done["training_file"], "local://chat.jsonl");
    assert_eq!(done["validation_file"], "local://chat.jsonl");
    assert_eq!(done["seed"], 7);
    assert_eq!(done["metadata"], json!({"team": "first-hour"}));
    assert_eq!(done["hyperparameters"]["n_epochs"], 1.0);
    assert_eq!(done["method"]["type"], "supervised");
    assert!(
        (done["hyperparameters"]["learning_rate_multiplier"]
            .as_f64()
            .unwrap()
            - 20.0)
            .abs()
            < 1e-9
    );
    // Checkpoints: ftckpt_ ids, the job id, step, metrics with validation, paging.
    let id = done["id"].as_str().unwrap();
    let (s, page) = app
        .get(&format!("/v1/fine_tuning/jobs/{id}/checkpoints?limit=1"))
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["has_more"], true, "{page}");
    let first = &page["data"][0];
    assert!(
        first["id"].as_str().unwrap().starts_with("ftckpt_"),
        "{first}"
    );
    assert_eq!(first["fine_tuning_job_id"], id);
    assert_eq!(first["step_number"], 2);
    assert!(first["created_at"].as_i64().unwrap() > 0);
    assert!(first["metrics"]["train_loss"].is_number(), "{first}");
    assert!(first["metrics"]["valid_loss"].is_number(), "{first}");
    let after = first["id"].as_str().unwrap();
    let (_, rest) = app
        .get(&format!(
            "/v1/fine_tuning/jobs/{id}/checkpoints?after={after}&limit=10"
        ))
        .await;
    assert_eq!(rest["data"][0]["step_number"], 1, "{rest}");
    assert_eq!(rest["has_more"], false);
    // One rule for every list's limit.
    for path in [
        "/v1/fine_tuning/jobs?limit=101".to_string(),
        format!("/v1/fine_tuning/jobs/{id}/events?limit=1001"),
        format!("/v1/fine_tuning/jobs/{id}/checkpoints?limit=0"),
    ] {
        let (s, v) = app.get(&path).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (422, Some("limit")),
            "{path}"
        );
    }

    let mut clash = product_config();
    clash["model"] = json!("another-model");
    let (s, v) = app.post("/v1/fine_tuning/jobs", &clash).await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("model")),
        "{v}"
    );
    let (s, v) = app
        .post(
            "/v1/fine_tuning/jobs",
            &json!({"model": "lfm2-tiny", "training_file": "local://chat.jsonl",
                    "hyperparameters": {"n_epoch": 2}}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["error"]["param"], "hyperparameters.n_epoch");
    assert!(v["error"]["message"].as_str().unwrap().contains("n_epochs"));
    let many: serde_json::Map<String, serde_json::Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (s, v) = app
        .post(
            "/v1/fine_tuning/jobs",
            &json!({"model": "lfm2-tiny", "training_file": "local://chat.jsonl", "metadata": many}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("metadata")),
        "{v}"
    );
    let (s, v) = app
        .post(
            "/v1/fine_tuning/jobs",
            &json!({"model": "lfm2-tiny", "training_file": "local://chat.jsonl",
                    "method": {"type": "dpo"}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("method.type"))
    );
}
