//! Training on the tiny fixtures through real MLX: the loss falls for every fine-tune
//! type and architecture, adapters start at the base model and fuse exactly, a paused run
//! resumes to the same losses, masking and packing are exact, bad configs name the field.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mlxtune_engine::data::{tokenize_record, DataFormat, Example, TokenizeOptions};
use mlxtune_engine::eval::{self, cross_entropy};
use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::models::forward::{self, ForwardCtx, Params};
use mlxtune_engine::train::batch::make_batch;
use mlxtune_engine::train::config::{from_value, parse_config};
use mlxtune_engine::train::{self, lora, Control, Event, Outcome, TrainSpec};
use mlxtune_engine::{LoadOptions, Model, Tokenizer};
use serde_json::{json, Value};

const SENTENCES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "Sphinx of black quartz, judge my vow.",
    "The five boxing wizards jump quickly.",
    "Jackdaws love my big sphinx of quartz.",
];

fn write_text_data(dir: &Path) -> PathBuf {
    let p = dir.join("train.jsonl");
    let lines: Vec<String> = SENTENCES
        .iter()
        .map(|s| json!({ "text": s }).to_string())
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

/// The product document's config shape pointed at a fixture, plus `extra`.
fn config(model: &str, data: &Path, extra: Value) -> Value {
    let mut c = json!({
        "baseModel": fixture(model).to_str().unwrap(),
        "dataset": { "trainingData": format!("local://{}", data.display()), "format": "text" },
        "parameters": { "learningRate": 0.005, "batchSize": 3, "epochs": 12, "sequenceLength": 64, "loraRank": 8, "loraAlpha": 16 },
        "optimization": { "gradientCheckpointing": false, "mixedPrecision": "fp32", "appleSliliconOptimized": true },
        "seed": 3,
        "schedule": { "type": "constant" }
    });
    merge(&mut c, &extra);
    c
}

fn spec(c: Value) -> TrainSpec {
    TrainSpec::from_config(&from_value(c).unwrap()).unwrap()
}

fn run(spec: &TrainSpec, out: &Path) -> train::TrainResult {
    train::train(spec, out, false, &mut |_| Control::Continue).unwrap()
}

fn examples(model: &str) -> (Model, Vec<Example>) {
    let m = Model::load(
        &fixture(model),
        &LoadOptions {
            dtype: Some(Dtype::Float32),
            quantize: None,
        },
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&fixture(model), Some(&m.spec)).unwrap();
    let ex = SENTENCES
        .iter()
        .map(|s| {
            tokenize_record(
                &tok,
                DataFormat::Text,
                &json!({ "text": s }),
                &TokenizeOptions::default(),
            )
            .unwrap()
        })
        .collect();
    (m, ex)
}

/// One batch holding every example in its own (padded, unpacked) row.
fn unpacked_batch(ex: &[Example]) -> mlxtune_engine::train::batch::TrainBatch {
    let rows: Vec<Vec<usize>> = (0..ex.len()).map(|i| vec![i]).collect();
    make_batch(ex, &rows, false, 1)
}

/// The output layer's weight (the embedding table when tied).
fn output_layer_weight(m: &Model) -> &'static str {
    if m.spec.tie_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    }
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn loss_falls_for_every_fine_tune_type_and_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    for model in ARCHS {
        let (base, ex) = examples(model);
        let before = eval::evaluate(&base.spec, &base.params(), &ex, 8)
            .unwrap()
            .loss;
        for (kind, lr) in [
            ("lora", 0.005),
            ("dora", 0.005),
            ("qlora", 0.005),
            ("full", 0.002),
        ] {
            let out = tmp.path().join(format!("{model}-{kind}"));
            let extra = json!({ "fineTuneType": kind, "parameters": { "learningRate": lr }, "quantization": { "bits": 8, "groupSize": 32 } });
            let s = spec(config(model, &data, extra));
            let r = run(&s, &out);
            assert_eq!(r.outcome, Outcome::Completed);
            let after = if kind == "full" {
                let m = Model::load(&out.join("model"), &LoadOptions::default()).unwrap();
                eval::evaluate(&m.spec, &m.params(), &ex, 8).unwrap().loss
            } else {
                let quantize = (kind == "qlora").then_some(s.quantization);
                let m = Model::load(
                    &fixture(model),
                    &LoadOptions {
                        dtype: Some(Dtype::Float32),
                        quantize,
                    },
                )
                .unwrap();
                let (ad, scale) = lora::load_adapters(&out).unwrap();
                let p = Params {
                    over: Some(&ad),
                    lora_scale: scale,
                    ..Params::new(&m.weights)
                };
                eval::evaluate(&m.spec, &p, &ex, 8).unwrap().loss
            };
            assert!(
                after < 0.5 * before,
                "{model} {kind}: loss {before:.3} -> {after:.3}"
            );
            let l = losses(&out);
            assert!(
                l.last().unwrap() < &l[0],
                "{model} {kind}: step losses {l:?}"
            );
        }
    }
}

#[test]
fn adapters_start_at_exactly_the_base_models_loss() {
    for model in ARCHS {
        let (m, ex) = examples(model);
        let base = eval::evaluate(&m.spec, &m.params(), &ex, 8).unwrap();
        for kind in ["lora", "dora"] {
            let s = spec(config(
                model,
                Path::new("unused.jsonl"),
                json!({ "fineTuneType": kind }),
            ));
            let modules = lora::target_modules(&m.spec, &s.targets, None);
            let ad = lora::init_adapters(&m, &modules, &s).unwrap();
            let p = Params {
                over: Some(&ad),
                lora_scale: s.lora_scale(),
                ..Params::new(&m.weights)
            };
            let with = eval::evaluate(&m.spec, &p, &ex, 8).unwrap();
            assert_eq!(with.loss, base.loss, "{model} {kind}");
        }
    }
}

#[test]
fn a_fused_model_gives_the_same_logits_as_base_plus_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    for model in ["lfm2", "qwen3"] {
        for kind in ["lora", "dora"] {
            let out = tmp.path().join(format!("{model}-{kind}"));
            run(
                &spec(config(
                    model,
                    &data,
                    json!({ "fineTuneType": kind, "maxSteps": 4 }),
                )),
                &out,
            );
            let (ad, scale) = lora::load_adapters(&out).unwrap();
            let mut m = Model::load(
                &fixture(model),
                &LoadOptions {
                    dtype: Some(Dtype::Float32),
                    quantize: None,
                },
            )
            .unwrap();
            let ids = Array::from_slice(&[1i32, 40, 41, 42, 100, 7, 9, 11], &[1, 8]);
            let p = Params {
                over: Some(&ad),
                lora_scale: scale,
                ..Params::new(&m.weights)
            };
            let adapted = forward::forward(&m.spec, &p, &ids, ForwardCtx::default()).unwrap();
            let plain = m.forward(&ids, None).unwrap();
            assert!(
                max_abs_diff(&adapted, &plain) > 1e-3,
                "{model} {kind}: training changed nothing"
            );
            lora::fuse(&mut m, &ad, scale).unwrap();
            let fused = m.forward(&ids, None).unwrap();
            let d = max_abs_diff(&adapted, &fused);
            assert!(d < 1e-4, "{model} {kind}: fused differs by {d}");
        }
    }
}

#[test]
fn a_paused_and_resumed_run_gives_the_same_losses_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let extra = json!({
        "parameters": { "batchSize": 2, "epochs": 3 },
        "gradientAccumulationSteps": 2,
        "lora": { "dropout": 0.1 },
        "schedule": { "type": "cosine", "warmupSteps": 2 },
        "maxGradNorm": 1.0
    });
    let s = spec(config("lfm2", &data, extra));
    let straight = tmp.path().join("straight");
    let r = run(&s, &straight);
    assert_eq!(r.step, 6);
    let resumed = tmp.path().join("resumed");
    let r = train::train(&s, &resumed, false, &mut |e| match e {
        Event::Step(m) if m.step == 3 => Control::Pause,
        _ => Control::Continue,
    })
    .unwrap();
    assert_eq!((r.outcome, r.step), (Outcome::Paused, 3));
    assert_eq!(losses(&resumed).len(), 3);
    let r = train::train(&s, &resumed, true, &mut |_| Control::Continue).unwrap();
    assert_eq!((r.outcome, r.step), (Outcome::Completed, 6));
    assert_eq!(
        losses(&resumed),
        losses(&straight),
        "per-step losses must be identical"
    );
    let a = mlxtune_engine::weights::load_file(&straight.join("adapters.safetensors")).unwrap();
    let b = mlxtune_engine::weights::load_file(&resumed.join("adapters.safetensors")).unwrap();
    for (k, v) in &a {
        assert_eq!(max_abs_diff(v, &b[k]), 0.0, "{k}");
    }
}

#[test]
fn only_assistant_turns_count_under_masking() {
    let tok = Tokenizer::from_dir(&fixture("lfm2"), None).unwrap();
    let rec = json!({ "messages": [
        { "role": "system", "content": "Be brief." },
        { "role": "user", "content": "Say fox." },
        { "role": "assistant", "content": "The fox." },
        { "role": "user", "content": "Say dog." },
        { "role": "assistant", "content": "Skipped dog.", "weight": 0 },
        { "role": "user", "content": "Again." },
        { "role": "assistant", "content": "Lazy dog." }
    ]});
    let ex = tokenize_record(&tok, DataFormat::Chat, &rec, &TokenizeOptions::default()).unwrap();
    let kept: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.mask)
        .filter(|(_, m)| **m)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        tok.decode(&kept, false).unwrap(),
        "The fox.<|im_end|>\nLazy dog.<|im_end|>\n"
    );
    let all = tokenize_record(
        &tok,
        DataFormat::Chat,
        &rec,
        &TokenizeOptions {
            train_on_inputs: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(all.loss_tokens(), all.ids.len() - 1);
    let comp = tokenize_record(
        &tok,
        DataFormat::Completion,
        &json!({ "prompt": "Q: fox?", "completion": " A: yes" }),
        &TokenizeOptions::default(),
    )
    .unwrap();
    let kept: Vec<u32> = comp
        .ids
        .iter()
        .zip(&comp.mask)
        .filter(|(_, m)| **m)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(tok.decode(&kept, false).unwrap(), " A: yes<|im_end|>");
}

#[test]
fn packed_and_unpacked_batches_give_the_same_loss() {
    for model in ARCHS {
        let (m, ex) = examples(model);
        let sum = |rows: Vec<Vec<usize>>, packed: bool| -> (f64, u64) {
            let b = make_batch(&ex, &rows, packed, 1);
            let logits = forward::forward(
                &m.spec,
                &m.params(),
                &b.inputs,
                ForwardCtx {
                    cache: None,
                    segments: b.segments.as_ref(),
                    checkpoint: false,
                },
            )
            .unwrap();
            let l = cross_entropy(&logits, &b.targets)
                .unwrap()
                .multiply(&b.mask)
                .unwrap()
                .sum(None)
                .unwrap();
            l.eval().unwrap();
            (l.item_cast::<f32>() as f64, b.loss_tokens)
        };
        let (unpacked, n1) = sum((0..ex.len()).map(|i| vec![i]).collect(), false);
        let (packed, n2) = sum(vec![vec![0, 1, 2], vec![3, 4, 5]], true);
        assert_eq!(n1, n2);
        assert!(
            (unpacked - packed).abs() < 1e-4 * unpacked,
            "{model}: {unpacked} vs {packed}"
        );
    }
}

#[test]
fn bad_configs_name_the_field() {
    let good = config("llama", Path::new("d.jsonl"), json!({}));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "parameters": { "learningRate": 0 } }),
            "parameters.learningRate must be > 0",
        ),
        (
            json!({ "parameters": { "learningRate": "fast" } }),
            "parameters.learningRate",
        ),
        (
            json!({ "parameters": { "batchSize": 0 } }),
            "parameters.batchSize",
        ),
        (
            json!({ "parameters": { "batchSize": "huge" } }),
            "parameters.batchSize",
        ),
        (
            json!({ "parameters": { "epochs": -1 } }),
            "parameters.epochs must be > 0",
        ),
        (
            json!({ "parameters": { "sequenceLength": 1 } }),
            "parameters.sequenceLength",
        ),
        (
            json!({ "parameters": { "loraRank": 0 } }),
            "parameters.loraRank",
        ),
        (json!({ "dataset": { "format": "xml" } }), "dataset.format"),
        (
            json!({ "dataset": { "format": "custom" } }),
            "dataset.template",
        ),
        (
            json!({ "optimization": { "mixedPrecision": "fp8" } }),
            "optimization.mixedPrecision",
        ),
        (json!({ "fineTuneType": "prefix" }), "fineTuneType"),
        (json!({ "optimizer": { "name": "lamb" } }), "optimizer.name"),
        (json!({ "schedule": { "type": "step" } }), "schedule.type"),
        (
            json!({ "lora": { "targetModules": [3] } }),
            "lora.targetModules[0]",
        ),
        (json!({ "lora": { "dropout": 2 } }), "lora.dropout"),
        (
            json!({ "quantization": { "bits": 3 } }),
            "quantization.bits",
        ),
        (
            json!({ "earlyStopping": { "patience": 2 } }),
            "earlyStopping.patience",
        ),
    ];
    for (patch, want) in cases {
        let mut c = good.clone();
        merge(&mut c, &patch);
        let e = from_value(c)
            .and_then(|c| TrainSpec::from_config(&c))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "{patch}: got `{e}`, want `{want}`");
    }
    let mut c = good.clone();
    c["parameters"]
        .as_object_mut()
        .unwrap()
        .remove("learningRate");
    let e = from_value(c).unwrap_err();
    assert_eq!(e.param, "parameters.learningRate");
    // Model-dependent checks.
    let s = spec(config(
        "llama",
        Path::new("d.jsonl"),
        json!({ "parameters": { "sequenceLength": 100000 } }),
    ));
    let m = Model::load(&fixture("llama"), &LoadOptions::default()).unwrap();
    assert_eq!(
        s.check_against_model(&m.spec).unwrap_err().param,
        "parameters.sequenceLength"
    );
    let s = spec(config(
        "llama",
        Path::new("d.jsonl"),
        json!({ "lora": { "targetModules": ["q_proj", "w9"] } }),
    ));
    assert_eq!(
        s.check_against_model(&m.spec).unwrap_err().param,
        "lora.targetModules[1]"
    );
}

#[test]
fn toml_configs_and_the_product_documents_spelling_are_accepted() {
    let toml = r#"
baseModel = "lfm2-1.2b"
[dataset]
trainingData = "s3://bucket/training.jsonl"
format = "chat"
[parameters]
learningRate = 1e-4
batchSize = "auto"
epochs = 3
sequenceLength = 2048
[optimization]
gradientCheckpointing = true
mixedPrecision = "bf16"
appleSliliconOptimized = true
"#;
    let c = parse_config(toml, true).unwrap();
    let s = TrainSpec::from_config(&c).unwrap();
    assert_eq!(s.batch_size, None);
    assert_eq!(s.precision, "bf16");
    let e = parse_config("baseModel = 3", true).unwrap_err();
    assert_eq!(e.param, "baseModel");
}

#[test]
fn a_bad_record_fails_the_run_with_its_line_number() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"ok\"}\n{\"text\": \"fine\"}\n{\"txt\": \"oops\"}\n",
    )
    .unwrap();
    let e = train::train(
        &spec(config("llama", &data, json!({}))),
        &tmp.path().join("o"),
        false,
        &mut |_| Control::Continue,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad.jsonl:3") && e.contains("missing `text`"),
        "{e}"
    );
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let s = spec(config(
        "llama",
        &data,
        json!({ "fineTuneType": "full", "optimizer": { "name": "sgd" }, "parameters": { "learningRate": 1e30 }, "checkpoint": { "everySteps": 1 } }),
    ));
    let out = tmp.path().join("o");
    let e = train::train(&s, &out, false, &mut |_| Control::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stopping") && e.contains("last good checkpoint"),
        "{e}"
    );
    let (state, ..) = train::checkpoint::load_latest(&out).unwrap().unwrap();
    assert!(state.step >= 1 && state.last_loss.unwrap().is_finite());
}

#[test]
fn checkpoints_keep_the_last_n_and_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let s = spec(config(
        "qwen2",
        &data,
        json!({
            "dataset": { "validationData": data.to_str().unwrap() },
            "maxSteps": 8,
            "checkpoint": { "everySteps": 1, "keepLast": 2 },
            "eval": { "everySteps": 2 },
            "earlyStopping": { "patience": 50 }
        }),
    ));
    let out = tmp.path().join("o");
    let r = run(&s, &out);
    let mut names: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    let best = std::fs::read_to_string(out.join("checkpoints/best")).unwrap();
    assert!(names.contains(&best), "{names:?} {best}");
    assert!(
        names.contains(&"step-00000008".to_string())
            && names.contains(&"step-00000007".to_string())
    );
    assert!(names.len() <= 3, "{names:?}");
    assert!(r.best_val_loss.is_some());
    // PEFT layout: A is [r, in], B is [out, r].
    let peft =
        mlxtune_engine::weights::load_file(&out.join("peft/adapter_model.safetensors")).unwrap();
    let a = &peft["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    assert_eq!(a.shape(), &[8, 64]);
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("peft/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 8);
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    use mlxtune_engine::mlx_rs::transforms::value_and_grad_with_argnums;
    for model in ["lfm2", "llama"] {
        let (m, ex) = examples(model);
        let s = spec(config(model, Path::new("unused.jsonl"), json!({})));
        let modules = lora::target_modules(&m.spec, &s.targets, None);
        let mut ad = lora::init_adapters(&m, &modules, &s).unwrap();
        // Non-zero B so that every adapter receives a gradient.
        for (k, v) in ad.iter_mut() {
            if k.ends_with("lora_b") {
                *v = mlxtune_engine::mlx_rs::random::normal::<f32>(v.shape(), None, 0.1f32, None)
                    .unwrap();
            }
        }
        let mut names: Vec<String> = ad.keys().cloned().collect();
        names.sort();
        let b = unpacked_batch(&ex);
        let grads = |checkpoint: bool| -> (f32, Vec<Array>) {
            let (names2, base, spec2) = (names.clone(), m.weights.clone(), m.spec.clone());
            let (inputs, targets, mask) = (b.inputs.clone(), b.targets.clone(), b.mask.clone());
            let f = move |args: &[Array]| -> Result<Vec<Array>, mlxtune_engine::mlx_rs::error::Exception> {
                let over: mlxtune_engine::weights::Weights = names2.iter().cloned().zip(args.iter().cloned()).collect();
                let p = Params { over: Some(&over), lora_scale: 2.0, ..Params::new(&base) };
                let logits = forward::forward(&spec2, &p, &inputs, ForwardCtx { cache: None, segments: None, checkpoint }).unwrap();
                Ok(vec![cross_entropy(&logits, &targets).unwrap().multiply(&mask)?.sum(None)?])
            };
            let argnums: Vec<i32> = (0..names.len() as i32).collect();
            let args: Vec<Array> = names.iter().map(|n| ad[n].clone()).collect();
            let (v, g) = value_and_grad_with_argnums(f, argnums.as_slice())(&args).unwrap();
            v[0].eval().unwrap();
            (v[0].item_cast::<f32>(), g)
        };
        let (l1, g1) = grads(false);
        let (l2, g2) = grads(true);
        assert_eq!(l1, l2, "{model}: loss");
        for (i, (a, c)) in g1.iter().zip(&g2).enumerate() {
            let d = max_abs_diff(a, c);
            assert!(
                d <= 1e-5 * max_abs(a).max(1.0),
                "{model} {}: gradient differs by {d}",
                names[i]
            );
            assert!(max_abs(a) > 0.0, "{model} {}: zero gradient", names[i]);
        }
    }
}

#[test]
fn a_batch_that_does_not_fit_runs_as_smaller_micro_batches_with_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let base = json!({ "parameters": { "batchSize": 4, "epochs": 3 } });
    let whole = spec(config("qwen3", &data, base.clone()));
    let mut limited = base.clone();
    // Weights fit, one row of activations fits, four rows do not.
    merge(&mut limited, &json!({ "memoryLimitBytes": 2_700_000 }));
    let limited = spec(config("qwen3", &data, limited));
    let a = tmp.path().join("whole");
    let b = tmp.path().join("limited");
    let mut micro = 0;
    train::train(&whole, &a, false, &mut |_| Control::Continue).unwrap();
    train::train(&limited, &b, false, &mut |e| {
        if let Event::Started {
            micro_batch_size, ..
        } = e
        {
            micro = *micro_batch_size;
        }
        Control::Continue
    })
    .unwrap();
    assert!(
        micro < 4,
        "the memory limit must force smaller micro-batches, got {micro}"
    );
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "{la:?} vs {lb:?}");
    }
}

#[test]
fn tokenized_data_is_cached_by_content_and_rebuilt_when_the_file_changes() {
    use mlxtune_engine::data::load_examples_cached;
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let cache = tmp.path().join("cache");
    let tok = Tokenizer::from_dir(&fixture("llama"), None).unwrap();
    let opts = TokenizeOptions::default();
    let (a, sa) = load_examples_cached(&data, &tok, None, &opts, Some(&cache)).unwrap();
    assert!(!sa.from_cache);
    let (b, sb) = load_examples_cached(&data, &tok, None, &opts, Some(&cache)).unwrap();
    assert!(sb.from_cache);
    assert_eq!(a, b);
    assert_eq!(
        (sa.records, sa.tokens, sa.loss_tokens),
        (sb.records, sb.tokens, sb.loss_tokens)
    );
    // Other options or another tokenizer are other keys.
    let (_, s) = load_examples_cached(
        &data,
        &tok,
        None,
        &TokenizeOptions {
            max_len: Some(5),
            ..opts.clone()
        },
        Some(&cache),
    )
    .unwrap();
    assert!(!s.from_cache && s.truncated > 0);
    let other = Tokenizer::from_dir(&fixture("qwen2"), None).unwrap();
    assert!(
        !load_examples_cached(&data, &other, None, &opts, Some(&cache))
            .unwrap()
            .1
            .from_cache
    );
    // A changed file misses the cache, and a bad line is still reported.
    std::fs::write(&data, "{\"text\": \"new\"}\n{\"text\": 5}\n").unwrap();
    let e = load_examples_cached(&data, &tok, None, &opts, Some(&cache))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.jsonl:2"), "{e}");
}

#[test]
fn the_chunked_checkpointed_loss_equals_the_full_loss_with_the_same_gradients() {
    use mlxtune_engine::mlx_rs::transforms::value_and_grad_with_argnums;
    use mlxtune_engine::train::step::chunked_loss_sum;
    for model in ["lfm2", "llama"] {
        let (m, ex) = examples(model);
        let b = unpacked_batch(&ex);
        // Full fine-tuning of the output layer and last norm, so the head gets gradients.
        let head = output_layer_weight(&m);
        let norm = format!("{}.weight", m.spec.names.final_norm);
        let names = vec![head.to_string(), norm.clone()];
        let run = |chunked: bool| -> (f32, Vec<Array>) {
            let (names2, base, spec2) = (names.clone(), m.weights.clone(), m.spec.clone());
            let (inputs, targets, mask) = (b.inputs.clone(), b.targets.clone(), b.mask.clone());
            let f = move |args: &[Array]| -> Result<Vec<Array>, mlxtune_engine::mlx_rs::error::Exception> {
                let over: mlxtune_engine::weights::Weights = names2.iter().cloned().zip(args.iter().cloned()).collect();
                let p = Params { over: Some(&over), ..Params::new(&base) };
                let ctx = ForwardCtx { cache: None, segments: None, checkpoint: false };
                let loss = if chunked {
                    let h = forward::forward_hidden(&spec2, &p, &inputs, ctx).unwrap();
                    chunked_loss_sum(&spec2, &p, &h, &targets, &mask, 7).unwrap()
                } else {
                    let logits = forward::forward(&spec2, &p, &inputs, ctx).unwrap();
                    cross_entropy(&logits, &targets).unwrap().multiply(&mask)?.sum(None)?
                };
                Ok(vec![loss])
            };
            let args: Vec<Array> = names.iter().map(|n| m.weights[n].clone()).collect();
            let (v, g) = value_and_grad_with_argnums(f, &[0, 1][..])(&args).unwrap();
            v[0].eval().unwrap();
            (v[0].item_cast::<f32>(), g)
        };
        let (l1, g1) = run(false);
        let (l2, g2) = run(true);
        assert!((l1 - l2).abs() <= 1e-4 * l1.abs(), "{model}: {l1} vs {l2}");
        for (i, (a, c)) in g1.iter().zip(&g2).enumerate() {
            let d = max_abs_diff(a, c);
            assert!(
                d <= 1e-4 * max_abs(a).max(1e-3),
                "{model} {}: gradient differs by {d}",
                names[i]
            );
        }
    }
}

#[test]
fn a_compiled_training_step_gives_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    for (model, kind) in [("lfm2", "lora"), ("qwen3", "full")] {
        let eager = spec(config(
            model,
            &data,
            json!({ "fineTuneType": kind, "maxSteps": 5 }),
        ));
        let compiled = spec(config(
            model,
            &data,
            json!({ "fineTuneType": kind, "maxSteps": 5, "optimization": { "compile": true } }),
        ));
        let (a, b) = (
            tmp.path().join(format!("{model}-eager")),
            tmp.path().join(format!("{model}-compiled")),
        );
        run(&eager, &a);
        run(&compiled, &b);
        let (la, lb) = (losses(&a), losses(&b));
        for (x, y) in la.iter().zip(&lb) {
            assert!(
                (x - y).abs() < 1e-4 * x.abs().max(1.0),
                "{model} {kind}: {la:?} vs {lb:?}"
            );
        }
    }
    let mut c = config(
        "llama",
        &data,
        json!({ "optimization": { "compile": true }, "lora": { "dropout": 0.1 } }),
    );
    c["seed"] = json!(1);
    assert_eq!(
        from_value(c)
            .and_then(|c| TrainSpec::from_config(&c))
            .unwrap_err()
            .param,
        "optimization.compile"
    );
}

#[test]
fn the_fused_cross_entropy_matches_the_reference_in_value_and_gradient() {
    use mlxtune_engine::mlx_rs::transforms::value_and_grad;
    // On the CPU MLX computes the fused op through its own fallback; on CUDA through the
    // kernel the trainer uses there. Both must agree with the upcast reference.
    let logits = mlxtune_engine::mlx_rs::random::normal::<f32>(&[2, 5, 97], None, None, None)
        .unwrap()
        .multiply(Array::from_f32(4.0))
        .unwrap();
    let targets = Array::from_slice(&[3i32, 96, 0, 50, 7, 1, 2, 90, 45, 45], &[2, 5]);
    for dtype in [Dtype::Float32, Dtype::Bfloat16] {
        let x = logits.as_dtype(dtype).unwrap();
        let t = targets.clone();
        let f = |fused: bool| {
            let t = t.clone();
            let mut vg = value_and_grad(move |a: &[Array]| -> Result<Vec<Array>, _> {
                let ce = if fused {
                    eval::cross_entropy_fused(&a[0], &t)
                } else {
                    eval::cross_entropy_reference(&a[0], &t)
                }
                .map_err(|e| mlxtune_engine::mlx_rs::error::Exception::custom(e.to_string()))?;
                Ok(vec![ce.multiply(Array::from_f32(0.5))?.sum(None)?])
            });
            let (v, g) = vg(std::slice::from_ref(&x)).unwrap();
            (
                v[0].item_cast::<f32>(),
                g[0].as_dtype(Dtype::Float32)
                    .unwrap()
                    .as_slice::<f32>()
                    .to_vec(),
            )
        };
        let ((vf, gf), (vr, gr)) = (f(true), f(false));
        let tol = if dtype == Dtype::Float32 { 1e-4 } else { 2e-2 };
        assert!(
            (vf - vr).abs() <= tol * vr.abs().max(1.0),
            "{dtype:?}: loss {vf} vs {vr}"
        );
        let worst = gf
            .iter()
            .zip(&gr)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= tol, "{dtype:?}: gradient differs by {worst}");
        assert!(
            gr.iter().any(|g| g.abs() > 1e-3),
            "the gradient is not trivial"
        );
    }
}

#[test]
fn one_adamw_step_matches_the_formula() {
    use mlxtune_engine::train::optim::Optimizer;
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        "llama",
        &write_text_data(dir.path()),
        json!({ "optimizer": { "name": "adamw", "weightDecay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8 } }),
    );
    let mut opt = Optimizer::new(&spec(c));
    let p0 = [0.5f32, -1.0, 2.0, 0.0];
    let grads_seq = [[0.1f32, -0.2, 0.3, 0.0], [0.05, 0.4, -0.1, 1.0]];
    let mut params: mlxtune_engine::weights::Weights =
        [("w".to_string(), Array::from_slice(&p0, &[2, 2]))].into();
    let (mut p, mut m, mut v) = (p0.map(f64::from), [0.0f64; 4], [0.0f64; 4]);
    for (t, g) in grads_seq.iter().enumerate() {
        let lr = 0.01f64;
        let grads: mlxtune_engine::weights::Weights =
            [("w".to_string(), Array::from_slice(g, &[2, 2]))].into();
        opt.step(&mut params, &grads, lr as f32).unwrap();
        let t = (t + 1) as i32;
        for i in 0..4 {
            let gi = f64::from(g[i]);
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.99 * v[i] + 0.01 * gi * gi;
            let update =
                (m[i] / (1.0 - 0.9f64.powi(t))) / ((v[i] / (1.0 - 0.99f64.powi(t))).sqrt() + 1e-8);
            p[i] = p[i] * (1.0 - lr * 0.1) - lr * update;
        }
        let got = params["w"].as_slice::<f32>().to_vec();
        for i in 0..4 {
            assert!(
                (f64::from(got[i]) - p[i]).abs() < 1e-6,
                "step {t}, element {i}: {} vs {}",
                got[i],
                p[i]
            );
        }
    }
}

#[test]
fn the_training_step_with_checkpointing_and_chunked_loss_gives_the_same_loss_and_gradients() {
    use mlxtune_engine::train::step::{loss_and_grad, StepOptions};
    use std::cell::Cell;
    use std::rc::Rc;
    for model in ["lfm2", "qwen3"] {
        let (m, ex) = examples(model);
        let b = unpacked_batch(&ex);
        // The output layer (through the chunked loss) and a projection of the first
        // layer (through a checkpointed block) get gradients.
        let names = vec![
            output_layer_weight(&m).to_string(),
            format!(
                "model.layers.0.{}.{}.weight",
                m.spec.names.mlp, m.spec.names.down
            ),
        ];
        let mut base = m.weights.clone();
        for n in &names {
            base.remove(n);
        }
        let argnums: Vec<i32> = (0..names.len() as i32).collect();
        let run = |ck: bool| -> (f32, Vec<Array>) {
            let opts = StepOptions {
                lora_scale: 1.0,
                dropout: 0.0,
                compute: Dtype::Float32,
                checkpoint: ck,
                chunked_loss: ck,
            };
            let mut f = loss_and_grad(
                &m.spec,
                base.clone(),
                names.clone(),
                opts,
                Rc::new(Cell::new(0)),
                &argnums,
            );
            let mut args: Vec<Array> = names.iter().map(|n| m.weights[n].clone()).collect();
            args.extend([
                b.inputs.clone(),
                b.targets.clone(),
                b.mask.clone(),
                Array::from_f32(0.5),
            ]);
            let (v, g) = f(&args).unwrap();
            v[0].eval().unwrap();
            (v[0].item_cast::<f32>(), g)
        };
        let ((l1, g1), (l2, g2)) = (run(false), run(true));
        assert!(
            l1 > 0.0 && (l1 - l2).abs() <= 1e-4 * l1,
            "{model}: {l1} vs {l2}"
        );
        for (i, (a, c)) in g1.iter().zip(&g2).enumerate() {
            let d = max_abs_diff(a, c);
            assert!(
                d <= 1e-4 * max_abs(a).max(1e-3),
                "{model} {}: gradient differs by {d}",
                names[i]
            );
        }
    }
}
