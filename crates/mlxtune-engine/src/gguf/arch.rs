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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::forward::rope_freqs;
    use crate::models::spec::LLAMA_NAMES;

    fn llama3_spec() -> ModelSpec {
        ModelSpec {
            model_type: "llama".into(),
            hidden_size: 2048,
            num_heads: 16,
            num_kv_heads: 8,
            head_dim: 128,
            intermediate_size: 8192,
            vocab_size: 1000,
            norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
            max_position_embeddings: 131_072,
            tie_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            layers: vec![LayerKind::Attention; 2],
            conv_l_cache: 0,
            conv_bias: false,
            names: LLAMA_NAMES,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
        }
    }

    /// llama.cpp divides each RoPE frequency by its factor; our forward pass multiplies
    /// each period by its scaling: the two must be the same numbers.
    #[test]
    fn llama3_rope_factors_are_the_forward_passs_period_scaling() {
        let spec = llama3_spec();
        let factors = rope_factors(&spec).expect("llama3 scaling");
        let periods = rope_freqs(&spec).expect("llama3 scaling");
        periods.eval().expect("eval");
        let periods = periods.as_slice::<f32>();
        assert_eq!(factors.len(), 64);
        let dim = spec.head_dim as f32;
        for (i, f) in factors.iter().enumerate() {
            let base = spec.rope_theta.powf(2.0 * i as f32 / dim);
            let scaling = periods[i] / base;
            assert!((scaling - f).abs() <= 1e-4 * f, "{i}: {scaling} vs {f}");
        }
        assert_eq!(factors[0], 1.0);
        assert_eq!(factors[63], 32.0);
        assert!(factors.iter().any(|f| *f > 1.0 && *f < 32.0));
    }
}
