//! Reading a GGUF file back as a Hugging Face model directory (config.json,
//! model.safetensors, tokenizer files), which [`crate::Model::load`] then loads like any
//! other: tensors are dequantized (F16 / BF16 kept as such), names and layouts mapped back.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use serde_json::{json, Map, Value as J};

use super::export::{candle_err, first_line};
use super::import_weights::{quantization_entry, read_weights};
use super::quant::{unreadable_type_name, READABLE};
use crate::error::{EngineError, Result};
use crate::models::{spec_from_config, HfConfig};
use crate::weights;

const ARCHS: &[&str] = &["lfm2", "llama", "qwen2", "qwen3"];

/// An opened GGUF file: its metadata and tensor directory.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

/// A header that does not read: an unsupported tensor type is named, anything else is a
/// truncated or corrupt file.
fn header_error(path: &Path, e: &candle_core::Error) -> EngineError {
    let text = first_line(e);
    let file = path.display().to_string();
    let number = |s: &str| {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    };
    match text
        .strip_prefix("unknown dtype for tensor ")
        .and_then(number)
    {
        Some(n) => EngineError::invalid(
            &file,
            format!(
                "a tensor has GGML type {} ({n}), which cannot be imported (readable: {})",
                unreadable_type_name(n),
                READABLE
            ),
        ),
        None => EngineError::invalid(
            &file,
            format!("not a readable GGUF file (truncated or corrupt?): {text}"),
        ),
    }
}

impl GgufFile {
    /// Opens `path` and reads its header (metadata and tensor infos).
    pub fn open(path: &Path) -> Result<GgufFile> {
        let f = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let mut reader = BufReader::new(f);
        let content = Content::read(&mut reader).map_err(|e| header_error(path, &e))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    pub(crate) fn missing(&self, key: &str) -> EngineError {
        EngineError::config(
            &self.path,
            key,
            "required metadata key is missing or mistyped",
        )
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn u32(&self, key: &str) -> Result<u32> {
        self.get(key)
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| self.missing(key))
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        self.get(key)
            .and_then(|v| v.to_f32().ok())
            .ok_or_else(|| self.missing(key))
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.get(key)
            .and_then(|v| v.to_string().ok().cloned())
            .ok_or_else(|| self.missing(key))
    }

    /// The architecture, checked to be one this engine runs.
    pub fn arch(&self) -> Result<String> {
        let arch = self.string("general.architecture")?;
        if !ARCHS.contains(&arch.as_str()) {
            return Err(EngineError::config(
                &self.path,
                "general.architecture",
                format!(
                    "`{arch}` is not supported (supported: {})",
                    ARCHS.join(", ")
                ),
            ));
        }
        Ok(arch)
    }

    /// Tensor `name` as stored: raw bytes, row-major shape, type.
    pub fn tensor_raw(&mut self, name: &str) -> Result<(Vec<u8>, Vec<usize>, GgmlDType)> {
        let what = format!("{}: tensor `{name}`", self.path.display());
        let q = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| candle_err(&what, e))?;
        let raw = q.data().map_err(|e| candle_err(&what, e))?.into_owned();
        Ok((raw, q.shape().dims().to_vec(), q.dtype()))
    }

    /// Tensor `name` dequantized to float32 (F16 / BF16 converted exactly), row-major.
    pub fn tensor_f32(&mut self, name: &str) -> Result<(Vec<f32>, Vec<usize>, GgmlDType)> {
        let what = format!("{}: tensor `{name}`", self.path.display());
        let q = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| candle_err(&what, e))?;
        let dtype = q.dtype();
        let t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| candle_err(&what, e))?;
        let shape = t.dims().to_vec();
        let values = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| candle_err(&what, e))?;
        Ok((values, shape, dtype))
    }
}

/// Per-layer kv heads (LFM2 stores one entry per layer, 0 for convolutions).
fn kv_heads(g: &GgufFile, arch: &str) -> Result<Vec<u32>> {
    let key = format!("{arch}.attention.head_count_kv");
    match g.get(&key) {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.to_u32().map_err(|_| g.missing(&key)))
            .collect(),
        _ => Ok(vec![g.u32(&key)?]),
    }
}

/// config.json of the model the file holds.
fn config_json(g: &GgufFile, arch: &str) -> Result<Map<String, J>> {
    let k = |key: &str| format!("{arch}.{key}");
    let layers = g.u32(&k("block_count"))?;
    let heads = g.u32(&k("attention.head_count"))?;
    let kv = kv_heads(g, arch)?;
    let hidden = g.u32(&k("embedding_length"))?;
    let vocab = match g.u32(&k("vocab_size")) {
        Ok(v) => v,
        Err(_) => match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array(t)) => t.len() as u32,
            _ => return Err(g.missing(&k("vocab_size"))),
        },
    };
    let tied = !g.content.tensor_infos.contains_key("output.weight");
    let mut c = json!({
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv.iter().copied().max().unwrap_or(heads),
        "intermediate_size": g.u32(&k("feed_forward_length"))?,
        "vocab_size": vocab,
        "max_position_embeddings": g.u32(&k("context_length"))?,
        "rope_theta": g.f32(&k("rope.freq_base")).unwrap_or(10_000.0),
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    });
    let eps = g.f32(&k("attention.layer_norm_rms_epsilon"))?;
    if let Ok(d) = g.u32(&k("attention.key_length")) {
        if arch != "lfm2" {
            c["head_dim"] = d.into();
        }
    }
    for (key, field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Ok(id) = g.u32(key) {
            c[field] = id.into();
        }
    }
    match arch {
        "lfm2" => {
            c["norm_eps"] = eps.into();
            c["conv_L_cache"] = g.u32(&k("shortconv.l_cache"))?.into();
            c["block_auto_adjust_ff_dim"] = false.into();
            c["conv_bias"] = g
                .content
                .tensor_infos
                .keys()
                .any(|n| n.ends_with("shortconv.conv.bias"))
                .into();
            let types: Vec<&str> = (0..layers as usize)
                .map(|i| match kv.get(i).or(kv.first()) {
                    Some(0) => "conv",
                    _ => "full_attention",
                })
                .collect();
            c["layer_types"] = json!(types);
        }
        _ => {
            c["rms_norm_eps"] = eps.into();
            let bias = g.content.tensor_infos.contains_key("blk.0.attn_q.bias");
            c["attention_bias"] = bias.into();
            if let Ok(t) = g.string(&k("rope.scaling.type")) {
                if t != "linear" {
                    return Err(EngineError::config(
                        &g.path,
                        &k("rope.scaling.type"),
                        format!("`{t}` is not supported (only linear)"),
                    ));
                }
                c["rope_scaling"] =
                    json!({"type": "linear", "factor": g.f32(&k("rope.scaling.factor"))?});
            }
        }
    }
    match c {
        J::Object(m) => Ok(m),
        _ => Err(EngineError::invalid("config", "not an object")),
    }
}

fn write_json(path: &Path, v: &J) -> Result<()> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| EngineError::invalid("json", e.to_string()))?;
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// tokenizer.json (kept in the file by our export as `tokenizer.huggingface.json`, else
/// rebuilt from the `tokenizer.ggml.*` keys),
/// tokenizer_config.json, chat template and generation config.
fn write_tokenizer(g: &GgufFile, dir: &Path) -> Result<()> {
    let hf = match g.string("tokenizer.huggingface.json") {
        Ok(text) => text,
        Err(_) => super::hf_tokenizer::tokenizer_json(g)?,
    };
    crate::fsutil::write_atomic(&dir.join("tokenizer.json"), hf.as_bytes())?;
    let tokens = match g.get("tokenizer.ggml.tokens") {
        Some(Value::Array(t)) => t.clone(),
        _ => Vec::new(),
    };
    let text_of = |key: &str| -> Option<J> {
        let id = g.u32(key).ok()? as usize;
        tokens
            .get(id)?
            .to_string()
            .ok()
            .map(|s| J::String(s.clone()))
    };
    let mut cfg = json!({});
    for (key, field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token"),
    ] {
        if let Some(t) = text_of(key) {
            cfg[field] = t;
        }
    }
    for (key, field) in [
        ("tokenizer.ggml.add_bos_token", "add_bos_token"),
        ("tokenizer.ggml.add_eos_token", "add_eos_token"),
    ] {
        if let Some(b) = g.get(key).and_then(|v| v.to_bool().ok()) {
            cfg[field] = b.into();
        }
    }
    write_json(&dir.join("tokenizer_config.json"), &cfg)?;
    if let Ok(t) = g.string("tokenizer.chat_template") {
        crate::fsutil::write_atomic(&dir.join("chat_template.jinja"), t.as_bytes())?;
    }
    let mut gen = json!({});
    for (key, field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Ok(id) = g.u32(key) {
            gen[field] = id.into();
        }
    }
    write_json(&dir.join("generation_config.json"), &gen)
}

/// Writes the model in the GGUF file `file` into `out` (created; must not exist) as a
/// Hugging Face directory. With `keep_quantized`, Q8_0 / Q4_0 / Q4_1 matrices become MLX
/// affine-quantized ones (groups of 32, exact) instead of float. The directory is
/// assembled under a temporary name and renamed.
pub fn import_gguf(file: &Path, out: &Path, keep_quantized: bool) -> Result<()> {
    let mut g = GgufFile::open(file)?;
    let arch = g.arch()?;
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
    let tmp = parent.join(format!(".import-{}", crate::fsutil::unique_suffix()));
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
        write_json(
            &tmp.join("config.json"),
            &J::Object(config_json(&g, &arch)?),
        )?;
        let spec = spec_from_config(&HfConfig::read(&tmp)?)?;
        write_tokenizer(&g, &tmp)?;
        let (w, quantized) = read_weights(&mut g, &spec, keep_quantized)?;
        if let Some(q) = quantization_entry(&quantized) {
            let mut cfg = config_json(&g, &arch)?;
            cfg.insert("quantization".into(), q);
            write_json(&tmp.join("config.json"), &J::Object(cfg))?;
        }
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        weights::save_atomic(&tmp.join("model.safetensors"), &w, &meta)?;
        std::fs::rename(&tmp, out).map_err(|e| EngineError::io(out, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
