//! Tokenizer metadata under llama.cpp's keys (`tokenizer.ggml.*`, `tokenizer.chat_template`)
//! from a model directory's `tokenizer.json` and `tokenizer_config.json`. Byte-level BPE
//! tokenizers (`gpt2` in llama.cpp's terms: LFM2, Llama 3, Qwen) are supported; the
//! original `tokenizer.json` is kept too (`tokenizer.huggingface.json`) for exact import.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value as G;
use serde_json::Value;

use super::arch::Metadata;
use crate::error::{EngineError, Result};
use crate::models::ModelSpec;
use crate::tokenizer::Tokenizer;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
pub(crate) const CONTROL: i32 = 3;
pub(crate) const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Pre-tokenizer regexes llama.cpp knows, by its `tokenizer.ggml.pre` name.
const KNOWN_PRE: &[(&str, &str)] = &[
    (
        "qwen2",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (
        "llama-bpe",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
];

/// The Split regex of a pre-tokenizer llama.cpp knows by name.
pub(crate) fn pre_tokenizer_regex(name: &str) -> Option<&'static str> {
    KNOWN_PRE.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EngineError::Tokenizer {
            file: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })
}

/// The `tokenizer.ggml.pre` name: the Split regex matched against llama.cpp's known ones,
/// GPT-2's for a plain byte-level pre-tokenizer, else the model family's own.
fn pre_tokenizer(tok: &Value, spec: &ModelSpec) -> String {
    let pre = &tok["pre_tokenizer"];
    let mut regexes = Vec::new();
    let mut stack = vec![pre];
    while let Some(p) = stack.pop() {
        if let Some(list) = p["pretokenizers"].as_array() {
            stack.extend(list.iter());
        }
        if let Some(r) = p["pattern"]["Regex"].as_str() {
            regexes.push(r.to_string());
        }
    }
    for r in &regexes {
        if let Some((name, _)) = KNOWN_PRE.iter().find(|(_, known)| known == r) {
            return name.to_string();
        }
    }
    if regexes.is_empty() && pre["type"] == "ByteLevel" && pre["use_regex"] != false {
        return "gpt-2".into();
    }
    let fallback = match spec.model_type.as_str() {
        "lfm2" => "lfm2",
        "qwen2" | "qwen3" => "qwen2",
        _ => "llama-bpe",
    };
    tracing::warn!(
        "pre-tokenizer not recognised; writing tokenizer.ggml.pre = {fallback} (the {} family's)",
        spec.model_type
    );
    fallback.into()
}

/// Tokens by id with their types, padded to `vocab_size` with `[PADn]` (unused).
fn tokens(tok: &Value, file: &Path, vocab_size: usize) -> Result<(Vec<String>, Vec<i32>)> {
    let bad = |m: String| EngineError::Tokenizer {
        file: file.to_path_buf(),
        message: m,
    };
    let mut by_id: BTreeMap<u64, (String, i32)> = BTreeMap::new();
    let vocab = tok["model"]["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab: expected an object of token → id".into()))?;
    for (t, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("model.vocab[{t:?}]: id is not an integer")))?;
        by_id.insert(id, (t.clone(), NORMAL));
    }
    for a in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(t)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return Err(bad("added_tokens: entries need `id` and `content`".into()));
        };
        let kind = if a["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        by_id.insert(id, (t.to_string(), kind));
    }
    let n = vocab_size.max(by_id.keys().max().map_or(0, |m| *m as usize + 1));
    let mut list = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        let (t, k) = by_id
            .remove(&(i as u64))
            .unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED));
        list.push(t);
        types.push(k);
    }
    Ok((list, types))
}

/// Merges as `"a b"` strings (tokenizer.json has them as strings or as pairs).
fn merges(tok: &Value, file: &Path) -> Result<Vec<String>> {
    let list = tok["model"]["merges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            match m {
                Value::String(s) => Ok(s.clone()),
                Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                    (Some(a), Some(b)) => Ok(format!("{a} {b}")),
                    _ => Err(()),
                },
                _ => Err(()),
            }
            .map_err(|()| EngineError::Tokenizer {
                file: file.to_path_buf(),
                message: format!("model.merges[{i}]: expected \"a b\" or [\"a\", \"b\"]"),
            })
        })
        .collect()
}

/// Whether encoding adds the BOS token: `add_bos_token` in tokenizer_config.json, else
/// whether the post-processor's single template starts with it.
fn adds_bos(tok: &Value, cfg: &Value, bos: Option<&str>) -> bool {
    if let Some(b) = cfg["add_bos_token"].as_bool() {
        return b;
    }
    let first = &tok["post_processor"]["single"][0]["SpecialToken"]["id"];
    bos.is_some_and(|b| first.as_str() == Some(b))
}

/// The chat template as the model directory stores it.
fn chat_template(dir: &Path, cfg: &Value) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| EngineError::io(&jinja, e));
    }
    Ok(match &cfg["chat_template"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => read_json(&dir.join("chat_template.json"))?
            .and_then(|v| v["chat_template"].as_str().map(str::to_string)),
    })
}

fn strings(v: Vec<String>) -> G {
    G::Array(v.into_iter().map(G::String).collect())
}

/// Every `tokenizer.*` key for the model in `dir`.
pub fn tokenizer_metadata(dir: &Path, spec: &ModelSpec) -> Result<Metadata> {
    let file = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&file).map_err(|e| EngineError::io(&file, e))?;
    let tok: Value = serde_json::from_str(&text).map_err(|e| EngineError::Tokenizer {
        file: file.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    let model_type = tok["model"]["type"].as_str().unwrap_or("?");
    let byte_level = text.contains("\"ByteLevel\"");
    if model_type != "BPE" || !byte_level {
        return Err(EngineError::Tokenizer {
            file,
            message: format!(
                "model type `{model_type}`{}: only byte-level BPE tokenizers can be written to GGUF",
                if byte_level { "" } else { " without a ByteLevel pre-tokenizer" }
            ),
        });
    }
    let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let engine_tok = Tokenizer::from_dir(dir, Some(&spec.tokens()))?;
    let (list, types) = tokens(&tok, &file, spec.vocab_size as usize)?;
    let mut m: Metadata = vec![
        ("tokenizer.ggml.model".into(), G::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            G::String(pre_tokenizer(&tok, spec)),
        ),
        ("tokenizer.ggml.tokens".into(), strings(list)),
        (
            "tokenizer.ggml.token_type".into(),
            G::Array(types.into_iter().map(G::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            strings(merges(&tok, &file)?),
        ),
    ];
    let eos = engine_tok
        .eos_token
        .as_deref()
        .and_then(|t| engine_tok.token_id(t))
        .or_else(|| engine_tok.eos_ids.first().copied());
    let ids = [
        ("bos", engine_tok.bos_id),
        ("eos", eos),
        ("padding", engine_tok.pad_id),
        (
            "unknown",
            tok["model"]["unk_token"]
                .as_str()
                .and_then(|t| engine_tok.token_id(t)),
        ),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            m.push((format!("tokenizer.ggml.{key}_token_id"), G::U32(id)));
        }
    }
    let bos_text = engine_tok.bos_token.clone();
    m.push((
        "tokenizer.ggml.add_bos_token".into(),
        G::Bool(adds_bos(&tok, &cfg, bos_text.as_deref())),
    ));
    m.push((
        "tokenizer.ggml.add_eos_token".into(),
        G::Bool(cfg["add_eos_token"].as_bool().unwrap_or(false)),
    ));
    if let Some(t) = chat_template(dir, &cfg)? {
        m.push(("tokenizer.chat_template".into(), G::String(t)));
    }
    m.push(("tokenizer.huggingface.json".into(), G::String(text)));
    Ok(m)
}
