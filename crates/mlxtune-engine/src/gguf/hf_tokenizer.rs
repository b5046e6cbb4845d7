//! A `tokenizer.json` rebuilt from a GGUF file's `tokenizer.ggml.*` keys, for files that do
//! not carry the original (`tokenizer.huggingface.json`): byte-level BPE (`gpt2`) with the
//! pre-tokenizers llama.cpp calls `gpt-2`, `qwen2` and `llama-bpe`.

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Map, Value as J};

use super::import::GgufFile;
use super::vocab::{pre_tokenizer_regex, CONTROL, USER_DEFINED};
use crate::error::{EngineError, Result};

fn strings(g: &GgufFile, key: &str) -> Result<Vec<String>> {
    match g.get(key) {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.to_string().cloned().map_err(|_| g.missing(key)))
            .collect(),
        _ => Err(g.missing(key)),
    }
}

fn token_types(g: &GgufFile, n: usize) -> Vec<i32> {
    match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(list)) => list.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => vec![1; n],
    }
}

/// The pre-tokenizer, normalizer and whether BPE should skip merging whole-word tokens.
fn pre_tokenizer(g: &GgufFile) -> Result<(J, J, bool)> {
    let pre = g
        .string("tokenizer.ggml.pre")
        .unwrap_or_else(|_| "gpt-2".into());
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    if pre == "gpt-2" || pre == "default" {
        return Ok((byte_level(true), J::Null, false));
    }
    let Some(regex) = pre_tokenizer_regex(&pre) else {
        return Err(EngineError::config(
            &g.path,
            "tokenizer.ggml.pre",
            format!(
                "`{pre}` cannot be rebuilt without tokenizer.huggingface.json (known: gpt-2, qwen2, llama-bpe)"
            ),
        ));
    };
    let split = json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let seq = json!({"type": "Sequence", "pretokenizers": [split, byte_level(false)]});
    let normalizer = if pre == "qwen2" {
        json!({"type": "NFC"})
    } else {
        J::Null
    };
    Ok((seq, normalizer, pre == "llama-bpe"))
}

/// BOS prepended by the post-processor when `tokenizer.ggml.add_bos_token` says so.
fn post_processor(g: &GgufFile, tokens: &[String]) -> J {
    let add_bos = g
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let bos = g
        .u32("tokenizer.ggml.bos_token_id")
        .ok()
        .and_then(|id| tokens.get(id as usize).map(|t| (id, t.clone())));
    match (add_bos, bos) {
        (true, Some((id, t))) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": t, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {t.clone(): {"id": t, "ids": [id], "tokens": [t]}},
        }),
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false})
        }
    }
}

/// `tokenizer.json` text for the GGUF file's vocabulary.
pub fn tokenizer_json(g: &GgufFile) -> Result<String> {
    let model = g.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(EngineError::config(
            &g.path,
            "tokenizer.ggml.model",
            format!("`{model}` is not supported without tokenizer.huggingface.json (only gpt2, byte-level BPE)"),
        ));
    }
    let tokens = strings(g, "tokenizer.ggml.tokens")?;
    let merges = strings(g, "tokenizer.ggml.merges")?;
    let types = token_types(g, tokens.len());
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        let kind = types.get(id).copied().unwrap_or(1);
        if kind == CONTROL || kind == USER_DEFINED {
            added.push(json!({
                "id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": kind == USER_DEFINED, "special": kind == CONTROL,
            }));
        }
        vocab.insert(t.clone(), id.into());
    }
    let (pre, normalizer, ignore_merges) = pre_tokenizer(g)?;
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "post_processor": post_processor(g, &tokens),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
        },
    });
    serde_json::to_string(&tok).map_err(|e| EngineError::invalid("tokenizer.json", e.to_string()))
}
