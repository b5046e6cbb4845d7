"""PyTorch (+ PEFT for LoRA) training throughput on the CPU, on the same shapes as
`mlxtune bench train --shape llama-20m|lfm2-20m` (random weights, f32, AdamW).
Prints one JSON line per configuration. Run by scripts/bench/cpu_train.sh."""
import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Lfm2Config, Lfm2ForCausalLM


def shape(name):
    if name == "llama-20m":
        cfg = LlamaConfig(hidden_size=256, intermediate_size=704, num_hidden_layers=8,
                          num_attention_heads=8, num_key_value_heads=4, vocab_size=32000,
                          rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096,
                          tie_word_embeddings=False)
        return cfg, LlamaForCausalLM
    if name == "lfm2-20m":
        attn = {2, 5, 7}
        cfg = Lfm2Config(vocab_size=32000, hidden_size=256, intermediate_size=1536,
                         num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                         layer_types=["full_attention" if i in attn else "conv" for i in range(8)],
                         rope_theta=1000000.0, block_auto_adjust_ff_dim=True,
                         block_ffn_dim_multiplier=1.0, block_multiple_of=256, conv_L_cache=3,
                         tie_word_embeddings=True, norm_eps=1e-5, max_position_embeddings=128000)
        return cfg, Lfm2ForCausalLM
    raise SystemExit(f"unknown shape {name}")


def run(name, mode, batch, seq, steps, warm):
    torch.manual_seed(0)
    cfg, cls = shape(name)
    cfg._attn_implementation = "sdpa"
    model = cls(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    if mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    for _ in range(warm):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    dt = (time.perf_counter() - t) / steps
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(impl="pytorch", shape=name, mode=mode, batch=batch, seq=seq,
                          params=n_params, trainable=sum(p.numel() for p in params),
                          tokens_per_second=batch * seq / dt, step_seconds=dt,
                          peak_rss_bytes=rss, threads=torch.get_num_threads(),
                          torch=torch.__version__, loss=loss)), flush=True)


if __name__ == "__main__":
    name, mode, batch, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    run(name, mode, batch, seq, steps, warm=2)
