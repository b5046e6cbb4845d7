//! The OpenAI Python SDK (from PyPI, installed by scripts/pytools.sh), unchanged, against a
//! real server with an API key: `models.list`, `chat.completions.create` (plain and
//! streamed) with a fine-tuned model, and `fine_tuning.jobs.create / retrieve / list /
//! cancel` with our config as the body.

use serde_json::{json, Value};

use crate::helpers::*;

const CLIENT: &str = r#"
import json, os, sys
from openai import OpenAI
base, key, ft = sys.argv[1:4]
client = OpenAI(base_url=base + "/v1", api_key=key)
out = {"models": [m.id for m in client.models.list()]}
ask = dict(model=ft, messages=[{"role": "user", "content": "Say it."}], max_tokens=8, temperature=0)
r = client.chat.completions.create(**ask)
out["chat"] = r.choices[0].message.content
out["finish_reason"] = r.choices[0].finish_reason
out["usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens]
pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **ask) if c.choices]
out["streamed"] = "".join(pieces)
config = json.loads(os.environ["MLXTUNE_JOB"])
job = client.fine_tuning.jobs.create(model=config["baseModel"], training_file=config["dataset"]["trainingData"], extra_body=config)
out["created"] = [job.id, job.status]
out["retrieved"] = client.fine_tuning.jobs.retrieve(job.id).id
out["listed"] = [j.id for j in client.fine_tuning.jobs.list(limit=5).data]
out["cancelled"] = client.fine_tuning.jobs.cancel(job.id).id
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_unchanged() {
    let site = python_site("openai", "MLXTUNE_OPENAI_SITE", "openai");
    let app = spawn_app(vec!["sk-test".into()]).await;
    let mut cfg = product_config();
    cfg["maxSteps"] = json!(3);
    let (_, job) = app.post("/v1/fine_tuning/jobs", &cfg).await;
    let job = app
        .wait_status(job["id"].as_str().unwrap(), &["succeeded"])
        .await;
    let ft = job["fine_tuned_model"].as_str().unwrap().to_string();
    // Asked the moment the job reads `succeeded`: its model is there by then.
    let (code, direct) = app
        .post(
            "/v1/chat/completions",
            &json!({"model": ft, "messages": [{"role": "user", "content": "Say it."}], "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(code, 200, "{direct}");

    let mut second = product_config();
    second["maxSteps"] = json!(100000);
    let base = app.base.clone();
    let ft_arg = ft.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", CLIENT, &base, "sk-test", &ft_arg])
            .env("PYTHONPATH", &site)
            .env("MLXTUNE_JOB", second.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["models"].as_array().unwrap().contains(&json!(ft)), "{v}");
    let want = direct["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(v["chat"], want);
    assert_eq!(v["streamed"], want);
    assert_eq!(v["finish_reason"], direct["choices"][0]["finish_reason"]);
    let u = v["usage"].as_array().unwrap();
    assert_eq!(
        u[2].as_i64(),
        Some(u[0].as_i64().unwrap() + u[1].as_i64().unwrap())
    );
    let id = v["created"][0].as_str().unwrap();
    assert_eq!(v["retrieved"], id);
    assert!(v["listed"].as_array().unwrap().contains(&json!(id)));
    assert_eq!(v["cancelled"], id);
    app.wait_status(id, &["cancelled"]).await;
}
