//! `mlxtune launch`: data-parallel training over MLX's ring backend on localhost, compared
//! with one process taking the same global batches; resume; a rank killed mid-run.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fixture, mlxtune};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mlxtune_engine::train::checkpoint;
use mlxtune_engine::weights;

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A chat JSONL of uneven records and a config over the fixture `model` (global batch 4).
fn job(dir: &Path, model: &str, extra: serde_json::Value) -> PathBuf {
    let data = dir.join("train.jsonl");
    let pairs = [
        ("Say fox.", "The quick brown fox."),
        ("Say dog.", "The lazy dog."),
        ("Say box.", "Pack my box with five dozen jugs."),
        ("Say vow.", "Judge my vow."),
        ("Say cat.", "A cat sat on the mat today."),
        ("Say sun.", "The sun is up."),
    ];
    let lines: Vec<String> = pairs
        .iter()
        .map(|(u, a)| {
            serde_json::json!({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]})
                .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let mut cfg = serde_json::json!({
        "baseModel": fixture(model).to_str().unwrap(),
        "dataset": { "trainingData": data.to_str().unwrap(), "validationData": data.to_str().unwrap(), "format": "chat" },
        "parameters": { "learningRate": 3e-3, "batchSize": 4, "epochs": 3, "sequenceLength": 128, "loraRank": 4, "loraAlpha": 8 },
        "optimization": { "mixedPrecision": "fp32" },
        "eval": { "everySteps": 3 },
        "checkpoint": { "everySteps": 2, "keepLast": 10 }
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let path = dir.join(format!("{model}.json"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-5, "{what}, step {}: {x} vs {y}", i + 1);
    }
}

/// Every array of two safetensors files agrees to 1e-5.
fn assert_same_weights(a: &Path, b: &Path) {
    let (wa, wb) = (
        weights::load_file(a).unwrap(),
        weights::load_file(b).unwrap(),
    );
    assert_eq!(wa.len(), wb.len());
    for (name, x) in &wa {
        let d = x
            .subtract(&wb[name])
            .unwrap()
            .abs()
            .unwrap()
            .max(None)
            .unwrap();
        let d = d.item_cast::<f32>();
        assert!(
            d <= 1e-5,
            "{name}: {} and {} differ by {d}",
            a.display(),
            b.display()
        );
    }
}

fn last_trainable(out: &Path) -> PathBuf {
    checkpoint::load_latest(out)
        .unwrap()
        .unwrap()
        .dir
        .join("trainable.safetensors")
}

#[test]
fn two_ranks_over_the_ring_train_like_one_process_with_the_same_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("lfm2", serde_json::json!({}), "adapters.safetensors"),
        (
            "qwen3",
            serde_json::json!({"fineTuneType": "full"}),
            "model",
        ),
    ];
    for (model, extra, output) in cases {
        let cfg = job(dir.path(), model, extra);
        let one = dir.path().join(format!("{model}-one"));
        let two = dir.path().join(format!("{model}-two"));
        let (c, o1, o2) = (
            cfg.to_str().unwrap(),
            one.to_str().unwrap(),
            two.to_str().unwrap(),
        );
        ok(&mlxtune(&[
            "train", "--config", c, "--output", o1, "--json",
        ]));
        let o = mlxtune(&[
            "launch", "-n", "2", "--", "train", "--config", c, "--output", o2, "--json",
        ]);
        ok(&o);
        // Rank 0 alone reports: one `finished` line.
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(stdout.matches("\"finished\"").count(), 1, "{stdout}");
        assert_close(&losses(&one), &losses(&two), model);
        assert_eq!(losses(&two).len(), 6);
        assert_same_weights(&last_trainable(&one), &last_trainable(&two));
        assert!(two.join(output).exists(), "{model}: {output}");
    }
}

#[test]
fn a_resumed_two_rank_run_reproduces_the_uninterrupted_losses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path(), "llama", serde_json::json!({}));
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    let (c, w, p) = (
        cfg.to_str().unwrap(),
        whole.to_str().unwrap(),
        parts.to_str().unwrap(),
    );
    // A used directory, emptied by rank 0 alone under --overwrite.
    std::fs::create_dir_all(&whole).unwrap();
    std::fs::write(whole.join("stale.txt"), "an earlier run").unwrap();
    ok(&mlxtune(&[
        "launch",
        "-n",
        "2",
        "--",
        "train",
        "--config",
        c,
        "--output",
        w,
        "--overwrite",
    ]));
    assert!(!whole.join("stale.txt").exists());
    let o = mlxtune(&[
        "launch",
        "-n",
        "2",
        "--",
        "train",
        "--config",
        c,
        "--output",
        p,
        "--stop-after",
        "3",
        "--json",
    ]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"paused\""));
    assert_eq!(losses(&parts).len(), 3);
    ok(&mlxtune(&[
        "launch", "-n", "2", "--", "train", "--resume", p,
    ]));
    assert_close(&losses(&whole), &losses(&parts), "resumed");
    assert_same_weights(
        &whole.join("adapters.safetensors"),
        &parts.join("adapters.safetensors"),
    );
}

/// The pid of the child of `parent` started as rank `rank`.
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    let wanted = format!("MLX_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the parenthesised command name: the state, then the parent's pid.
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let is_rank = env.split(|b| *b == 0).any(|v| v == wanted.as_bytes());
        (ppid == parent && is_rank).then_some(pid)
    })
}

#[test]
fn killing_one_rank_fails_the_run_clearly_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let long = serde_json::json!({
        "parameters": { "learningRate": 1e-3, "batchSize": 4, "epochs": 2000, "sequenceLength": 128, "loraRank": 4 },
        "eval": { "everySteps": 1000 }
    });
    let cfg = job(dir.path(), "lfm2", long);
    let out = dir.path().join("out");
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_mlxtune"))
        .args([
            "launch",
            "-n",
            "2",
            "--",
            "train",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(["--output", out.to_str().unwrap(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.join("checkpoints/latest").exists() {
        assert!(Instant::now() < deadline, "no checkpoint in 120 s");
        if let Some(s) = launcher.try_wait().unwrap() {
            let mut err = String::new();
            let mut pipe = launcher.stderr.take().unwrap();
            std::io::Read::read_to_string(&mut pipe, &mut err).unwrap();
            panic!("the launch ended early ({s}): {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (r0, r1) = (
        rank_pid(launcher.id(), 0).unwrap(),
        rank_pid(launcher.id(), 1).unwrap(),
    );
    Command::new("kill")
        .args(["-KILL", &r1.to_string()])
        .status()
        .unwrap();
    let o = launcher.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error: rank 1 was killed (SIGKILL); the other ranks were stopped"),
        "{err}"
    );
    assert!(
        !Path::new(&format!("/proc/{r0}")).exists(),
        "rank 0 was left running"
    );
    // The last checkpoint is whole and resumable state.
    let r = checkpoint::load_latest(&out).unwrap().unwrap();
    assert!(
        r.state.step >= 2 && r.state.step.is_multiple_of(2),
        "{}",
        r.state.step
    );
    assert!(!r.trainable.is_empty());
}

#[test]
fn launch_refuses_bad_arguments_naming_the_flag_or_the_rank() {
    let o = mlxtune(&["launch", "-n", "2", "--backend", "gloo", "--", "info"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--backend `gloo`: expected ring, nccl or mpi")
    );
    let o = mlxtune(&["launch", "--", "info"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("give -n N"));
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts.json");
    std::fs::write(&hosts, "[[\"127.0.0.1:1\"], []]").unwrap();
    let o = mlxtune(&["launch", "--hosts", hosts.to_str().unwrap(), "--", "info"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("rank 1 has no address"));
    // A CPU build has no NCCL: rank 0 says so and the launch fails naming it.
    if mlxtune_engine::runtime::backend() == "cpu" {
        let cfg = job(dir.path(), "lfm2", serde_json::json!({}));
        let o = mlxtune(&[
            "launch",
            "-n",
            "2",
            "--backend",
            "nccl",
            "--",
            "train",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("no `nccl` distributed backend") && err.contains("error: rank"),
            "{err}"
        );
    }
}
