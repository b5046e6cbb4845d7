//! `--quant`: the file types an export can have, and which GGML type each tensor gets
//! under one (llama.cpp's rules: 1-D tensors stay F32; rows that do not divide into the
//! type's blocks fall back to a smaller block; Q4_K_M gives the output layer and part of
//! `attn_v` / `ffn_down` Q6_K).

use std::str::FromStr;

use candle_core::quantized::GgmlDType;

use crate::error::{EngineError, Result};

/// A GGUF file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q4KM,
    Q6K,
}

const NAMES: &[(&str, GgufQuant)] = &[
    ("F32", GgufQuant::F32),
    ("F16", GgufQuant::F16),
    ("BF16", GgufQuant::BF16),
    ("Q8_0", GgufQuant::Q8_0),
    ("Q4_0", GgufQuant::Q4_0),
    ("Q4_1", GgufQuant::Q4_1),
    ("Q4_K_M", GgufQuant::Q4KM),
    ("Q6_K", GgufQuant::Q6K),
];

impl FromStr for GgufQuant {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, q)| *q)
            .ok_or_else(|| {
                let all: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                EngineError::invalid(
                    "quant",
                    format!("unknown `{s}` (one of {})", all.join(", ")),
                )
            })
    }
}

impl GgufQuant {
    /// The name as llama.cpp spells it.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, q)| *q == self)
            .map_or("?", |(n, _)| n)
    }

    /// `general.file_type` (llama.cpp's `LlamaFileType`).
    pub fn file_type(self) -> u32 {
        match self {
            GgufQuant::F32 => 0,
            GgufQuant::F16 => 1,
            GgufQuant::Q4_0 => 2,
            GgufQuant::Q4_1 => 3,
            GgufQuant::Q8_0 => 7,
            GgufQuant::Q4KM => 15,
            GgufQuant::Q6K => 18,
            GgufQuant::BF16 => 32,
        }
    }

    /// Whether tensors are block-quantized (then `general.quantization_version` is set).
    pub fn is_quantized(self) -> bool {
        !matches!(self, GgufQuant::F32 | GgufQuant::F16 | GgufQuant::BF16)
    }
}

/// What decides a tensor's type.
#[derive(Debug, Clone, Copy)]
pub struct TensorRole<'a> {
    /// The GGUF name (`blk.3.attn_v.weight`).
    pub name: &'a str,
    /// Row-major shape.
    pub shape: &'a [usize],
    /// Whether the model has a separate `output.weight` (else the embedding is the output).
    pub has_output: bool,
    /// For `attn_v`: index among attention layers and their count; for `ffn_down`: layer
    /// index and layer count.
    pub position: Option<(usize, usize)>,
}

/// llama.cpp's `use_more_bits`: the first and last eighth and every third layer between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `want` if the rows divide into its blocks, else the next smaller block type.
fn fit(want: GgmlDType, row: usize) -> GgmlDType {
    let chain: &[GgmlDType] = match want {
        GgmlDType::Q6K => &[GgmlDType::Q6K, GgmlDType::Q8_0, GgmlDType::F16],
        GgmlDType::Q4K => &[GgmlDType::Q4K, GgmlDType::Q5_0, GgmlDType::F16],
        GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q4_1 => &[want, GgmlDType::F16],
        _ => &[want],
    };
    chain
        .iter()
        .copied()
        .find(|t| row.is_multiple_of(t.block_size()))
        .unwrap_or(GgmlDType::F32)
}

/// The GGML type of one tensor under `quant`.
pub fn tensor_type(quant: GgufQuant, t: &TensorRole) -> GgmlDType {
    // Norms, biases and LFM2's short convolution kernels stay F32 (as llama.cpp keeps them).
    if t.shape.len() < 2 || t.name.contains("shortconv.conv") {
        return GgmlDType::F32;
    }
    let row = t.shape[t.shape.len() - 1];
    let want = match quant {
        GgufQuant::F32 => GgmlDType::F32,
        GgufQuant::F16 => GgmlDType::F16,
        GgufQuant::BF16 => GgmlDType::BF16,
        GgufQuant::Q8_0 => GgmlDType::Q8_0,
        GgufQuant::Q4_0 => GgmlDType::Q4_0,
        GgufQuant::Q4_1 => GgmlDType::Q4_1,
        GgufQuant::Q6K => GgmlDType::Q6K,
        GgufQuant::Q4KM => {
            let is_output =
                t.name == "output.weight" || (!t.has_output && t.name == "token_embd.weight");
            let more_bits = (t.name.ends_with("attn_v.weight")
                || t.name.ends_with("ffn_down.weight"))
                && t.position.is_some_and(|(i, n)| use_more_bits(i, n));
            if is_output || more_bits {
                GgmlDType::Q6K
            } else {
                GgmlDType::Q4K
            }
        }
    };
    fit(want, row)
}

/// llama.cpp's name of a GGML type (for messages and the test script).
pub fn type_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// GGML types candle's reader does not know, by number (ggml.h's `ggml_type`).
const UNREADABLE: &[(u32, &str)] = &[
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

/// The types a GGUF file's tensors may have for import.
pub const READABLE: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// llama.cpp's name of GGML type number `n`, for the types that cannot be read.
pub fn unreadable_type_name(n: u32) -> String {
    UNREADABLE
        .iter()
        .find(|(k, _)| *k == n)
        .map_or_else(|| format!("type {n}"), |(_, name)| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(
        quant: GgufQuant,
        name: &str,
        shape: &[usize],
        position: Option<(usize, usize)>,
    ) -> &'static str {
        type_name(tensor_type(
            quant,
            &TensorRole {
                name,
                shape,
                has_output: false,
                position,
            },
        ))
    }

    #[test]
    fn q4_k_m_gives_more_bits_where_llama_cpp_does_and_falls_back_on_narrow_rows() {
        let q = GgufQuant::Q4KM;
        let wide = [2048, 2048];
        // 28 layers: the first and last eighth (0..3, 24..28) and every third from layer 3 + 2.
        let more: Vec<usize> = (0..28)
            .filter(|i| ty(q, "blk.0.ffn_down.weight", &wide, Some((*i, 28))) == "Q6_K")
            .collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]
        );
        assert_eq!(ty(q, "blk.4.attn_q.weight", &wide, Some((4, 28))), "Q4_K");
        // Tied embeddings: the embedding is the output layer.
        assert_eq!(ty(q, "token_embd.weight", &wide, None), "Q6_K");
        // Rows of 64 do not divide into 256-blocks: Q4_K → Q5_0, Q6_K → Q8_0.
        assert_eq!(
            ty(q, "blk.4.attn_q.weight", &[64, 64], Some((4, 28))),
            "Q5_0"
        );
        assert_eq!(
            ty(GgufQuant::Q6K, "blk.4.attn_q.weight", &[64, 64], None),
            "Q8_0"
        );
        // Rows of 48 do not divide into 32-blocks either: F16.
        assert_eq!(
            ty(GgufQuant::Q4_0, "blk.4.attn_q.weight", &[64, 48], None),
            "F16"
        );
        // Norms and the short-convolution kernel stay F32.
        assert_eq!(
            ty(GgufQuant::Q8_0, "blk.0.attn_norm.weight", &[2048], None),
            "F32"
        );
        assert_eq!(
            ty(
                GgufQuant::F16,
                "blk.0.shortconv.conv.weight",
                &[2048, 3],
                None
            ),
            "F32"
        );
        assert_eq!(
            ty(GgufQuant::BF16, "blk.0.ffn_up.weight", &wide, None),
            "BF16"
        );
    }

    #[test]
    fn quant_names_parse_case_insensitively_and_unknown_ones_are_listed() {
        assert_eq!("q4_k_m".parse::<GgufQuant>().ok(), Some(GgufQuant::Q4KM));
        assert_eq!(GgufQuant::Q4KM.name(), "Q4_K_M");
        assert_eq!(GgufQuant::Q4_1.file_type(), 3);
        let e = "Q5_K_S".parse::<GgufQuant>().unwrap_err().to_string();
        assert!(e.contains("Q5_K_S") && e.contains("F32, F16, BF16"), "{e}");
    }
}
