//! `batchSize: "auto"` and memory limits: auto picks the micro-batch only (the effective
//! batch stays 8, accumulation stays), the measured peak stays under the limit, and a limit
//! no row fits is warned about (issue 17, defect 4).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::train::*;
use mlxtune_engine::train::{train, Control, Event, Started, StepMetrics};
use serde_json::{json, Value};

/// 24 records of 150 to 250 tokens (the fixtures' tokenizers are near byte level).
fn write_long_data(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("long.jsonl");
    let lines: Vec<String> = (0..24)
        .map(|i| {
            let text = SENTENCES.iter().cycle().skip(i).take(4 + i % 3).cloned();
            json!({ "text": text.collect::<Vec<_>>().join(" ") }).to_string()
        })
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

struct Observed {
    started: Started,
    steps: Vec<StepMetrics>,
    warnings: Vec<String>,
}

fn observe(model: &str, data: &Path, out: &Path, extra: Value) -> Observed {
    let params = json!({"parameters": {"batchSize": "auto", "epochs": 1, "sequenceLength": 256}});
    let mut c = config(model, data, params);
    merge(&mut c, &extra);
    let (mut started, mut steps, mut warnings) = (None, Vec::new(), Vec::new());
    train(&spec(c), out, false, &mut |e| {
        match e {
            Event::Started(s) => started = Some(s.clone()),
            Event::Step(m) => steps.push(m.clone()),
            Event::Message { text, .. } => warnings.push(text.clone()),
            _ => {}
        }
        Control::Continue
    })
    .unwrap();
    Observed {
        started: started.unwrap(),
        steps,
        warnings,
    }
}

#[test]
fn auto_under_a_memory_limit_keeps_the_effective_batch_and_accumulation_and_stays_under_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_long_data(tmp.path());
    for model in ["llama", "qwen3", "lfm2"] {
        let accum = json!({"gradientAccumulationSteps": 2});
        let free = observe(model, &data, &tmp.path().join("free"), accum.clone());
        // No limit: 24 records are 3 batches of 8 an epoch, 2 steps of 2 batches.
        assert_eq!(free.started.batches_per_epoch, 3, "{model}");
        assert_eq!(
            (free.started.micro_batch_size, free.started.total_steps),
            (8, 2)
        );
        for limit in [12_000_000u64, 20_000_000, 40_000_000] {
            let mut extra = accum.clone();
            merge(&mut extra, &json!({"memoryLimitBytes": limit}));
            let out = tmp.path().join(format!("{model}-{limit}"));
            let o = observe(model, &data, &out, extra);
            let s = &o.started;
            let what = format!("{model} at {limit}: {:?}", o.warnings);
            assert!(s.micro_batch_size < 8, "{what}");
            assert_eq!(
                s.micro_batches_per_step,
                2 * 8 / s.micro_batch_size,
                "{what}"
            );
            assert_eq!((s.batches_per_epoch, s.total_steps), (3, 2), "{what}");
            for m in &o.steps {
                assert!(m.peak_memory_bytes <= limit, "{what}: step {m:?}");
            }
            assert_eq!(losses(&out).len(), 2);
        }
    }
}

#[test]
fn an_absurd_memory_limit_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let out = tmp.path().join("absurd");
    let o = observe(
        "llama",
        &data,
        &out,
        json!({"memoryLimitBytes": 1000, "maxSteps": 1}),
    );
    let w = o
        .warnings
        .iter()
        .find(|w| w.starts_with("memoryLimitBytes (1000 bytes) is below"))
        .unwrap_or_else(|| panic!("{:?}", o.warnings));
    assert!(w.contains("will exceed it"), "{w}");
    assert_eq!(o.started.micro_batch_size, 1);
}
