#!/usr/bin/env bash
# Runs on the GPU machine, call 2 instead of `on-device.sh bench` (docs/cuda.md): mlxtune
# and its peers in ONE call on one card — `mlxtune bench train` (LFM2-1.2B shape, bf16,
# compiled step; OURS: ';'-separated configurations, leading VAR=value words are their
# environment, BIN=name runs $rt/bin/name instead of mlxtune), mlx-lm on the same libmlx (default MLX settings, and ours
# for 8 x 2048: MLXLM_TUNED_ENV, default width 1 at MLX's 20 per graph, as our un-checkpointed step), and
# PyTorch + PEFT eager and torch.compile, at 4 x 1024, 8 x 2048 and 16 x 4096 (the last with
# gradient checkpointing for everyone: un-checkpointed it does not fit the card for the peers).
# Needs in .device/b: bench/{torch_baseline,mlxlm_bench}.py, whl/ (mlx + mlx-lm cp312).
# PARTS (default "ours mlxlm torch table") picks what runs, in that order; "jobs" adds real
# jobs (`mlxtune train` on packed data, scripts/bench/train_job.sh) with the prefetching batch
# builder on and off (JOBS: ';'-separated "BATCH SEQ" pairs, default "8 2048"; empty: none).
# Writes $OUT/{ours,jobs,mlxlm,mlxlm-tuned,torch}.jsonl and table.md (scripts/bench/peers_table.py).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/scripts/cuda/runtime.sh"
out=${OUT:-/tmp/out}; mkdir -p "$out"
bench="$root/.device/b/bench"
parts=" ${PARTS:-ours mlxlm torch table} "
has() { [[ "$parts" == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$out/gpu.txt"
lora="--type lora --compile"
OURS=${OURS:-"$lora --batch 8 --seq 2048;MLXTUNE_FUSED_KERNELS=0 $lora --batch 8 --seq 2048;$lora --batch 4 --seq 1024;$lora --batch 16 --seq 4096 --grad-checkpoint;$lora --batch 8 --seq 2048 --grad-checkpoint;--type full --compile --batch 8 --seq 2048"}
IFS=';' read -ra list <<< "$OURS"
has ours && echo "== mlxtune bench train"
has ours || list=()
for args in "${list[@]}"; do
  read -ra words <<< "$args"; envs=(); rest=()
  for w in "${words[@]}"; do
    if [ ${#rest[@]} -eq 0 ] && [[ "$w" == *=* ]]; then envs+=("$w"); else rest+=("$w"); fi
  done
  exe=mlxtune; for e in "${envs[@]}"; do [[ "$e" == BIN=* ]] && exe=${e#BIN=}; done
  line=$(timeout 150 env "${envs[@]}" "$rt/bin/$exe" bench train --shape lfm2-1.2b --precision bf16 \
    --steps 5 --warmup 2 --peak-tflops 989 --json "${rest[@]}" 2>&1 | tail -1)
  echo "{\"env\":\"${envs[*]}\",\"result\":$line}" | tee -a "$out/ours.jsonl" | cut -c1-220
done
if has jobs; then
  echo "== mlxtune train (a real job, packed rows), prefetching on and off"
  IFS=';' read -ra jobs <<< "${JOBS-8 2048}"
  for j in "${jobs[@]}"; do
    read -r b t <<< "$j"
    for pf in 1 0; do
      line=$(MLXTUNE_PREFETCH=$pf MLXTUNE_BIN="$rt/bin/mlxtune" BATCH=$b SEQ=$t timeout 150 \
        bash "$root/scripts/bench/train_job.sh" 2>"$out/job-$b-$t-$pf.log" | tail -1)
      echo "{\"prefetch\":$pf,\"result\":${line:-null}}" | tee -a "$out/jobs.jsonl" | cut -c1-220
    done
  done
fi
site=/tmp/mlxsite
# Installed once per machine (matrix.sh runs two of these scripts at once).
if has mlxlm; then
  (
    flock 9
    if [ ! -f "$site/.ready" ]; then
      python3 -m pip install -q --no-index --no-deps --target "$site" "$root"/.device/b/whl/*.whl
      mkdir -p "$site/mlx/lib"
      ln -sf "$rt/mlx/lib/libmlx.so" "$site/mlx/lib/libmlx.so"
      ln -sfn "$rt/mlx/include" "$site/mlx/include"
      ln -sfn "$rt/mlx_cuda_13.libs" "$site/mlx_cuda_13.libs"
      touch "$site/.ready"
    fi
  ) 9>/tmp/mlxsite.lock
fi
# Peer configurations: mode,batch,seq,ckpt,compile (0|1), ';'-separated; empty skips.
MLXLM=${MLXLM-"lora,4,1024,0,1;lora,8,2048,0,1;lora,16,4096,1,1"}
MLXLM_TUNED=${MLXLM_TUNED-"lora,8,2048,0,1"}
TORCH=${TORCH-"lora,8,2048,0,0;lora,8,2048,0,1;lora,4,1024,0,1;lora,4,1024,0,0;lora,16,4096,1,1;lora,16,4096,1,0;full,8,2048,0,0"}
has mlxlm || { MLXLM=""; MLXLM_TUNED=""; }
has torch || TORCH=""
if [ -n "$MLXLM" ]; then
  echo "== mlx-lm (same libmlx), MLX defaults"
  PYTHONPATH="$site" timeout ${MLXLM_TIMEOUT:-150} python3 "$root/scripts/bench/peers.py" mlxlm "$bench" \
    "$MLXLM" 2>&1 | grep "^{" | tee "$out/mlxlm.jsonl"
fi
if [ -n "$MLXLM_TUNED" ]; then
  # Ours for an un-checkpointed `train` (runtime::Scheduling): width 1, MLX's 20 per graph.
  tuned=${MLXLM_TUNED_ENV:-MLX_BFS_MAX_WIDTH=1}
  echo "== mlx-lm with mlxtune's MLX settings ($tuned)"
  env $tuned PYTHONPATH="$site" timeout ${MLXLM_TUNED_TIMEOUT:-60} python3 \
    "$root/scripts/bench/peers.py" mlxlm "$bench" "$MLXLM_TUNED" 2>&1 | grep "^{" | tee "$out/mlxlm-tuned.jsonl"
fi
if [ -n "$TORCH" ]; then
  echo "== PyTorch + PEFT, eager then torch.compile"
  PYTHONUNBUFFERED=1 timeout ${TORCH_TIMEOUT:-240} python3 "$root/scripts/bench/peers.py" torch "$bench" \
    "$TORCH" 2>&1 | grep "^{" | tee "$out/torch.jsonl"
fi
has table && python3 "$root/scripts/bench/peers_table.py" "$out" | tee "$out/table.md"
