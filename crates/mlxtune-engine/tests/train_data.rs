//! Training data: masking of non-assistant turns, packed rows, the tokenized-data cache.

#![allow(clippy::unwrap_used)]

mod common;

use common::train::*;
use common::*;
use std::sync::Arc;

use mlxtune_engine::data::batch::{make_batch, HostBatch, Plan};
use mlxtune_engine::data::prefetch::{Order, Prefetcher};
use mlxtune_engine::data::Example;
use mlxtune_engine::data::{tokenize_record, DataFormat, TokenizeOptions};
use mlxtune_engine::eval::cross_entropy;
use mlxtune_engine::models::forward::{self, ForwardCtx};
use mlxtune_engine::Tokenizer;
use serde_json::json;
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
                    segments: b.segments.as_ref().map(|s| &s.ids),
                    attention_reach: None,
                    checkpoint_layers: 0,
                    checkpoint_mlps: 0,
                    lean: false,
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
fn tokenized_data_is_cached_by_content_and_rebuilt_when_the_file_changes() {
    use mlxtune_engine::data::{load_cached, DataSpec};
    let any = DataSpec::Builtin(None);
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let cache = tmp.path().join("cache");
    let tok = Tokenizer::from_dir(&fixture("llama"), None).unwrap();
    let opts = TokenizeOptions::default();
    let (a, sa) = load_cached(&data, &tok, &any, &opts, Some(&cache)).unwrap();
    assert!(!sa.from_cache);
    let (b, sb) = load_cached(&data, &tok, &any, &opts, Some(&cache)).unwrap();
    assert!(sb.from_cache);
    assert_eq!(a, b);
    assert_eq!(
        (sa.records, sa.tokens, sa.loss_tokens),
        (sb.records, sb.tokens, sb.loss_tokens)
    );
    // Other options or another tokenizer are other keys.
    let (_, s) = load_cached(
        &data,
        &tok,
        &any,
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
        !load_cached(&data, &other, &any, &opts, Some(&cache))
            .unwrap()
            .1
            .from_cache
    );
    // A changed file misses the cache, and a bad line is still reported.
    std::fs::write(&data, "{\"text\": \"new\"}\n{\"text\": 5}\n").unwrap();
    let e = load_cached(&data, &tok, &any, &opts, Some(&cache))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.jsonl:2"), "{e}");
}

#[test]
fn custom_template_data_is_cached_too_and_keyed_by_its_template() {
    use mlxtune_engine::data::{load_cached, CustomTemplate, DataSpec};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("qa.jsonl");
    std::fs::write(
        &data,
        "{\"q\": \"Two and two?\", \"a\": \"Four.\"}\n{\"q\": \"Sky?\", \"a\": \"Blue.\"}\n",
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    let tok = Tokenizer::from_dir(&fixture("llama"), None).unwrap();
    let opts = TokenizeOptions::default();
    let custom = |prompt: &str| {
        DataSpec::Custom(CustomTemplate {
            prompt: prompt.into(),
            completion: " {a}".into(),
        })
    };
    let (a, first) = load_cached(&data, &tok, &custom("Q: {q}\nA:"), &opts, Some(&cache)).unwrap();
    let (b, again) = load_cached(&data, &tok, &custom("Q: {q}\nA:"), &opts, Some(&cache)).unwrap();
    assert!(!first.from_cache && again.from_cache);
    assert_eq!(a, b);
    let (c, other) = load_cached(&data, &tok, &custom("{q}"), &opts, Some(&cache)).unwrap();
    assert!(!other.from_cache, "another template is another key");
    assert_ne!(a, c);
    // A record lacking a field is reported with its line, cached or not.
    std::fs::write(&data, "{\"q\": \"x\", \"a\": \"y\"}\n{\"q\": \"x\"}\n").unwrap();
    let e = load_cached(&data, &tok, &custom("{q}"), &opts, Some(&cache)).unwrap_err();
    assert!(e.to_string().contains("qa.jsonl:2: missing `a`"), "{e}");
}

/// The definition of a turn's span: what rendering the conversation through it adds to the
/// conversation before it with the generation prompt (two renders per turn).
fn spans_by_rendering_every_prefix(
    tok: &Tokenizer,
    messages: &[serde_json::Value],
) -> Result<Vec<std::ops::Range<usize>>, String> {
    let render = |m: &[serde_json::Value], gen| tok.apply_chat_template(m, None, gen);
    let full = render(messages, false).unwrap();
    let mut spans = vec![];
    for (i, m) in messages.iter().enumerate() {
        if m["role"] != "assistant" || m["weight"] == 0 {
            continue;
        }
        let before = render(&messages[..i], true).unwrap();
        let through = render(&messages[..=i], false).unwrap();
        if !full.starts_with(&before) || !full.starts_with(&through) {
            return Err(format!("message {i} renders differently"));
        }
        spans.push(before.len()..through.len());
    }
    Ok(spans)
}

#[test]
fn assistant_turns_found_in_one_pass_are_those_of_rendering_every_prefix() {
    use mlxtune_engine::data::chat::assistant_spans;
    // Echoed contents (a user saying what the assistant says) and skipped turns included.
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    for i in 0..40 {
        let said = if i % 3 == 0 { "Same." } else { "Hello there." };
        messages.push(json!({"role": "user", "content": said}));
        let mut a = json!({"role": "assistant", "content": if i % 2 == 0 { said.to_string() } else { format!("Answer {i}.") }});
        if i % 7 == 3 {
            a["weight"] = json!(0);
        }
        messages.push(a);
    }
    for arch in ["lfm2", "llama", "qwen2", "qwen3"] {
        let tok = Tokenizer::from_dir(&fixture(arch), None).unwrap();
        let full = tok.apply_chat_template(&messages, None, false).unwrap();
        let fast = assistant_spans(&tok, &messages, None, &full).unwrap();
        let reference = spans_by_rendering_every_prefix(&tok, &messages).unwrap();
        assert_eq!(fast, reference, "{arch}");
    }
}

/// The micro-batch a run's position stands for, spelled out as the trainer did before it
/// built batches ahead.
fn reference_batch(plan: &Plan, ex: &[Example], order: Order, micro: u64) -> HostBatch {
    let split = order.split as u64;
    let per_epoch = plan.batches.len() as u64 * split;
    let (epoch, within) = (micro / per_epoch, micro % per_epoch);
    let b = plan.epoch_order(order.seed, epoch)[(within / split) as usize];
    let part = (within % split) as usize * order.ranks + order.rank;
    plan.host_part(ex, b, part, split as usize * order.ranks)
}

#[test]
fn batches_built_ahead_are_the_batches_built_when_asked_whatever_the_jumps() {
    // 23 examples of 3..40 tokens, every other position a loss target.
    let ex: Vec<Example> = (0..23u32)
        .map(|i| {
            let n = 3 + (i * 17 % 38) as usize;
            Example {
                ids: (0..n as u32).map(|t| 1 + (i * 31 + t * 7) % 97).collect(),
                mask: (0..n)
                    .map(|t| t > 0 && (t + i as usize).is_multiple_of(2))
                    .collect(),
                truncated: false,
            }
        })
        .collect();
    let examples = Arc::new(ex.clone());
    for packed in [false, true] {
        let mut plan = Plan::new(&ex, 3, packed, 64);
        plan.padding = mlxtune_engine::data::batch::Padding::Multiple(8);
        let plan = Arc::new(plan);
        let per_epoch = plan.batches.len() as u64;
        let order = |split, rank, ranks| Order {
            seed: 7,
            split,
            rank,
            ranks,
        };
        // Straight on past an epoch, a retried step, a split after running out of memory
        // (twice the positions), one rank of two, a resume far ahead.
        let mut asks: Vec<(Order, u64)> = (0..per_epoch + 4).map(|m| (order(1, 0, 1), m)).collect();
        asks.extend((3..9).map(|m| (order(1, 0, 1), m)));
        asks.extend((18..30).map(|m| (order(2, 0, 1), m)));
        asks.extend((5..12).map(|m| (order(1, 1, 2), m)));
        asks.extend((40..44).map(|m| (order(2, 1, 2), m)));
        let mut ahead = Prefetcher::new(examples.clone(), plan.clone(), 3);
        let mut when_asked = Prefetcher::new(examples.clone(), plan.clone(), 0);
        let mut filled = 0;
        for (o, micro) in asks {
            let want = reference_batch(&plan, &ex, o, micro);
            filled += usize::from(want.loss_tokens > 0);
            assert_eq!(ahead.get(o, micro), want, "packed {packed}, {o:?}, {micro}");
            assert_eq!(
                when_asked.get(o, micro),
                want,
                "packed {packed}, {o:?}, {micro}"
            );
        }
        // A share of a small batch can be empty; most are not.
        assert!(filled > 30, "packed {packed}: {filled} non-empty batches");
    }
}

/// A packed plan's reach is what its neediest batch needs, so a job gets one compiled step
/// for its attention (`StepFunctions::reach_floor`) and every batch is covered by it.
#[test]
fn a_packed_plan_reach_covers_every_batch_and_is_met_by_one() {
    // 60 examples of 3..90 tokens packed into rows of 128 positions, 4 rows a batch.
    let ex: Vec<Example> = (0..60u32)
        .map(|i| {
            let n = 3 + (i * 37 % 88) as usize;
            Example {
                ids: (0..n as u32).map(|t| 1 + (i + t) % 50).collect(),
                mask: vec![true; n],
                truncated: false,
            }
        })
        .collect();
    let plan = Plan::new(&ex, 4, true, 128);
    assert_eq!(plan.width(&ex), 128);
    for block in [8, 16, 32] {
        let reach = plan.packed_reach(&ex, block);
        let needed: Vec<usize> = (0..plan.batches.len())
            .map(|b| plan.make(&ex, b).segments.unwrap().reach(block))
            .collect();
        assert_eq!(needed.iter().max(), Some(&reach), "blocks of {block}");
        assert!(
            reach > 0 && reach.is_multiple_of(block),
            "blocks of {block}: {reach}"
        );
    }
    let causal = Plan::new(&ex, 4, false, 128);
    assert_eq!(causal.packed_reach(&ex, 16), 0);
}
