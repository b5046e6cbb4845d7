"""Groups an Nsight Compute kernel list (ncu --csv --page raw --print-units base, with
gpu__time_duration.sum and launch__grid_size) of one training step into the step's parts
and prints a table (markdown) plus the heaviest kernels.  Usage: ncu_groups.py FILE.csv [STEPS]"""
import csv, gzip, re, sys
from collections import defaultdict

# (group, pattern on the kernel name), first match wins; names are MLX's CUDA kernels,
# MLX-compiled (JIT) kernels named after the primitives they fuse, cuBLASLt and cuDNN.
GROUPS = [
    ("attention (cuDNN SDPA fwd+bwd)", r"sdpa|fmha|flash|cudnn"),
    ("matmul, LoRA rank-16 side (skinny tiles, split-K)",
     r"nvjet\w*?_tst_(16|32)x\d+_|nvjet\w*?_tst_\d+x(16|32)_|splitK"),
    ("matmul, base projections + output layer (cuBLASLt)", r"gemm|nvjet|xmma|cutlass|cublas"),
    ("SwiGLU (our fused kernels)", r"mlxtune_swiglu"),
    ("LFM2 gated short conv (our fused kernels)", r"mlxtune_short_conv"),
    ("cross-entropy (MLX fused)", r"cross_entropy|logsumexp|softmax"),
    ("RMSNorm fwd+bwd (MLX fused)", r"rms_norm|rmsnorm|layer_norm"),
    ("rotary embedding (MLX fused)", r"rope"),
    ("AdamW update + grad norm (compiled)", r"Sqrt|Rsqrt"),
    ("SwiGLU unfused (sigmoid, compiled backward)", r"Sigmoid|Logistic|Subtract"),
    ("LoRA scale + add (compiled elementwise)", r"BroadcastCEV2IMultiplyBDFV2OAdd|BroadcastADV2OMultiplyCB"),
    ("other compiled elementwise (residual adds, conv taps, gates)", r"mlx::[A-Z]+V2I"),
    ("element-wise products / sums (unfused)", r"binary|unary|ternary"),
    ("reductions (weight grads, norms)", r"reduce"),
    ("copies / concatenation / slices", r"copy|concat|slice|fill"),
    ("gather / scatter (embedding)", r"gather|scatter"),
]

def rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    r = list(csv.reader(lines))
    head, body = r[0], r[1:]
    if body and not body[0][0].strip().isdigit():  # units row
        body = body[1:]
    name = head.index("Kernel Name")
    dur = head.index("gpu__time_duration.sum")
    grid = head.index("launch__grid_size") if "launch__grid_size" in head else None
    for b in body:
        try:
            num = lambda v: float(v.replace(",", ""))  # ncu prints thousands separators
            yield b[name], num(b[dur]), (int(num(b[grid])) if grid is not None and b[grid] else 0)
        except ValueError:
            continue

def group_of(name):
    for g, pat in GROUPS:
        if re.search(pat, name):
            return g
    return "other"

def main():
    path, steps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1
    total, groups, kernels = 0.0, defaultdict(lambda: [0.0, 0]), defaultdict(lambda: [0.0, 0, 0])
    for name, ns, grid in rows(path):
        g = group_of(name)
        total += ns
        groups[g][0] += ns; groups[g][1] += 1
        k = kernels[name[:140]]; k[0] += ns; k[1] += 1; k[2] = max(k[2], grid)
    print(f"kernels: {sum(v[1] for v in groups.values())}, GPU time per step: {total/steps/1e6:.2f} ms")
    print("| part of the step | ms / step | share | kernels / step |\n|---|---|---|---|")
    for g, (ns, n) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        print(f"| {g} | {ns/steps/1e6:.2f} | {100*ns/total:.1f}% | {n//steps} |")
    print("\nheaviest kernels (ms/step, count/step, max grid):")
    for name, (ns, n, grid) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:40]:
        print(f"{ns/steps/1e6:8.2f} {n//steps:5d} {grid:7d}  {name}")

if __name__ == "__main__":
    main()
