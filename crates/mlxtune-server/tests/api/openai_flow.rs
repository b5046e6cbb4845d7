//! The OpenAI Python SDK's whole fine-tuning flow, unchanged, against a real server:
//! `files.create` → `fine_tuning.jobs.create(model=…, training_file=…)` → `retrieve` until
//! succeeded → `list_events` → `checkpoints.list` → `cancel` of a second job; then the
//! adapters downloaded as an artifact load as `mlxtune eval --adapter` loads them.

use serde_json::Value;

use crate::helpers::*;

const FLOW: &str = r#"
import io, json, sys, tarfile, time, urllib.request
from openai import OpenAI
base, key, data, out = sys.argv[1:5]
client = OpenAI(base_url=base + "/v1", api_key=key)
f = client.files.create(file=open(data, "rb"), purpose="fine-tune")
job = client.fine_tuning.jobs.create(model="lfm2-tiny", training_file=f.id, validation_file=f.id,
    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}}})
r = {"file": [f.id, f.bytes, f.status], "created": [job.id, job.status, job.training_file]}
while job.status not in ("succeeded", "failed", "cancelled"):
    time.sleep(0.1)
    job = client.fine_tuning.jobs.retrieve(job.id)
r["finished"] = [job.status, job.fine_tuned_model, job.result_files, job.hyperparameters.n_epochs,
    job.artifacts]
results = client.files.retrieve(job.result_files[0])
r["results"] = [results.purpose, client.files.content(results.id).text]
events = client.fine_tuning.jobs.list_events(job.id, limit=100)
r["events"] = [[e.level, e.message] for e in events.data]
ckpts = client.fine_tuning.jobs.checkpoints.list(job.id)
r["checkpoints"] = [[c.id, c.fine_tuning_job_id, c.step_number, c.metrics.train_loss] for c in ckpts.data]
second = client.fine_tuning.jobs.create(model="lfm2-tiny", training_file=f.id,
    hyperparameters={"n_epochs": 1000, "batch_size": 1})
r["cancelled"] = [second.id, client.fine_tuning.jobs.cancel(second.id).id]
req = urllib.request.Request(base + "/v1/fine_tuning/jobs/" + job.id + "/artifacts/adapters.tar.gz",
    headers={"Authorization": "Bearer " + key})
blob = urllib.request.urlopen(req).read()
tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz").extractall(out, filter="data")
print(json.dumps(r))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdks_fine_tuning_flow_runs_end_to_end_and_the_adapters_download() {
    let site = python_site("openai", "MLXTUNE_OPENAI_SITE", "openai");
    let app = spawn_app(vec!["sk-flow".into()]).await;
    let data = app.root.join("upload.jsonl");
    std::fs::write(&data, crate::files::chat_lines()).unwrap();
    let out = app.root.join("downloaded");
    let (base, d, o) = (app.base.clone(), data.clone(), out.clone());
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", FLOW, &base, "sk-flow"])
            .args([&d, &o])
            .env("PYTHONPATH", &site)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(v["file"][0].as_str().unwrap().starts_with("file-"), "{v}");
    assert_eq!(v["file"][2], "processed");
    // The worker may claim it before the answer is written.
    assert!(
        ["queued", "running"].contains(&v["created"][1].as_str().unwrap()),
        "{v}"
    );
    assert_eq!(v["created"][2], v["file"][0]);
    let f = &v["finished"];
    assert_eq!(f[0], "succeeded", "{v}");
    assert!(f[1].as_str().unwrap().starts_with("ft:"), "{v}");
    // OpenAI's result_files: the metrics CSV as a file of the Files API.
    let job_id = v["created"][0].as_str().unwrap();
    let results_id = job_id.replacen("ftjob-", "file-", 1);
    assert_eq!(f[2], serde_json::json!([results_id]), "{v}");
    assert_eq!(v["results"][0], "fine-tune-results", "{v}");
    let csv = v["results"][1].as_str().unwrap();
    assert!(csv.starts_with("step,train_loss,"), "{csv}");
    assert!(csv.lines().count() > 2, "{csv}");
    assert!(
        f[4].as_array().unwrap().contains(&"adapters.tar.gz".into()),
        "{v}"
    );
    assert_eq!(f[3], 2.0);
    let events = v["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e[1] == "job validated and queued"),
        "{v}"
    );
    assert!(events
        .iter()
        .all(|e| ["info", "warn", "error"].contains(&e[0].as_str().unwrap())));
    let ckpts = v["checkpoints"].as_array().unwrap();
    assert!(!ckpts.is_empty(), "{v}");
    for c in ckpts {
        assert!(c[0].as_str().unwrap().starts_with("ftckpt_"));
        assert_eq!(c[1], job_id);
        assert!(c[3].is_number());
    }
    assert_eq!(v["cancelled"][0], v["cancelled"][1]);
    app.wait_status(v["cancelled"][0].as_str().unwrap(), &["cancelled"])
        .await;

    // The downloaded adapters are the job's own, and load over the base as `eval --adapter`
    // loads them.
    let output = app.root.join("data/jobs").join(job_id);
    for f in ["adapters.safetensors", "adapter_config.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(output.join(f)).unwrap(),
            "{f}"
        );
    }
    let adapter = mlxtune_engine::adapters::Adapter::load(&out).unwrap();
    let model = mlxtune_engine::Model::load(
        &app.root.join("models/lfm2-tiny"),
        &mlxtune_engine::LoadOptions::default(),
    )
    .unwrap();
    adapter.check(&model.spec).unwrap();
}
