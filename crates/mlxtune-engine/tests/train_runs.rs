//! Training runs end to end on the tiny fixtures: the loss falls for every fine-tune type and
//! architecture, adapters start at the base model and fuse exactly, a paused run resumes to the
//! same losses, failures keep the last good checkpoint, checkpoints are pruned, batches too
//! large run as micro-batches, and the trainer's step is the benchmark's step.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::train::*;
use common::*;
use mlxtune_engine::eval::{self};
use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::models::forward::{self, ForwardCtx, Params};
use mlxtune_engine::train::{self, lora, Control, Event, Outcome};
use mlxtune_engine::{LoadOptions, Model};
use serde_json::{json, Value};
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
            let mut extra = json!({ "fineTuneType": kind, "parameters": { "learningRate": lr } });
            if kind == "qlora" {
                extra["quantization"] = json!({ "bits": 8, "groupSize": 32 });
            }
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
fn checkpointing_every_layer_some_or_none_gives_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let ck = |layers: Option<u32>, mlps: Option<u32>| {
        json!({ "gradientCheckpointing": true, "gradientCheckpointingLayers": layers,
                "gradientCheckpointingMlps": mlps })
    };
    // LoRA, then full fine-tuning (whose MLP norms are trained through the recomputation).
    for kind in ["lora", "full"] {
        let mut runs = Vec::new();
        for (name, opt) in [
            ("none", json!({ "gradientCheckpointing": false })),
            ("all", ck(None, None)),
            ("first", ck(Some(1), None)),
            ("mlps", ck(None, Some(2))),
            ("first-and-mlps", ck(Some(1), Some(2))),
        ] {
            let extra = json!({ "fineTuneType": kind, "optimization": opt,
                                "parameters": { "batchSize": 2, "epochs": 1 } });
            let out = tmp.path().join(format!("{kind}-{name}"));
            run(&spec(config("lfm2", &data, extra)), &out);
            runs.push(losses(&out));
        }
        assert!(runs[0].len() >= 2, "{runs:?}");
        for r in &runs[1..] {
            assert_eq!(r.len(), runs[0].len());
            for (a, b) in r.iter().zip(&runs[0]) {
                assert!((a - b).abs() < 1e-4, "{kind}: {runs:?}");
            }
        }
    }
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
        json!({ "fineTuneType": "full", "optimizer": { "name": "sgd" }, "parameters": { "learningRate": 1e4 }, "checkpoint": { "everySteps": 1 } }),
    ));
    let out = tmp.path().join("o");
    let e = train::train(&s, &out, false, &mut |_| Control::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stopping") && e.contains("last good checkpoint"),
        "{e}"
    );
    let state = train::checkpoint::load_latest(&out).unwrap().unwrap().state;
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
        if let Event::Started(s) = e {
            micro = s.micro_batch_size;
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
fn the_stepper_that_benchmarks_use_is_the_trainers_step() {
    use mlxtune_engine::train::optim::{learning_rate, Optimizer};
    use mlxtune_engine::train::stepper::StepOutcome;
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let s = spec(config("llama", &data, json!({ "maxSteps": 1 })));
    let out = tmp.path().join("run");
    run(&s, &out);
    let trained = losses(&out)[0];

    // The same first step, built by hand from the prepared pieces.
    let (mut p, mut stepper) = prepared_stepper(&s, false);
    let first = p.plan.epoch_order(s.seed, 0)[0];
    let micro = micro_batch(&p, first, 0);
    let mut opt = Optimizer::new(&s);
    let lr = learning_rate(&s, 0, p.total_steps) as f32;
    let outcome = stepper
        .step(
            &mut p.trainable,
            &mut opt,
            &[micro],
            1.0,
            lr,
            s.max_grad_norm,
        )
        .unwrap();
    let StepOutcome::Updated(stats) = outcome else {
        panic!("the step did not update: {outcome:?}");
    };
    assert_eq!(stats.loss, trained, "the same loss, bit for bit");
    let saved = train::checkpoint::load_latest(&out).unwrap().unwrap();
    for (name, a) in &p.trainable {
        assert_eq!(max_abs_diff(a, &saved.trainable[name]), 0.0, "{name}");
    }
}

/// A step of one micro-batch runs as one graph (loss, gradients, norm, update evaluated
/// together); it must equal the same steps with the gradients evaluated first, and a step
/// whose loss overflows must change nothing and not be counted, in both.
#[test]
fn a_step_in_one_graph_equals_its_gradients_and_update_run_apart() {
    use mlxtune_engine::train::optim::{learning_rate, Optimizer};
    use mlxtune_engine::train::stepper::StepOutcome;
    let tmp = tempfile::tempdir().unwrap();
    let s = clipping_spec(tmp.path());
    let mut runs = Vec::new();
    for one_graph in [true, false] {
        let (mut p, mut stepper) = prepared_stepper(&s, true);
        stepper.one_graph = one_graph;
        let mut opt = Optimizer::new(&s);
        let order = p.plan.epoch_order(s.seed, 0);
        let mut outcomes = Vec::new();
        // Two steps, one whose loss scale overflows the loss, then a third.
        for (i, scale) in [1.0f32, 1.0, f32::MAX, 1.0].into_iter().enumerate() {
            let micro = micro_batch(&p, order[i % order.len()], i as u64);
            let lr = learning_rate(&s, i as u64, p.total_steps) as f32;
            let before = p.trainable.clone();
            let out = stepper
                .step(
                    &mut p.trainable,
                    &mut opt,
                    &[micro],
                    scale,
                    lr,
                    s.max_grad_norm,
                )
                .unwrap();
            if !matches!(out, StepOutcome::Updated(_)) {
                for (name, a) in &before {
                    assert_eq!(max_abs_diff(a, &p.trainable[name]), 0.0, "{name} changed");
                }
            }
            outcomes.push(out);
        }
        assert!(
            matches!(outcomes[2], StepOutcome::NonFinite { .. }),
            "{outcomes:?}"
        );
        assert_eq!(
            opt.t, 3,
            "one_graph {one_graph}: the overflowing step is not counted"
        );
        runs.push((outcomes, p.trainable));
    }
    let ((one, w1), (apart, w2)) = (&runs[0], &runs[1]);
    for (a, b) in one.iter().zip(apart) {
        match (a, b) {
            (StepOutcome::Updated(a), StepOutcome::Updated(b)) => {
                assert_eq!(a.loss, b.loss, "the same loss");
                assert!(
                    (a.grad_norm - b.grad_norm).abs() <= 1e-6 * b.grad_norm,
                    "{a:?} vs {b:?}"
                );
            }
            (StepOutcome::NonFinite { .. }, StepOutcome::NonFinite { .. }) => {}
            _ => panic!("{one:?} vs {apart:?}"),
        }
    }
    for (name, a) in w1 {
        let d = max_abs_diff(a, &w2[name]);
        assert!(d <= 1e-6, "{name}: the weights differ by {d}");
    }
}

/// Batch `b` of a run's plan, whole, with dropout seed `seed`.
fn micro_batch(
    p: &train::prepare::Prepared,
    b: usize,
    seed: u64,
) -> mlxtune_engine::train::stepper::MicroBatch {
    mlxtune_engine::train::stepper::MicroBatch {
        batch: p.plan.make_part(&p.train.examples, b, 0, 1),
        dropout_seed: seed,
    }
}

/// The llama fixture on the text data, its gradients clipped to a norm of 0.05.
fn clipping_spec(dir: &Path) -> train::TrainSpec {
    let data = write_text_data(dir);
    spec(config("llama", &data, json!({ "maxGradNorm": 0.05 })))
}

/// A run's prepared pieces and a stepper over its step functions (compiled or not), as the
/// trainer builds them.
fn prepared_stepper(
    s: &train::TrainSpec,
    compile: bool,
) -> (
    train::prepare::Prepared,
    mlxtune_engine::train::stepper::Stepper,
) {
    use mlxtune_engine::train::step_functions::StepFunctions;
    let p = train::prepare::prepare(s).unwrap();
    let names = mlxtune_engine::train::order::layer_order(&p.trainable);
    let opts = train::trainer::step_options(s);
    let f = StepFunctions::new(&p.model.spec, p.model.weights.clone(), names, opts, compile);
    let stepper = mlxtune_engine::train::stepper::Stepper::new(f.unwrap());
    (p, stepper)
}

/// The gradients kept for the checkpoint's histograms are the clipped gradients the update
/// applied, whether the step's end is the fused graph (one graph or two phases) or one array
/// at a time; a step that did not update keeps none.
#[test]
fn kept_gradients_are_the_clipped_ones_on_every_step_end() {
    use mlxtune_engine::train::optim::{learning_rate, Optimizer};
    use mlxtune_engine::train::stepper::StepOutcome;
    let tmp = tempfile::tempdir().unwrap();
    let s = clipping_spec(tmp.path());
    let mut kept = Vec::new();
    // (one graph, fused end): the one-array end is the reference.
    for (one_graph, fused) in [(true, true), (false, true), (false, false)] {
        let (mut p, mut stepper) = prepared_stepper(&s, true);
        stepper.one_graph = one_graph;
        stepper.keep_gradients = true;
        let mut opt = Optimizer::new(&s);
        opt.compile_update = fused;
        let first = p.plan.epoch_order(s.seed, 0)[0];
        let lr = learning_rate(&s, 0, p.total_steps) as f32;
        let mut step = |scale: f32| {
            let (micro, end) = (micro_batch(&p, first, 0), (scale, lr, s.max_grad_norm));
            let out = stepper.step_ahead(&mut p.trainable, &mut opt, &[micro], end, None);
            (out.unwrap(), stepper.last_gradients().cloned())
        };
        let (out, grads) = step(1.0);
        let StepOutcome::Updated(stats) = out else {
            panic!("{out:?}");
        };
        assert!(stats.grad_norm > 0.05, "the step clips: {stats:?}");
        let (out, none) = step(f32::MAX);
        assert!(matches!(out, StepOutcome::NonFinite { .. }), "{out:?}");
        assert!(
            none.is_none(),
            "a step that did not update keeps no gradients"
        );
        kept.push(grads.expect("kept gradients"));
    }
    let reference = kept.pop().unwrap();
    for grads in kept {
        assert_eq!(grads.len(), reference.len());
        for (name, g) in &reference {
            let d = max_abs_diff(g, &grads[name]);
            assert!(d <= 1e-6 * max_abs(g).max(1e-3), "{name}: differs by {d}");
        }
    }
}

/// A step whose graph was built during the step before (told its micro-batch) equals the
/// same step built in its turn, bit for bit; a graph built ahead for another micro-batch,
/// another loss scale or before the weights were replaced is not used.
#[test]
fn a_step_built_ahead_equals_one_built_in_its_turn() {
    use mlxtune_engine::train::optim::Optimizer;
    use mlxtune_engine::train::stepper::StepOutcome;
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let s = spec(config("llama", &data, json!({ "maxGradNorm": 0.5 })));
    // Each call: (batch, scale, the batch told as next, weights replaced before it).
    let calls = [
        (0, 1.0, Some(1), false),
        (1, 1.0, Some(2), false),
        (3, 1.0, Some(2), false),
        (2, 0.5, Some(4), false),
        (4, 0.5, Some(5), true),
        (5, 0.5, None, false),
    ];
    let mut runs = Vec::new();
    for ahead in [true, false] {
        let (mut p, mut stepper) = prepared_stepper(&s, true);
        let mut opt = Optimizer::new(&s);
        let order = p.plan.epoch_order(s.seed, 0);
        let micro: Vec<_> = (0..6)
            .map(|i| micro_batch(&p, order[i % order.len()], i as u64))
            .collect();
        let mut losses = Vec::new();
        for (i, scale, next, replaced) in calls {
            if replaced {
                stepper.discard_ahead();
                p.trainable = p
                    .trainable
                    .iter()
                    .map(|(n, a)| (n.clone(), a.multiply(Array::from_f32(0.5)).unwrap()))
                    .collect();
            }
            let next = next.filter(|_| ahead).map(|n| &micro[n]);
            let end = (scale, 1e-3, s.max_grad_norm);
            let out = stepper.step_ahead(
                &mut p.trainable,
                &mut opt,
                std::slice::from_ref(&micro[i]),
                end,
                next,
            );
            let StepOutcome::Updated(stats) = out.unwrap() else {
                panic!("call {i} did not update");
            };
            losses.push(stats.loss);
        }
        runs.push((losses, p.trainable));
    }
    let ((a, wa), (b, wb)) = (&runs[0], &runs[1]);
    assert_eq!(a, b, "the same losses");
    for (name, x) in wa {
        assert_eq!(max_abs_diff(x, &wb[name]), 0.0, "{name}");
    }
}

/// A worker resuming a job starts from the checkpoint it reconciled the job's records with
/// (`ResumeFrom::AtMost`), not from a newer one that a process which lost the job wrote
/// meanwhile: here checkpoints at steps 2, 4, 6, 8 and 9 exist and the resume asks for at most 3.
#[test]
fn a_run_resumed_at_most_at_a_step_starts_from_the_newest_checkpoint_not_past_it() {
    use mlxtune_engine::train::{train_interruptible, ResumeFrom};
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let extra = json!({
        "parameters": { "batchSize": 2, "epochs": 3 },
        "checkpoint": { "everySteps": 2, "keepLast": 5 }
    });
    let s = spec(config("lfm2", &data, extra));
    let out = tmp.path().join("out");
    assert_eq!(run(&s, &out).step, 9);
    let mut resumed_at = Vec::new();
    let never = std::sync::Arc::new(|| false);
    let r = train_interruptible(&s, &out, Some(ResumeFrom::AtMost(3)), never, &mut |e| {
        match e {
            Event::Message { text, .. } if text.starts_with("resumed from") => {
                resumed_at.push(text.clone())
            }
            Event::Step(_) => return Control::Pause,
            _ => {}
        }
        Control::Continue
    })
    .unwrap();
    assert_eq!((r.outcome, r.step), (Outcome::Paused, 3));
    assert_eq!(resumed_at.len(), 1, "{resumed_at:?}");
    assert!(resumed_at[0].ends_with("(step 2)"), "{resumed_at:?}");
}

/// A compiled job on packed rows gives every batch one width: a new width would trace the
/// compiled step again (rounded up to 32 positions, these rows would take several).
#[test]
fn packed_batches_of_a_compiled_job_all_have_one_width() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let extra = json!({
        "packing": true,
        "parameters": { "batchSize": 1, "sequenceLength": 150 },
        "optimization": { "compile": true }
    });
    let s = spec(config("llama", &data, extra.clone()));
    let p = train::prepare::prepare(&s).unwrap();
    let ex = &p.train.examples;
    let rows: Vec<usize> = p
        .plan
        .batches
        .iter()
        .flatten()
        .map(|r| r.iter().map(|i| ex[*i].ids.len() - 1).sum())
        .collect();
    let by_32: std::collections::BTreeSet<usize> = rows.iter().map(|n| n.div_ceil(32)).collect();
    assert!(by_32.len() > 1, "rows of {rows:?} positions");
    let widths: std::collections::BTreeSet<i32> = (0..p.plan.batches.len())
        .map(|b| p.plan.make(ex, b).inputs.dim(1))
        .collect();
    assert_eq!(
        widths,
        [*rows.iter().max().unwrap() as i32].into(),
        "rows of {rows:?}"
    );
    // The job says once what its attention does at that width.
    let mut notes = Vec::new();
    let s = spec(config(
        "llama",
        &data,
        merged(extra, json!({ "maxSteps": 1 })),
    ));
    let on_event = &mut |e: &Event| {
        if let Event::Message { text, .. } = e {
            notes.push(text.clone());
        }
        Control::Continue
    };
    train::train(&s, &tmp.path().join("run"), false, on_event).unwrap();
    let said = format!("packed rows of {} positions: ", rows.iter().max().unwrap());
    let packed: Vec<_> = notes.iter().filter(|t| t.starts_with(&said)).collect();
    assert_eq!(packed.len(), 1, "{notes:?}");
}

/// A compiled job's bucketed batches take few widths: a short run the widest batch's
/// alone (one trace), a long one more, each batch the least that holds it.
#[test]
fn bucketed_batches_of_a_compiled_job_take_a_ladder_of_widths_by_run_length() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("varied.jsonl");
    let words = [
        "fox", "jumps", "over", "the", "lazy", "dog", "quartz", "sphinx",
    ];
    let lines: Vec<String> = (0..30)
        .map(|i| {
            let text: Vec<&str> = (0..3 + i * 4)
                .map(|k| words[(i + k) % words.len()])
                .collect();
            json!({ "text": text.join(" ") }).to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let widths = |steps: u32| {
        let extra = json!({
            "parameters": { "batchSize": 2, "sequenceLength": 256, "epochs": 5000 },
            "optimization": { "compile": true }, "maxSteps": steps
        });
        let p = train::prepare::prepare(&spec(config("llama", &data, extra))).unwrap();
        let ex = &p.train.examples;
        let mut built = std::collections::BTreeSet::new();
        for (b, (natural, _)) in p.plan.natural_widths(ex).into_iter().enumerate() {
            let w = p.plan.make(ex, b).inputs.dim(1) as usize;
            assert!(
                w >= natural && w.is_multiple_of(8),
                "batch {b}: {natural} -> {w}"
            );
            built.insert(w);
        }
        (built, p.plan.natural_widths(ex).len())
    };
    let (short, batches) = widths(1);
    assert_eq!(short.len(), 1, "{short:?}");
    // The job says its widths.
    let mut notes = Vec::new();
    let extra = json!({
        "parameters": { "batchSize": 2, "sequenceLength": 256 },
        "optimization": { "compile": true }, "maxSteps": 1
    });
    let on_event = &mut |e: &Event| {
        if let Event::Message { text, .. } = e {
            notes.push(text.clone());
        }
        Control::Continue
    };
    let s = spec(config("llama", &data, extra));
    train::train(&s, &tmp.path().join("run"), false, on_event).unwrap();
    let said = format!(
        "compiled step: batches padded to 1 width(s), {} positions",
        short.last().unwrap()
    );
    assert!(notes.iter().any(|t| t.starts_with(&said)), "{notes:?}");
    let (long, _) = widths(50_000);
    assert!(long.len() > 1 && long.len() <= batches, "{long:?}");
    assert_eq!(long.last(), short.last(), "the widest width stays");
}

fn merged(mut a: Value, b: Value) -> Value {
    merge(&mut a, &b);
    a
}
