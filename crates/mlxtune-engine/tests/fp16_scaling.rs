//! fp16 dynamic loss scaling: an overflowing update is skipped and its micro-batches are
//! retried at the lower scale, so a 3-epoch run ends at epoch 3.0; every skip is a warning
//! naming its step and is counted in the step metrics, `metrics.jsonl` and the result
//! (issue 17, defect 3).

#![allow(clippy::unwrap_used)]

mod common;

use common::train::*;
use mlxtune_engine::train::{train, Control, Event, Level};
use serde_json::{json, Value};

#[test]
fn fp16_overflow_skips_are_counted_and_the_epochs_stay_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let out = tmp.path().join("fp16");
    // 6 records in batches of 3: 2 batches an epoch, 6 steps for 3 epochs. The initial
    // loss scale (32768) overflows this model's fp16 gradients, so the first step is
    // retried several times.
    let extra = json!({"parameters": {"epochs": 3}, "optimization": {"mixedPrecision": "fp16"}});
    let mut events = Vec::new();
    let r = train(
        &spec(config("llama", &data, extra)),
        &out,
        false,
        &mut |e| {
            events.push(e.clone());
            Control::Continue
        },
    )
    .unwrap();

    let overflows: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { level, text } if text.starts_with("fp16 overflow") => {
                assert_eq!(*level, Level::Warn, "{text}");
                Some(text)
            }
            _ => None,
        })
        .collect();
    assert!(!overflows.is_empty(), "no overflow happened: {events:?}");
    assert!(overflows[0].contains("at step 1 "), "{}", overflows[0]);
    assert_eq!(r.skipped_steps, overflows.len() as u64);
    assert_eq!((r.step, r.total_steps), (6, 6));

    let steps: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 6);
    for m in &steps {
        assert_eq!(m.epoch, m.step as f64 / 2.0, "step {}", m.step);
    }
    let last = steps.last().unwrap();
    assert_eq!((last.epoch, last.total_epochs), (3.0, 3.0));
    assert_eq!(last.skipped_steps, r.skipped_steps);

    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last_line: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last_line["skipped_steps"], json!(r.skipped_steps));
    assert_eq!(last_line["epoch"], json!(3.0));
}
