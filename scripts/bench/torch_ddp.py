"""PyTorch DDP baseline for data-parallel fine-tuning: the LFM2-1.2B shape of
../shared/bench/torch_baseline.py (imported from beside this file or from BASELINE_DIR),
bf16, `batch` x `seq` random tokens per GPU, AdamW, LoRA r16 (PEFT, all-linear) or full.
Run under torchrun (one process per GPU):
    torchrun --standalone --nproc_per_node N torch_ddp.py lora|full [batch] [seq]
Rank 0 prints one JSON line: the whole group's tokens/s."""
import json, os, sys, time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.environ.get("BASELINE_DIR", os.path.dirname(os.path.abspath(__file__))))
from torch_baseline import lfm2_1p2b, model_flops_per_token  # noqa: E402
from transformers import Lfm2ForCausalLM  # noqa: E402


def main(mode, batch, seq, steps=5, warm=2):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(local)
    torch.manual_seed(0)
    cfg = lfm2_1p2b()
    cfg._attn_implementation = "sdpa"
    model = Lfm2ForCausalLM(cfg).to("cuda", dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    if mode == "lora":
        from peft import LoraConfig, get_peft_model
        lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                          target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    ddp = DDP(model, device_ids=[local])
    params = [p for p in ddp.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    g = torch.Generator(device="cuda").manual_seed(1 + rank)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda", generator=g)

    def step():
        out = ddp(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    for _ in range(warm):
        step()
    torch.cuda.synchronize()
    dist.barrier()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    tok_s = batch * seq * world / dt
    n_attn = sum(1 for t_ in cfg.layer_types if t_ == "full_attention")
    fpt = model_flops_per_token(n_params, 0 if mode == "full" else 1, seq, n_attn, cfg.hidden_size)
    if rank == 0:
        print(json.dumps(dict(impl="torch-ddp", mode=mode, ranks=world, batch_per_rank=batch,
                              seq=seq, tokens_per_s=round(tok_s), step_s=round(dt, 4),
                              peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                              tflops=round(fpt * tok_s / 1e12, 1), loss=float(loss),
                              torch=torch.__version__)), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "lora"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    seq = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
    main(mode, batch, seq)
