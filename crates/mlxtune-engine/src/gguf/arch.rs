//! Architecture metadata under llama.cpp's key names (`{arch}.block_count`, …), from the
//! resolved [`ModelSpec`]; and the extra `rope_freqs` tensor llama.cpp needs for Llama 3
//! RoPE scaling.

use candle_core::quantized::gguf_file::Value;

use super::names::gguf_arch;
use crate::models::spec::RopeScaling;
use crate::models::{LayerKind, ModelSpec};

/// `(key, value)` pairs of GGUF metadata.
pub type Metadata = Vec<(String, Value)>;

/// The `general.*` and `{arch}.*` keys of a model.
pub fn arch_metadata(spec: &ModelSpec, name: &str) -> Metadata {
    let arch = gguf_arch(spec);
    let k = |key: &str| format!("{arch}.{key}");
    let u = |v: i32| Value::U32(v.max(0) as u32);
    let mut m: Metadata = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(name.into())),
        (k("context_length"), u(spec.max_position_embeddings)),
        (k("embedding_length"), u(spec.hidden_size)),
        (k("block_count"), u(spec.num_layers() as i32)),
        (k("feed_forward_length"), u(spec.intermediate_size)),
        (k("attention.head_count"), u(spec.num_heads)),
        (k("attention.key_length"), u(spec.head_dim)),
        (k("attention.value_length"), u(spec.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(spec.norm_eps),
        ),
        (k("rope.freq_base"), Value::F32(spec.rope_theta)),
        (k("rope.dimension_count"), u(spec.head_dim)),
        (k("vocab_size"), u(spec.vocab_size)),
    ];
    if arch == "lfm2" {
        // One entry per layer: the attention layers' kv heads, 0 for convolutions.
        let per_layer = spec
            .layers
            .iter()
            .map(|l| match l {
                LayerKind::Attention => u(spec.num_kv_heads),
                LayerKind::Conv => Value::U32(0),
            })
            .collect();
        m.push((k("attention.head_count_kv"), Value::Array(per_layer)));
        m.push((k("shortconv.l_cache"), u(spec.conv_l_cache)));
    } else {
        m.push((k("attention.head_count_kv"), u(spec.num_kv_heads)));
    }
    if let RopeScaling::Linear { factor } = spec.rope_scaling {
        m.push((k("rope.scaling.type"), Value::String("linear".into())));
        m.push((k("rope.scaling.factor"), Value::F32(factor)));
    }
    m
}

/// llama.cpp's `rope_freqs.weight` for Llama 3 scaling: per frequency, the factor its
/// wavelength is divided by (1 for short wavelengths, `factor` for long ones, smoothly
/// between). `None` for the other schemes.
pub fn rope_factors(spec: &ModelSpec) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings: old,
    } = spec.rope_scaling
    else {
        return None;
    };
    let dim = spec.head_dim as f32;
    let low_wavelen = old / low_freq_factor;
    let high_wavelen = old / high_freq_factor;
    let factors = (0..spec.head_dim / 2)
        .map(|i| {
            let freq = 1.0 / spec.rope_theta.powf(2.0 * i as f32 / dim);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect();
    Some(factors)
}
