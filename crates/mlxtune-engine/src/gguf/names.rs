//! Tensor names: checkpoint (Hugging Face) names ↔ llama.cpp's GGUF names, per
//! architecture, derived from the model's [`ModelSpec`] so that export and import use
//! one table.

use crate::models::{LayerKind, ModelSpec};

/// llama.cpp's architecture name of a model type.
pub fn gguf_arch(spec: &ModelSpec) -> &'static str {
    match spec.model_type.as_str() {
        "lfm2" => "lfm2",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        _ => "llama",
    }
}

/// Whether llama.cpp's graph for this architecture applies RoPE to interleaved pairs,
/// so that q/k rows must be permuted from Hugging Face's rotate-half order (llama).
pub fn permutes_qk(spec: &ModelSpec) -> bool {
    gguf_arch(spec) == "llama"
}

/// One tensor under both names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorName {
    pub hf: String,
    pub gguf: String,
}

/// Per-layer module suffixes (without `.weight` / `.bias`) and their GGUF names.
fn layer_table(spec: &ModelSpec, kind: LayerKind) -> Vec<(String, &'static str)> {
    let n = &spec.names;
    let mut t = vec![
        (n.attn_norm.to_string(), "attn_norm"),
        (n.mlp_norm.to_string(), "ffn_norm"),
        (format!("{}.{}", n.mlp, n.gate), "ffn_gate"),
        (format!("{}.{}", n.mlp, n.up), "ffn_up"),
        (format!("{}.{}", n.mlp, n.down), "ffn_down"),
    ];
    match kind {
        LayerKind::Attention => t.extend([
            (format!("{}.{}", n.attn, n.q_proj), "attn_q"),
            (format!("{}.{}", n.attn, n.k_proj), "attn_k"),
            (format!("{}.{}", n.attn, n.v_proj), "attn_v"),
            (format!("{}.{}", n.attn, n.o_proj), "attn_output"),
            (format!("{}.{}", n.attn, n.q_norm), "attn_q_norm"),
            (format!("{}.{}", n.attn, n.k_norm), "attn_k_norm"),
        ]),
        LayerKind::Conv => t.extend([
            (format!("{}.in_proj", n.conv), "shortconv.in_proj"),
            (format!("{}.out_proj", n.conv), "shortconv.out_proj"),
            (format!("{}.conv", n.conv), "shortconv.conv"),
        ]),
    }
    t
}

/// The GGUF name of a checkpoint tensor, if the architecture has one for it.
pub fn to_gguf(spec: &ModelSpec, hf: &str) -> Option<String> {
    let (module, suffix) = hf.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let top = match module {
        "model.embed_tokens" => Some("token_embd"),
        "lm_head" => Some("output"),
        m if m == spec.names.final_norm => Some(if spec.model_type == "lfm2" {
            "token_embd_norm"
        } else {
            "output_norm"
        }),
        _ => None,
    };
    if let Some(t) = top {
        return Some(format!("{t}.{suffix}"));
    }
    let rest = module.strip_prefix("model.layers.")?;
    let (index, inner) = rest.split_once('.')?;
    let i: usize = index.parse().ok()?;
    let kind = *spec.layers.get(i)?;
    layer_table(spec, kind)
        .into_iter()
        .find(|(m, _)| m == inner)
        .map(|(_, g)| format!("blk.{i}.{g}.{suffix}"))
}

/// Every tensor of the float model under both names, in checkpoint order.
pub fn tensor_names(spec: &ModelSpec) -> Vec<TensorName> {
    spec.expected_tensors()
        .into_iter()
        .filter_map(|e| {
            to_gguf(spec, &e.name).map(|gguf| TensorName {
                hf: e.name.clone(),
                gguf,
            })
        })
        .collect()
}
