#!/usr/bin/env bash
# Data-parallel proof on a two-GPU machine (docs/benchmarks.md, "Data-parallel training"):
# call 1 is `scripts/cuda/on-device.sh stash` (carrying .device/a), call 2 this script
# (carrying .device/b, packed by scripts/cuda/pack.sh with torch_baseline.py and
# scripts/bench/torch_ddp.py in .device/b/bench/). In one call:
#   1. NCCL correctness: `mlxtune launch -n 2 --backend nccl -- train` on the LFM2 fixture
#      against one process with the same global batch (strict f32), losses side by side;
#   2. `mlxtune bench train` (LFM2-1.2B shape, bf16, 8 x 2048 per GPU) on 1 GPU and under
#      `mlxtune launch -n 2`, LoRA and full;
#   3. PyTorch DDP (torchrun, 1 and 2 processes) on the same shapes.
# NVLink multicast stays off (the machine requires it).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rt=/tmp/mlx-cuda
out=${OUT:-/tmp/out}
mkdir -p "$rt/mlx/lib" "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
cat /tmp/libmlx.part-a "$root/.device/b/libmlx.part-b" | xz -d > "$rt/mlx/lib/libmlx.so"
tar -C "$rt" -xJf "$root/.device/b/runtime.tar.xz"
tar -C "$rt" -xJf "$root/.device/b/bin.tar.xz"
nv=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$rt/mlx/lib:$rt/mlx_cuda_13.libs:$nv${LD_LIBRARY_PATH:-}"
bin="$rt/bin/mlxtune"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
nvidia-smi topo -m | tee -a "$out/gpu.txt"

echo "== 1. NCCL: 2 ranks vs 1 process, LFM2 fixture, strict f32"
work=$(mktemp -d)
python3 - "$root/tests/fixtures/models/lfm2" "$work" <<'EOF'
import json, sys
model, work = sys.argv[1], sys.argv[2]
pairs = [("Say fox.", "The quick brown fox."), ("Say dog.", "The lazy dog."),
         ("Say box.", "Pack my box with five dozen jugs."), ("Say vow.", "Judge my vow."),
         ("Say cat.", "A cat sat on the mat today."), ("Say sun.", "The sun is up.")]
with open(f"{work}/train.jsonl", "w") as f:
    for u, a in pairs:
        f.write(json.dumps({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}) + "\n")
json.dump({"baseModel": model, "dataset": {"trainingData": f"{work}/train.jsonl", "format": "chat"},
           "parameters": {"learningRate": 3e-3, "batchSize": 4, "epochs": 3, "sequenceLength": 128, "loraRank": 4},
           "optimization": {"mixedPrecision": "fp32"}}, open(f"{work}/job.json", "w"))
EOF
export NVIDIA_TF32_OVERRIDE=0
timeout 120 "$bin" train --config "$work/job.json" --output "$work/one" --json > "$out/nccl-one.log" 2>&1
timeout 120 "$bin" launch -n 2 --backend nccl -- train --config "$work/job.json" --output "$work/two" --json > "$out/nccl-two.log" 2>&1
echo "launch exit: $?"
unset NVIDIA_TF32_OVERRIDE
python3 - "$work" <<'EOF' | tee "$out/nccl-losses.txt"
import json, sys
w = sys.argv[1]
read = lambda d: [json.loads(l)["loss"] for l in open(f"{w}/{d}/metrics.jsonl")]
try:
    a, b = read("one"), read("two")
    for i, (x, y) in enumerate(zip(a, b)):
        print(f"step {i+1}: one process {x:.7f}  two ranks {y:.7f}  |diff| {abs(x-y):.2e}")
    print("max |diff|", max(abs(x - y) for x, y in zip(a, b)), "steps", len(a), len(b))
except Exception as e:
    print("no comparison:", e)
EOF

echo "== 2. mlxtune bench train, LFM2-1.2B shape, bf16, 8 x 2048 per GPU"
for t in lora full; do
  args=(bench train --shape lfm2-1.2b --precision bf16 --type "$t" --batch 8 --seq 2048 --steps 5 --warmup 2 --json)
  timeout 150 "$bin" "${args[@]}" 2>&1 | tail -1 | tee -a "$out/dp-bench.jsonl"
  timeout 150 "$bin" launch -n 2 --backend nccl -- "${args[@]}" 2>&1 | tail -1 | tee -a "$out/dp-bench.jsonl"
done

echo "== 3. PyTorch DDP (torchrun), same shapes"
export BASELINE_DIR="$root/.device/b/bench"
for t in lora full; do
  for n in 1 2; do
    timeout 150 python3 -m torch.distributed.run --standalone --nproc_per_node "$n" "$root/.device/b/bench/torch_ddp.py" "$t" 8 2048 2>&1 \
      | grep -E '^\{|Error' | tee -a "$out/torch-ddp.jsonl"
  done
done
echo "== done"
