//! The resolved description of a decoder: every architecture's `config.json` is parsed by
//! its own file into this one struct, so derived values are computed in exactly one place.

use crate::tokenizer::ModelTokens;
use serde::Serialize;

/// What a decoder layer's mixing operator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Multi-head (grouped-query) self-attention.
    Attention,
    /// LFM2's gated short convolution.
    Conv,
}

/// How RoPE frequencies are scaled.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// Tensor names of one architecture's modules (they differ between families).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Names {
    pub attn: &'static str,
    pub q_proj: &'static str,
    pub k_proj: &'static str,
    pub v_proj: &'static str,
    pub o_proj: &'static str,
    pub q_norm: &'static str,
    pub k_norm: &'static str,
    pub mlp: &'static str,
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    pub attn_norm: &'static str,
    pub mlp_norm: &'static str,
    pub final_norm: &'static str,
    pub conv: &'static str,
}

/// Llama-family names (Llama, Qwen2, Qwen3).
pub const LLAMA_NAMES: Names = Names {
    attn: "self_attn",
    q_proj: "q_proj",
    k_proj: "k_proj",
    v_proj: "v_proj",
    o_proj: "o_proj",
    q_norm: "q_norm",
    k_norm: "k_norm",
    mlp: "mlp",
    gate: "gate_proj",
    up: "up_proj",
    down: "down_proj",
    attn_norm: "input_layernorm",
    mlp_norm: "post_attention_layernorm",
    final_norm: "model.norm",
    conv: "conv",
};

/// The resolved decoder description.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSpec {
    pub model_type: String,
    pub hidden_size: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub intermediate_size: i32,
    pub vocab_size: i32,
    pub norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: i32,
    pub tie_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub qk_norm: bool,
    pub layers: Vec<LayerKind>,
    pub conv_l_cache: i32,
    pub conv_bias: bool,
    pub names: Names,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

/// The role of a tensor, which decides whether it can be quantized or adapted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A linear layer's `[out, in]` weight (quantizable, LoRA-able).
    Linear,
    /// The token embedding `[vocab, hidden]` (quantizable).
    Embedding,
    /// Norm scales, biases, convolution kernels: always kept in float.
    Other,
}

/// One tensor the architecture expects.
#[derive(Debug, Clone)]
pub struct Expected {
    pub name: String,
    pub shape: Vec<i32>,
    pub role: Role,
}

impl ModelSpec {
    /// The special token ids of `config.json`, for the tokenizer.
    pub fn tokens(&self) -> ModelTokens {
        ModelTokens {
            eos_token_ids: self.eos_token_ids.clone(),
            bos_token_id: self.bos_token_id,
            pad_token_id: self.pad_token_id,
        }
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Every tensor of the float model, with its shape.
    pub fn expected_tensors(&self) -> Vec<Expected> {
        let n = &self.names;
        let h = self.hidden_size;
        let mut out = Vec::new();
        let mut push =
            |name: String, shape: Vec<i32>, role: Role| out.push(Expected { name, shape, role });
        push(
            "model.embed_tokens.weight".into(),
            vec![self.vocab_size, h],
            Role::Embedding,
        );
        for (i, kind) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            push(format!("{p}.{}.weight", n.attn_norm), vec![h], Role::Other);
            push(format!("{p}.{}.weight", n.mlp_norm), vec![h], Role::Other);
            match kind {
                LayerKind::Attention => {
                    let a = format!("{p}.{}", n.attn);
                    let q = self.num_heads * self.head_dim;
                    let kv = self.num_kv_heads * self.head_dim;
                    push(format!("{a}.{}.weight", n.q_proj), vec![q, h], Role::Linear);
                    push(
                        format!("{a}.{}.weight", n.k_proj),
                        vec![kv, h],
                        Role::Linear,
                    );
                    push(
                        format!("{a}.{}.weight", n.v_proj),
                        vec![kv, h],
                        Role::Linear,
                    );
                    push(format!("{a}.{}.weight", n.o_proj), vec![h, q], Role::Linear);
                    if self.qkv_bias {
                        push(format!("{a}.{}.bias", n.q_proj), vec![q], Role::Other);
                        push(format!("{a}.{}.bias", n.k_proj), vec![kv], Role::Other);
                        push(format!("{a}.{}.bias", n.v_proj), vec![kv], Role::Other);
                    }
                    if self.o_bias {
                        push(format!("{a}.{}.bias", n.o_proj), vec![h], Role::Other);
                    }
                    if self.qk_norm {
                        push(
                            format!("{a}.{}.weight", n.q_norm),
                            vec![self.head_dim],
                            Role::Other,
                        );
                        push(
                            format!("{a}.{}.weight", n.k_norm),
                            vec![self.head_dim],
                            Role::Other,
                        );
                    }
                }
                LayerKind::Conv => {
                    let c = format!("{p}.{}", n.conv);
                    push(format!("{c}.in_proj.weight"), vec![3 * h, h], Role::Linear);
                    push(format!("{c}.out_proj.weight"), vec![h, h], Role::Linear);
                    push(
                        format!("{c}.conv.weight"),
                        vec![h, 1, self.conv_l_cache],
                        Role::Other,
                    );
                    if self.conv_bias {
                        push(format!("{c}.in_proj.bias"), vec![3 * h], Role::Other);
                        push(format!("{c}.out_proj.bias"), vec![h], Role::Other);
                        push(format!("{c}.conv.bias"), vec![h], Role::Other);
                    }
                }
            }
            let m = format!("{p}.{}", n.mlp);
            let f = self.intermediate_size;
            push(format!("{m}.{}.weight", n.gate), vec![f, h], Role::Linear);
            push(format!("{m}.{}.weight", n.up), vec![f, h], Role::Linear);
            push(format!("{m}.{}.weight", n.down), vec![h, f], Role::Linear);
            if self.mlp_bias {
                push(format!("{m}.{}.bias", n.gate), vec![f], Role::Other);
                push(format!("{m}.{}.bias", n.up), vec![f], Role::Other);
                push(format!("{m}.{}.bias", n.down), vec![h], Role::Other);
            }
        }
        push(format!("{}.weight", n.final_norm), vec![h], Role::Other);
        if !self.tie_embeddings {
            push(
                "lm_head.weight".into(),
                vec![self.vocab_size, h],
                Role::Linear,
            );
        }
        out
    }

    /// Expected tensor shapes by name.
    pub fn expected_shapes(&self) -> std::collections::HashMap<String, Vec<i32>> {
        self.expected_tensors()
            .into_iter()
            .map(|e| (e.name, e.shape))
            .collect()
    }

    /// Parameter count of the float model.
    pub fn num_parameters(&self) -> u64 {
        self.expected_tensors()
            .iter()
            .map(|e| e.shape.iter().map(|d| *d as u64).product::<u64>())
            .sum()
    }

    /// Linear layers by their module path (without `.weight`), in model order.
    pub fn linear_modules(&self) -> Vec<String> {
        self.expected_tensors()
            .into_iter()
            .filter(|e| e.role == Role::Linear)
            .map(|e| e.name.trim_end_matches(".weight").to_string())
            .collect()
    }
}
