//! TensorBoard output of a run, read back by TensorBoard itself (its `EventAccumulator`,
//! from PyPI, installed by scripts/pytools.sh): every step's scalars with the values of
//! metrics.jsonl, validation scalars, and histograms of the adapters and their gradients at
//! checkpoints.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::train::*;
use serde_json::{json, Value};

fn tensorboard_site() -> PathBuf {
    std::env::var_os("MLXTUNE_TENSORBOARD_SITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.native/pytools/tensorboard-site")
        })
}

const READ: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0})
ea.Reload()
tags = ea.Tags()
print(json.dumps({
    "scalars": {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]},
    "histograms": {t: [[e.step, e.histogram_value.num, e.histogram_value.min,
                        e.histogram_value.max, sum(e.histogram_value.bucket)]
                       for e in ea.Histograms(t)] for t in tags["histograms"]},
}))
"#;

/// What TensorBoard reads from `dir`.
fn read_with_tensorboard(dir: &Path) -> Value {
    let site = tensorboard_site();
    assert!(
        site.join("tensorboard").is_dir(),
        "TensorBoard is not installed in {} (run scripts/pytools.sh)",
        site.display()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", READ])
        .arg(dir)
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tensorboard_reads_every_step_validation_and_checkpoint_histograms() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let extra = json!({
        "maxSteps": 6,
        "dataset": { "validationData": format!("local://{}", data.display()) },
        "eval": { "everySteps": 3 },
        "checkpoint": { "everySteps": 3 }
    });
    let s = spec(config("llama", &data, extra));
    let out = tmp.path().join("run");
    run(&s, &out);
    let tb = read_with_tensorboard(&out.join("tensorboard"));

    let loss = tb["scalars"]["train/loss"].as_array().unwrap();
    let expected = losses(&out);
    assert_eq!(loss.len(), expected.len());
    for (i, (point, want)) in loss.iter().zip(&expected).enumerate() {
        assert_eq!(point[0].as_u64(), Some(i as u64 + 1));
        let got = point[1].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "step {}: {got} vs {want}",
            i + 1
        );
    }
    for tag in [
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_second",
        "memory/peak_bytes",
    ] {
        assert_eq!(tb["scalars"][tag].as_array().unwrap().len(), 6, "{tag}");
    }
    let val: Vec<u64> = tb["scalars"]["validation/loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(val, vec![3, 6]);

    // Histograms of every adapter array and of its gradient, at each checkpoint.
    let adapters = mlxtune_engine::weights::load_file(&out.join("adapters.safetensors")).unwrap();
    let hist = tb["histograms"].as_object().unwrap();
    assert_eq!(hist.len(), 2 * adapters.len(), "{:?}", hist.keys());
    for (name, a) in &adapters {
        for tag in [format!("weights/{name}"), format!("gradients/{name}")] {
            let points = hist[&tag].as_array().unwrap();
            let steps: Vec<u64> = points.iter().map(|p| p[0].as_u64().unwrap()).collect();
            assert_eq!(steps, vec![3, 6], "{tag}");
            let (num, counted) = (
                points[1][1].as_f64().unwrap(),
                points[1][4].as_f64().unwrap(),
            );
            assert_eq!((num, counted), (a.size() as f64, a.size() as f64), "{tag}");
        }
    }
}
