//! `mlxtune serve` as a process: killed with SIGKILL mid-training and restarted, it finishes
//! the job from its last checkpoint with no job or event lost.
#![allow(clippy::unwrap_used)]

mod common;

use common::service::{http, setup, start, wait_final};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[test]
fn a_server_killed_mid_training_finishes_the_job_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (mut server, port) = start(d);
    let cfg = json!({
        "baseModel": "llama-tiny",
        "dataset": { "trainingData": "t.jsonl", "format": "text" },
        "parameters": { "learningRate": 1e-3, "batchSize": 2, "epochs": 1, "sequenceLength": 64 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "fp32", "appleSiliconOptimized": false },
        "maxSteps": 300,
        "checkpoint": { "everySteps": 5 }
    });
    let job = http(port, "POST", "/v1/fine_tuning/jobs", Some(&cfg));
    let id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
        if j["progress"]["step"].as_i64().unwrap_or(0) >= 12 {
            assert_eq!(j["status"], "running");
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    let (mut server, port) = start(d);
    let deadline = Instant::now() + Duration::from_secs(180);
    let job = loop {
        let j = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
        if j["status"] == "succeeded" {
            break j;
        }
        assert!(Instant::now() < deadline, "not finished: {j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(job["progress"]["step"], 300);
    let list = http(port, "GET", "/v1/fine_tuning/jobs", None);
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "exactly the one job"
    );
    let metrics = http(
        port,
        "GET",
        &format!("/v1/fine_tuning/jobs/{id}/metrics"),
        None,
    );
    let steps: Vec<i64> = metrics["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=300).collect::<Vec<_>>(),
        "every step recorded once"
    );
    let events = http(
        port,
        "GET",
        &format!("/v1/fine_tuning/jobs/{id}/events?limit=1000"),
        None,
    );
    let texts: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("server stopped while this job ran")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("resumed from the last checkpoint")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("job validated and queued")),
        "the first events survive"
    );
    server.kill().unwrap();
    server.wait().unwrap();

    generate_and_eval_by_fine_tuned_id_equal_the_adapter(d, &job);
}

#[test]
fn a_distributed_job_trains_on_two_ranks_like_one_process_and_streams_one_jobs_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (mut server, port) = start(d);
    let mut cfg = json!({
        "baseModel": "llama-tiny",
        "dataset": { "trainingData": "t.jsonl", "format": "text" },
        "parameters": { "learningRate": 1e-3, "batchSize": 4, "epochs": 1, "sequenceLength": 64 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "fp32" },
        "maxSteps": 4, "seed": 3
    });
    let single = http(port, "POST", "/v1/fine_tuning/jobs", Some(&cfg));
    cfg["distributed"] = json!({ "processes": 2, "backend": "ring" });
    let bad = {
        let mut b = cfg.clone();
        b["distributed"]["processes"] = json!(1);
        http(port, "POST", "/v1/fine_tuning/jobs", Some(&b))
    };
    assert_eq!(bad["error"]["param"], "distributed.processes", "{bad}");
    let group = http(port, "POST", "/v1/fine_tuning/jobs", Some(&cfg));
    let (a, b) = (
        single["id"].as_str().unwrap(),
        group["id"].as_str().unwrap(),
    );
    for id in [a, b] {
        let j = wait_final(port, id);
        assert_eq!(j["status"], "succeeded", "{j}");
    }
    let losses = |id: &str| -> Vec<f64> {
        let m = http(
            port,
            "GET",
            &format!("/v1/fine_tuning/jobs/{id}/metrics"),
            None,
        );
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["loss"].as_f64().unwrap())
            .collect()
    };
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), 4);
    assert_eq!(lb.len(), 4, "one job's metrics, every step once");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{la:?} vs {lb:?}");
    }
    // The group really is launched: the CPU build has no NCCL, and says so through the job.
    let mut nccl = cfg.clone();
    nccl["distributed"]["backend"] = json!("nccl");
    let n = http(port, "POST", "/v1/fine_tuning/jobs", Some(&nccl));
    let j = wait_final(port, n["id"].as_str().unwrap());
    if mlxtune_engine::runtime::backend() == "cpu" {
        assert_eq!(j["status"], "failed", "{j}");
        let why = j["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(
            why.contains("distributed run") && why.contains("nccl"),
            "{why}"
        );
    }
    let models = http(port, "GET", "/v1/models", None);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.iter().any(|m| m.ends_with(b)), "{ids:?}");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `mlxtune generate` / `eval --model <fine-tuned id>` resolve through the service's
/// registry in `d`: the same tokens and loss as the base with the job's adapter.
fn generate_and_eval_by_fine_tuned_id_equal_the_adapter(d: &Path, job: &Value) {
    let ft = job["fine_tuned_model"].as_str().unwrap();
    let run = |args: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_mlxtune"))
            .args(args)
            .env("MLXTUNE_CONFIG_DIR", d.join("config"))
            .output()
            .unwrap();
        serde_json::from_slice(&common::succeeded(out).stdout).unwrap()
    };
    let base = d.join("models/llama-tiny");
    let base = base.to_str().unwrap();
    let adapter = job["output_dir"].as_str().unwrap();
    let gen = [
        "generate",
        "--prompt",
        "The quick",
        "--max-tokens",
        "6",
        "--temperature",
        "0",
        "--json",
    ];
    let by_id = run(&[&gen[..], &["--model", ft]].concat());
    let by_hand = run(&[&gen[..], &["--model", base, "--adapter", adapter]].concat());
    assert_eq!(by_id["token_ids"], by_hand["token_ids"]);
    let data = d.join("datasets/t.jsonl");
    let eval = ["eval", "--data", data.to_str().unwrap(), "--json"];
    let loss = |more: &[&str]| run(&[&eval[..], more].concat())["loss"].as_f64().unwrap();
    let (with_id, with_adapter, plain) = (
        loss(&["--model", ft]),
        loss(&["--model", base, "--adapter", adapter]),
        loss(&["--model", base]),
    );
    assert_eq!(with_id, with_adapter);
    assert!(
        with_id < plain,
        "the adapter was trained on this data: {with_id} vs {plain}"
    );
}
