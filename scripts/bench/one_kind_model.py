#!/usr/bin/env python3
# Usage: one_kind_model.py attention|conv OUT HIDDEN LAYERS FF VOCAB (torch + safetensors, else MLX).
# Writes an LFM2 model directory with random bf16 weights whose layers are all of one kind.
import json, os, sys
kind, out, H, L, F, V = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
heads, kv = max(H // 64, 1), max(H // 256, 1)
hd = H // heads
try:
    import torch; from safetensors.torch import save_file
    rnd = lambda *s: (torch.randn(*s) * 0.02).to(torch.bfloat16); one = lambda n: torch.ones(n, dtype=torch.bfloat16)
except ImportError:
    import mlx.core as mx
    rnd = lambda *s: (mx.random.normal(s) * 0.02).astype(mx.bfloat16); one = lambda n: mx.ones((n,), dtype=mx.bfloat16)
    save_file = lambda w, p: mx.save_safetensors(p, w)
w = {"model.embed_tokens.weight": rnd(V, H), "model.embedding_norm.weight": one(H)}
for i in range(L):
    p = f"model.layers.{i}."
    w[p+"operator_norm.weight"] = one(H); w[p+"ffn_norm.weight"] = one(H)
    w[p+"feed_forward.w1.weight"] = rnd(F, H); w[p+"feed_forward.w3.weight"] = rnd(F, H); w[p+"feed_forward.w2.weight"] = rnd(H, F)
    if kind == "attention":
        w[p+"self_attn.q_proj.weight"] = rnd(H, H); w[p+"self_attn.k_proj.weight"] = rnd(kv*hd, H)
        w[p+"self_attn.v_proj.weight"] = rnd(kv*hd, H); w[p+"self_attn.out_proj.weight"] = rnd(H, H)
        w[p+"self_attn.q_layernorm.weight"] = one(hd); w[p+"self_attn.k_layernorm.weight"] = one(hd)
    else:
        w[p+"conv.conv.weight"] = rnd(H, 1, 3); w[p+"conv.in_proj.weight"] = rnd(3*H, H); w[p+"conv.out_proj.weight"] = rnd(H, H)
os.makedirs(out, exist_ok=True)
save_file(w, os.path.join(out, "model.safetensors"))
cfg = {"model_type": "lfm2", "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": heads,
       "num_key_value_heads": kv, "block_ff_dim": F, "block_auto_adjust_ff_dim": False, "block_multiple_of": 256,
       "layer_types": ["full_attention" if kind == "attention" else "conv"] * L, "rope_theta": 1000000.0,
       "norm_eps": 1e-5, "conv_L_cache": 3, "conv_bias": False, "vocab_size": V, "max_position_embeddings": 128000,
       "tie_embedding": True, "eos_token_id": 7}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
