//! Our models against transformers on the committed fixtures: logits within 1e-4 in f32
//! (a bf16 bound otherwise), with and without the KV / conv cache, batch > 1 with padding,
//! identical greedy ids, the same evaluation loss, the same chat-template rendering.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mlxtune_engine::data::{Example, TokenizeOptions};
use mlxtune_engine::generate::{generate, GenerateOptions};
use mlxtune_engine::mlx_rs::ops::concatenate;
use mlxtune_engine::mlx_rs::ops::indexing::IndexOp;
use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::{eval, weights, LoadOptions, Model, Tokenizer};

fn tolerance(dtype: Dtype, reference: &Array) -> f32 {
    match dtype {
        Dtype::Float32 => 1e-4,
        // bf16 keeps 8 bits of mantissa: allow a few percent of the logit scale.
        _ => 0.05 * max_abs(reference).max(1.0),
    }
}

fn load(name: &str, dtype: Dtype) -> Model {
    Model::load(
        &fixture(name),
        &LoadOptions {
            dtype: Some(dtype),
            quantize: None,
        },
    )
    .expect("fixture loads")
}

struct Case {
    ids: Vec<Vec<i32>>,
    logits: Array,
    t: i32,
}

fn case(r: &Reference) -> Case {
    let all = r.ints("input_ids");
    let lengths = r.ints("lengths");
    let logits = r.array("logits").clone();
    let t = logits.dim(1);
    let ids = lengths
        .iter()
        .enumerate()
        .map(|(i, len)| all[i * t as usize..i * t as usize + *len as usize].to_vec())
        .collect();
    Case { ids, logits, t }
}

#[test]
fn logits_match_transformers_one_sequence_at_a_time() {
    for name in ARCHS {
        let r = Reference::load(name);
        let c = case(&r);
        for dtype in test_dtypes() {
            let m = load(name, dtype);
            for (i, ids) in c.ids.iter().enumerate() {
                let len = ids.len() as i32;
                let ours = m.forward(&Array::from_slice(ids, &[1, len]), None).unwrap();
                let want = c.logits.index((i as i32..i as i32 + 1, 0..len, ..));
                let d = max_abs_diff(&ours, &want);
                let tol = tolerance(dtype, &want);
                assert!(
                    d <= tol,
                    "{name} {dtype:?} sequence {i}: max |logit diff| {d} > {tol}"
                );
            }
        }
    }
}

#[test]
fn padded_batch_gives_the_same_logits_as_single_sequences() {
    for name in ARCHS {
        let r = Reference::load(name);
        let c = case(&r);
        let m = load(name, Dtype::Float32);
        let padded = r.ints("input_ids");
        let b = c.ids.len() as i32;
        let ours = m
            .forward(&Array::from_slice(&padded, &[b, c.t]), None)
            .unwrap();
        for (i, ids) in c.ids.iter().enumerate() {
            let len = ids.len() as i32;
            let i = i as i32;
            let d = max_abs_diff(
                &ours.index((i..i + 1, 0..len, ..)),
                &c.logits.index((i..i + 1, 0..len, ..)),
            );
            assert!(
                d <= 1e-4,
                "{name} row {i} of a padded batch: max |diff| {d}"
            );
        }
    }
}

#[test]
fn cached_decoding_gives_the_same_logits_as_a_full_pass() {
    for name in ARCHS {
        let r = Reference::load(name);
        let c = case(&r);
        for dtype in test_dtypes() {
            let m = load(name, dtype);
            let ids = c.ids.iter().max_by_key(|v| v.len()).unwrap();
            let row = c.ids.iter().position(|v| v == ids).unwrap() as i32;
            let len = ids.len() as i32;
            let split = len / 2;
            let mut cache = m.new_cache();
            let mut pieces = vec![m
                .forward(
                    &Array::from_slice(&ids[..split as usize], &[1, split]),
                    Some(&mut cache),
                )
                .unwrap()];
            for tok in &ids[split as usize..] {
                pieces.push(
                    m.forward(&Array::from_slice(&[*tok], &[1, 1]), Some(&mut cache))
                        .unwrap(),
                );
            }
            assert_eq!(cache.offset, len);
            let ours = concatenate(&pieces, 1).unwrap();
            let want = c.logits.index((row..row + 1, 0..len, ..));
            let d = max_abs_diff(&ours, &want);
            let tol = tolerance(dtype, &want);
            assert!(
                d <= tol,
                "{name} {dtype:?} with cache: max |diff| {d} > {tol}"
            );
        }
    }
}

#[test]
fn greedy_ids_are_identical() {
    for name in ARCHS {
        let r = Reference::load(name);
        let m = load(name, Dtype::Float32);
        let tok = Tokenizer::from_dir(&fixture(name), Some(&m.spec.tokens())).unwrap();
        let prompt: Vec<u32> = r
            .ints("greedy_prompt_ids")
            .iter()
            .map(|i| *i as u32)
            .collect();
        let want: Vec<u32> = r.ints("greedy_ids").iter().map(|i| *i as u32).collect();
        let opts = GenerateOptions {
            max_tokens: want.len(),
            stop_at_eos: false,
            ..Default::default()
        };
        let g = generate(&m, &tok, &prompt, &opts, &mut |_| true).unwrap();
        assert_eq!(g.token_ids, want, "{name}: greedy ids differ");
        assert_eq!(g.finish_reason, "length");
    }
}

#[test]
fn eval_loss_perplexity_and_accuracy_match_the_reference() {
    for name in ARCHS {
        let r = Reference::load(name);
        let m = load(name, Dtype::Float32);
        let tok = Tokenizer::from_dir(&fixture(name), Some(&m.spec.tokens())).unwrap();
        let records = r.json["eval_records"].as_array().unwrap();
        let examples: Vec<Example> = records
            .iter()
            .map(|t| {
                let rec = serde_json::json!({ "text": t });
                mlxtune_engine::data::tokenize_record(
                    &tok,
                    mlxtune_engine::data::DataFormat::Text,
                    &rec,
                    &TokenizeOptions::default(),
                )
                .unwrap()
            })
            .collect();
        for batch_size in [1, 2, 5] {
            let e = eval::evaluate(&m.spec, &m.params(), &examples, batch_size).unwrap();
            let want = &r.json["eval"];
            assert_eq!(
                e.tokens,
                want["tokens"].as_u64().unwrap(),
                "{name}: predicted positions"
            );
            let loss = want["loss"].as_f64().unwrap();
            assert!(
                (e.loss - loss).abs() < 1e-4,
                "{name} batch {batch_size}: loss {} vs {loss}",
                e.loss
            );
            assert!(
                (e.perplexity - want["perplexity"].as_f64().unwrap()).abs() < 1e-3 * e.perplexity
            );
            assert!(
                (e.token_accuracy - want["token_accuracy"].as_f64().unwrap()).abs() < 1e-9,
                "{name}: accuracy"
            );
        }
    }
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    for name in ARCHS {
        let r = Reference::load(name);
        let tok = Tokenizer::from_dir(&fixture(name), None).unwrap();
        let ex = &r.json["text_ids_example"];
        let ids: Vec<u32> = ex["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode(ex["text"].as_str().unwrap(), true).unwrap(),
            ids,
            "{name}: encoding with special tokens"
        );
        let chat = &r.json["chat"];
        let messages = chat["messages"].as_array().unwrap();
        let rendered = tok.apply_chat_template(messages, None, true).unwrap();
        assert_eq!(
            rendered,
            chat["rendered"].as_str().unwrap(),
            "{name}: chat template rendering"
        );
        let ids: Vec<u32> = chat["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode(&rendered, false).unwrap(),
            ids,
            "{name}: chat ids"
        );
        assert_eq!(
            tok.eos_ids.first().copied(),
            r.json["eos_token_id"].as_u64().map(|v| v as u32),
            "{name}: eos"
        );
    }
}

#[test]
fn a_saved_model_reloads_with_identical_logits() {
    let name = "qwen3";
    let m = load(name, Dtype::Float32);
    let out = tempfile::tempdir().unwrap();
    m.save(out.path()).unwrap();
    let again = Model::load(out.path(), &LoadOptions::default()).unwrap();
    let ids = Array::from_slice(&[5i32, 9, 33, 2, 17], &[1, 5]);
    let d = max_abs_diff(
        &m.forward(&ids, None).unwrap(),
        &again.forward(&ids, None).unwrap(),
    );
    assert_eq!(d, 0.0, "a save/load round trip must be exact");
    assert_eq!(weights::dtype_name(again.dtype), "f32");
}
