//! The Files API: uploads streamed to disk under a size limit and checked line by line,
//! list / get / content / delete, and a job trained from an uploaded file's id.

use serde_json::{json, Value};

use crate::helpers::*;

/// `POST /v1/files` with a multipart form built by hand (the fields OpenAI's SDK sends).
pub async fn upload(app: &TestApp, name: &str, purpose: &str, content: &str) -> (u16, Value) {
    let boundary = "mlxtuneboundary7f3a";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    let r = app
        .req(reqwest::Method::POST, "/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    app.openapi.check_response("post", "/v1/files", status, &v);
    (status, v)
}

pub fn chat_lines() -> String {
    SENTENCES
        .iter()
        .map(|s| json!({"messages": [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": s}]}).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_is_listed_read_back_trained_on_and_deleted() {
    an_uploaded_file_is_listed_read_back_trained_on_and_deleted_with(spawn_app(vec![]).await).await;
}

/// On each backend (SQLite above, PostgreSQL in `postgres.rs`).
pub async fn an_uploaded_file_is_listed_read_back_trained_on_and_deleted_with(app: TestApp) {
    let lines = chat_lines();
    let (s, file) = upload(&app, "train.jsonl", "fine-tune", &lines).await;
    assert_eq!(s, 200, "{file}");
    let id = file["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("file-"));
    assert_eq!(file["filename"], "train.jsonl");
    assert_eq!(file["records"], 4);
    assert_eq!(file["bytes"], lines.len());
    let (_, list) = app.get("/v1/files").await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    let (s, one) = app.get(&format!("/v1/files/{id}")).await;
    assert_eq!((s, &one["purpose"]), (200, &json!("fine-tune")));
    let r = app
        .req(reqwest::Method::GET, &format!("/v1/files/{id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), lines);

    let body = json!({"model": "lfm2-tiny", "training_file": id, "validation_file": id,
                      "hyperparameters": {"n_epochs": 1, "batch_size": 2}});
    let (s, job) = app.post("/v1/fine_tuning/jobs", &body).await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["training_file"], id.as_str());
    let done = app
        .wait_status(job["id"].as_str().unwrap(), &["succeeded", "failed"])
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    results_file_of(&app, &done).await;

    let (s, gone) = app.delete(&format!("/v1/files/{id}")).await;
    assert_eq!((s, &gone["deleted"]), (200, &json!(true)));
    let (s, _) = app.get(&format!("/v1/files/{id}")).await;
    assert_eq!(s, 404);
    let (s, v) = app.post("/v1/fine_tuning/jobs", &body).await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("dataset.trainingData")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upload_is_refused_naming_the_line_and_the_size_limit_holds() {
    let app = spawn_app_tuned(vec![], |s| s.files.max_upload_bytes = 2000).await;
    let bad = format!(
        "{}\n{{\"messages\": 7}}\n",
        chat_lines().lines().next().unwrap()
    );
    let (s, v) = upload(&app, "bad.jsonl", "fine-tune", &bad).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["param"], "file");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("bad.jsonl:2:"),
        "{v}"
    );
    let (s, v) = upload(&app, "x.jsonl", "fine-tune", "not json\n").await;
    assert_eq!(s, 422);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("x.jsonl:1:"),
        "{v}"
    );
    let (s, v) = upload(&app, "t.jsonl", "assistants", &chat_lines()).await;
    assert_eq!((s, v["error"]["param"].as_str()), (422, Some("purpose")));
    let big = chat_lines().repeat(20);
    let (s, v) = upload(&app, "big.jsonl", "fine-tune", &big).await;
    assert_eq!(s, 413, "{v}");
    let (_, list) = app.get("/v1/files").await;
    assert_eq!(list["data"], json!([]), "nothing refused is kept");
    let leftovers = std::fs::read_dir(app.root.join("data/files"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "no partial upload is left on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_waiting_job_will_read_cannot_be_deleted_until_the_job_ends() {
    // No worker: the job stays queued.
    let app = spawn_app_tuned(vec![], |s| s.workers.count = 0).await;
    let (_, file) = upload(&app, "train.jsonl", "fine-tune", &chat_lines()).await;
    let id = file["id"].as_str().unwrap();
    let body = json!({"model": "lfm2-tiny", "training_file": id});
    let (s, job) = app.post("/v1/fine_tuning/jobs", &body).await;
    assert_eq!(s, 200, "{job}");
    let job_id = job["id"].as_str().unwrap();
    let (s, v) = app.delete(&format!("/v1/files/{id}")).await;
    assert_eq!(s, 409, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(job_id) && message.contains("(queued)"),
        "{v}"
    );
    let (s, _) = app.get(&format!("/v1/files/{id}")).await;
    assert_eq!(s, 200, "the refused delete kept the file");
    let (s, _) = app
        .post(&format!("/v1/fine_tuning/jobs/{job_id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, gone) = app.delete(&format!("/v1/files/{id}")).await;
    assert_eq!((s, &gone["deleted"]), (200, &json!(true)), "{gone}");
}

/// A succeeded job's `result_files`: its metrics CSV in the Files API (purpose
/// `fine-tune-results`, one row per step), kept while the job exists, gone with it.
async fn results_file_of(app: &TestApp, job: &Value) {
    let job_id = job["id"].as_str().unwrap();
    let rid = job["result_files"][0].as_str().unwrap().to_string();
    assert!(rid.starts_with("file-"), "{job}");
    let (s, file) = app.get(&format!("/v1/files/{rid}")).await;
    assert_eq!(
        (s, &file["purpose"]),
        (200, &json!("fine-tune-results")),
        "{file}"
    );
    let (_, list) = app.get("/v1/files").await;
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == rid.as_str()));
    let r = app
        .req(reqwest::Method::GET, &format!("/v1/files/{rid}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv");
    let csv = r.text().await.unwrap();
    let (_, metrics) = app
        .get(&format!("/v1/fine_tuning/jobs/{job_id}/metrics"))
        .await;
    let steps = metrics["data"].as_array().unwrap().len();
    assert!(csv.starts_with("step,train_loss,learning_rate,"), "{csv}");
    assert_eq!(csv.lines().count(), steps + 1, "{csv}");
    assert_eq!(file["records"], steps);
    let (s, v) = app.delete(&format!("/v1/files/{rid}")).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(job_id),
        "{v}"
    );
    let (s, _) = app.delete(&format!("/v1/fine_tuning/jobs/{job_id}")).await;
    assert_eq!(s, 200);
    let (s, _) = app.get(&format!("/v1/files/{rid}")).await;
    assert_eq!(s, 404, "the results file goes with its job");
}
