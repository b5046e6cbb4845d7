//! Datasets over `files.async_validation_bytes` are checked in the background: the job is
//! stored as `validating_files`, then becomes `queued` (and trains) or `failed` with the
//! `file:line` error; smaller ones are still refused inside the request.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_dataset_is_validated_in_the_background_then_the_job_trains() {
    let app = spawn_app_tuned(vec![], |s| s.files.async_validation_bytes = 100).await;
    let mut body = product_config();
    body["parameters"]["epochs"] = json!(1);
    let (s, job) = app.post("/v1/fine_tuning/jobs", &body).await;
    assert_eq!(
        (s, &job["status"]),
        (200, &json!("validating_files")),
        "{job}"
    );
    let id = job["id"].as_str().unwrap();
    let (s, _) = app
        .get("/v1/fine_tuning/jobs?status=validating_files")
        .await;
    assert_eq!(s, 200, "validating_files is a status the list filters by");
    let done = app.wait_status(id, &["succeeded", "failed"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let said = app.messages(id).await;
    let at = |text: &str| said.iter().position(|m| m.contains(text));
    let background = at("validating them in the background").unwrap();
    let queued = at("files validated; job queued").expect("the pre-flight's end is an event");
    assert!(background < queued, "{said:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_large_dataset_fails_the_job_naming_file_and_line_and_a_small_one_is_a_422() {
    let mut body: Value = product_config();
    body["dataset"]["trainingData"] = json!("local://bad.jsonl");
    let app = spawn_app_tuned(vec![], |s| s.files.async_validation_bytes = 10).await;
    let (s, job) = app.post("/v1/fine_tuning/jobs", &body).await;
    assert_eq!(
        (s, &job["status"]),
        (200, &json!("validating_files")),
        "{job}"
    );
    let id = job["id"].as_str().unwrap();
    let failed = app
        .wait_status(id, &["failed", "queued", "succeeded"])
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("bad.jsonl:2"), "{failed}");
    assert_eq!(failed["error"]["param"], "dataset.trainingData", "{failed}");
    app.wait_message(id, |m| {
        m.starts_with("validation failed: ") && m.contains("bad.jsonl:2")
    })
    .await;

    // Under the threshold (the default, 64 MiB) the same body is refused at once.
    let small = spawn_app(vec![]).await;
    let (s, v) = small.post("/v1/fine_tuning/jobs", &body).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad.jsonl:2"),
        "{v}"
    );
    let (_, list) = small.get("/v1/fine_tuning/jobs").await;
    assert_eq!(
        list["data"],
        json!([]),
        "a refused submission stores no job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_flight_a_stopped_server_left_unfinished_runs_again_at_the_next_start() {
    // The first server validates the job without training it (no worker)...
    let first = spawn_app_tuned(vec![], |s| {
        s.files.async_validation_bytes = 10;
        s.workers.count = 0;
    })
    .await;
    let mut body = product_config();
    body["parameters"]["epochs"] = json!(1);
    let (_, job) = first.post("/v1/fine_tuning/jobs", &body).await;
    let id = job["id"].as_str().unwrap();
    first.wait_status(id, &["queued"]).await;
    // ...then the job is put back where a kill during its pre-flight leaves it.
    let db = first.root.join("data/mlxtune.sqlite3");
    let sql = "UPDATE jobs SET status = 'validating', spec = '{\"cap_sequence_length\": false}' WHERE id = ?";
    let script = format!(
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute({sql:?}, (sys.argv[2],)); c.commit()"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .arg(&db)
        .arg(id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, job) = first.get(&format!("/v1/fine_tuning/jobs/{id}")).await;
    assert_eq!(job["status"], "validating_files");

    let root = first.root.clone();
    let second = spawn_app_tuned(vec![], move |s| {
        s.storage.data_dir = root.join("data");
        s.paths.model_roots = vec![root.join("models")];
        s.paths.dataset_roots = vec![root.join("datasets")];
    })
    .await;
    let done = second.wait_status(id, &["succeeded", "failed"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}
