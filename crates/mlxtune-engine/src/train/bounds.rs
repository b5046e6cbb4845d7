//! Upper bounds on every number a configuration carries, and the shape of its sections.
//!
//! A value past a bound is never useful and can wedge a worker (an accumulation of 2³² − 1
//! micro-batches is a step that never ends), so it is refused up front with the field's
//! path. The bounds are generous: each is orders of magnitude past what a real run uses.

use serde_json::Value;

use super::config::{BatchSize, ConfigError, FineTuneConfig};

/// The most optimizer steps, and of most other step counts, a job may ask for.
pub const MAX_STEPS: u64 = 10_000_000;

fn over(param: &str, max: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        param: param.into(),
        message: format!("must be at most {max}"),
    }
}

/// Each whole-number field with its bound.
fn counts(c: &FineTuneConfig) -> [(Option<u64>, u64, &'static str); 15] {
    let p = &c.parameters;
    let fixed = match p.batch_size {
        BatchSize::Fixed(n) => Some(u64::from(n)),
        BatchSize::Auto(_) => None,
    };
    let wide = |v: Option<u32>| v.map(u64::from);
    [
        (fixed, 4096, "parameters.batchSize"),
        (
            Some(u64::from(p.sequence_length)),
            1 << 20,
            "parameters.sequenceLength",
        ),
        (
            wide(c.gradient_accumulation_steps),
            1024,
            "gradientAccumulationSteps",
        ),
        (c.max_steps, MAX_STEPS, "maxSteps"),
        (wide(c.eval.batch_size), 4096, "eval.batchSize"),
        (c.eval.every_steps, MAX_STEPS, "eval.everySteps"),
        (c.checkpoint.every_steps, MAX_STEPS, "checkpoint.everySteps"),
        (wide(c.checkpoint.keep_last), 1000, "checkpoint.keepLast"),
        (c.schedule.warmup_steps, MAX_STEPS, "schedule.warmupSteps"),
        (wide(c.schedule.num_cycles), 1000, "schedule.numCycles"),
        (
            wide(c.early_stopping.patience),
            1_000_000,
            "earlyStopping.patience",
        ),
        (wide(c.lora.num_layers), 4096, "lora.numLayers"),
        (wide(c.num_layers), 4096, "numLayers"),
        (wide(c.parameters.lora_rank), 1024, "parameters.loraRank"),
        (
            wide(c.quantization.group_size.map(|g| g.max(0) as u32)),
            4096,
            "quantization.groupSize",
        ),
    ]
}

/// Each real-number field with its bound (lower bounds are checked where defaults resolve).
fn reals(c: &FineTuneConfig) -> [(Option<f64>, f64, &'static str); 5] {
    let p = &c.parameters;
    [
        (Some(p.learning_rate), 1e4, "parameters.learningRate"),
        (Some(p.epochs), 10_000.0, "parameters.epochs"),
        (p.lora_alpha, 1e6, "parameters.loraAlpha"),
        (c.max_grad_norm, 1e6, "maxGradNorm"),
        (c.optimizer.eps, 1.0, "optimizer.eps"),
    ]
}

/// Refuses any number past its bound, naming the field.
pub fn check(c: &FineTuneConfig) -> Result<(), ConfigError> {
    for (value, max, param) in counts(c) {
        if value.is_some_and(|v| v > max) {
            return Err(over(param, max));
        }
    }
    for (value, max, param) in reals(c) {
        if value.is_some_and(|v| !v.is_finite() || v > max) {
            return Err(over(param, max));
        }
    }
    Ok(())
}

/// The sections that are objects; serde would take `[]` for one (a struct read from an
/// empty sequence) and silently use its defaults.
const SECTIONS: &[&str] = &[
    "dataset",
    "parameters",
    "optimization",
    "lora",
    "quantization",
    "optimizer",
    "schedule",
    "eval",
    "earlyStopping",
    "checkpoint",
    "distributed",
];

/// Refuses a document whose root or a section is not an object.
pub fn check_shape(doc: &Value) -> Result<(), ConfigError> {
    let Some(root) = doc.as_object() else {
        return Err(ConfigError {
            param: "(root)".into(),
            message: "must be an object".into(),
        });
    };
    for name in SECTIONS {
        match root.get(*name) {
            None | Some(Value::Object(_)) | Some(Value::Null) => {}
            Some(_) => {
                return Err(ConfigError {
                    param: (*name).into(),
                    message: "must be an object".into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::from_value;
    use serde_json::json;

    fn base() -> Value {
        json!({"baseModel": "m", "dataset": {"trainingData": "d.jsonl"},
               "parameters": {"learningRate": 1e-4, "batchSize": 4, "epochs": 1, "sequenceLength": 64}})
    }

    fn with(path: &str, v: Value) -> Result<(), ConfigError> {
        let mut doc = base();
        let mut at = &mut doc;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            at = at.as_object_mut().unwrap().entry(*p).or_insert(json!({}));
        }
        at[parts[parts.len() - 1]] = v;
        check(&from_value(doc)?)
    }

    #[test]
    fn numbers_past_their_bound_are_refused_by_name() {
        for (path, v) in [
            ("gradientAccumulationSteps", json!(4294967295u64)),
            ("parameters.learningRate", json!(1e308)),
            ("parameters.epochs", json!(1e9)),
            ("parameters.batchSize", json!(1_000_000)),
            ("parameters.sequenceLength", json!(4_000_000_000u64)),
            ("maxSteps", json!(u64::MAX)),
            ("checkpoint.keepLast", json!(100_000)),
            ("parameters.loraAlpha", json!(1e300)),
        ] {
            let e = with(path, v).expect_err(path);
            assert_eq!(e.param, path);
            assert!(e.message.starts_with("must be at most"), "{e}");
        }
        with("gradientAccumulationSteps", json!(16)).unwrap();
        with("parameters.learningRate", json!(0.5)).unwrap();
    }

    #[test]
    fn a_section_given_as_a_list_is_refused() {
        let mut doc = base();
        doc["optimization"] = json!([]);
        let e = check_shape(&doc).unwrap_err();
        assert_eq!(
            (e.param.as_str(), e.message.as_str()),
            ("optimization", "must be an object")
        );
        check_shape(&base()).unwrap();
    }
}
