//! The order of the trainable arrays in a step: by layer, numerically (`layers.2` before
//! `layers.10`), not by plain string order.
//!
//! The order is the order of the step's gradient outputs, and MLX schedules its evaluation
//! depth-first from the first output: a gradient listed early runs late. In string order
//! layers 10–15 of a 16-layer model sit between layers 1 and 2, so their gradient products
//! waited for layers 9 to 2's backward passes and kept those layers' `[tokens, ff]` values
//! alive meanwhile. On an H200 (LFM2-1.2B, LoRA, 8 × 2048, checkpointed) that was about 8 GiB
//! of the peak (docs/benchmarks.md, fifth round).

use std::cmp::Ordering;

use crate::weights::Weights;

/// The names of `trainable` in layer order.
pub fn layer_order(trainable: &Weights) -> Vec<String> {
    let mut names: Vec<String> = trainable.keys().cloned().collect();
    names.sort_by(|a, b| compare(a, b));
    names
}

/// Compares dotted names part by part: numbers by value (before words at the same place),
/// words as strings.
pub fn compare(a: &str, b: &str) -> Ordering {
    key(a).cmp(&key(b))
}

fn key(name: &str) -> Vec<(u64, &str)> {
    name.split('.')
        .map(|s| (s.parse::<u64>().unwrap_or(u64::MAX), s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn layers_sort_by_number() {
        let mut names = vec![
            "model.layers.10.mlp.lora_a",
            "model.layers.2.mlp.lora_b",
            "model.layers.2.mlp.lora_a",
            "model.layers.1.self_attn.q_proj.lora_a",
            "model.embed_tokens.weight",
            "lm_head.weight",
        ];
        names.sort_by(|a, b| compare(a, b));
        assert_eq!(
            names,
            [
                "lm_head.weight",
                "model.embed_tokens.weight",
                "model.layers.1.self_attn.q_proj.lora_a",
                "model.layers.2.mlp.lora_a",
                "model.layers.2.mlp.lora_b",
                "model.layers.10.mlp.lora_a",
            ]
        );
    }

    #[test]
    fn leading_zeros_keep_a_total_order() {
        assert_eq!(compare("layers.01", "layers.1"), std::cmp::Ordering::Less);
        assert_eq!(compare("layers.1", "layers.1"), std::cmp::Ordering::Equal);
    }
}
