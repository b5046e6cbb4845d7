#!/usr/bin/env bash
# Runs on the GPU machine (see docs/cuda.md).
#   on-device.sh stash   call 1: keep part a of libmlx in /tmp
#   on-device.sh test    call 2: assemble the runtime, run the model tests (f32 and bf16)
#                        on CUDA, the matmul bench, and write logs to $OUT
#   on-device.sh mlxlm   call 2 instead: the training tests in strict f32, and mlx-lm's
#                        benchmark (Python MLX on the same runtime; wheels in .device/b/whl)
#   on-device.sh bench   call 2 instead: the training tests on CUDA (strict f32), then
#                        `mlxtune bench train` on the LFM2-1.2B shape and, in the same run,
#                        PyTorch's baseline (unless NO_TORCH=1) and mlx-lm's (WITH_MLXLM=1,
#                        wheels in .device/b/whl). SKIP_TESTS=1 skips the tests;
#                        BENCH_CONFIGS="args;args" picks our configurations.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rt=/tmp/mlx-cuda
case "${1:-}" in
  stash)
    cp "$root/.device/a/libmlx.part-a" /tmp/libmlx.part-a
    echo "stashed $(du -h /tmp/libmlx.part-a | cut -f1)"
    ;;
  test|bench|mlxlm)
    mkdir -p "$rt/mlx/lib"
    cat /tmp/libmlx.part-a "$root/.device/b/libmlx.part-b" | xz -d > "$rt/mlx/lib/libmlx.so"
    tar -C "$rt" -xJf "$root/.device/b/runtime.tar.xz"
    tar -C "$rt" -xJf "$root/.device/b/bin.tar.xz"
    nv=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' ':')
    export LD_LIBRARY_PATH="$rt/mlx/lib:$rt/mlx_cuda_13.libs:$nv${LD_LIBRARY_PATH:-}"
    export MLXTUNE_FIXTURES="$root/tests/fixtures/models"
    out=${OUT:-/tmp/out}
    mkdir -p "$out"
    mlxlm_bench() {
      site=/tmp/mlxsite
      python3 -m pip install -q --no-index --no-deps --target "$site" "$root"/.device/b/whl/*.whl
      mkdir -p "$site/mlx/lib"
      ln -sf "$rt/mlx/lib/libmlx.so" "$site/mlx/lib/libmlx.so"
      ln -sfn "$rt/mlx/include" "$site/mlx/include"
      ln -sfn "$rt/mlx_cuda_13.libs" "$site/mlx_cuda_13.libs"
      echo "== mlx-lm (Python MLX, same libmlx) on the same card"
      PYTHONPATH="$site" timeout 330 python3 "$root/.device/b/bench/mlxlm_bench.py" 2>&1 | tee "$out/mlxlm-bench.log" | grep -E "^\{|Error" || true
    }
    if [ "$1" = mlxlm ]; then
      echo "== training tests on CUDA, strict f32 (NVIDIA_TF32_OVERRIDE=0)"
      NVIDIA_TF32_OVERRIDE=0 "$rt/bin/training" --test-threads 1 2>&1 | tee "$out/training-strict-f32.log" | grep -E "^test |test result|panicked" || true
      mlxlm_bench
      exit 0
    fi
    if [ "$1" = bench ]; then
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
      if [ -z "${SKIP_TESTS:-}" ]; then
        echo "== training tests on CUDA, strict f32 (NVIDIA_TF32_OVERRIDE=0)"
        NVIDIA_TF32_OVERRIDE=0 "$rt/bin/training" --test-threads 1 2>&1 | tee "$out/training-strict-f32.log" | grep -E "^test |test result|panicked" || true
      fi
      echo "== mlxtune bench train (LFM2-1.2B shape, bf16)"
      configs=${BENCH_CONFIGS:-"--type lora --batch 8 --seq 2048;--type lora --batch 8 --seq 2048 --grad-checkpoint;--type full --batch 8 --seq 2048;--type lora --batch 4 --seq 1024"}
      IFS=';' read -ra list <<< "$configs"
      for args in "${list[@]}"; do
        # Leading VAR=value words are environment for that run (e.g. MLX_MAX_OPS_PER_BUFFER=4).
        read -ra words <<< "$args"; envs=(); rest=()
        for w in "${words[@]}"; do
          if [ ${#rest[@]} -eq 0 ] && [[ "$w" == *=* ]]; then envs+=("$w"); else rest+=("$w"); fi
        done
        [ ${#envs[@]} -gt 0 ] && echo "{\"env\": \"${envs[*]}\"}" | tee -a "$out/bench-train.jsonl"
        timeout 150 env "${envs[@]}" "$rt/bin/mlxtune" bench train --shape lfm2-1.2b --precision bf16 \
          --steps 5 --warmup 2 --peak-tflops 989 --json "${rest[@]}" 2>&1 | tail -1 | tee -a "$out/bench-train.jsonl"
      done
      if [ -n "${WITH_MLXLM:-}" ]; then mlxlm_bench; fi
      if [ -n "${WITH_MLXLM_TUNED:-}" ]; then
        # mlx-lm again with the MLX scheduling settings mlxtune applies on CUDA.
        cp "$out/mlxlm-bench.log" "$out/mlxlm-bench-default.log" 2>/dev/null || true
        MLX_MAX_OPS_PER_BUFFER=2 MLX_BFS_MAX_WIDTH=1 mlxlm_bench
        mv "$out/mlxlm-bench.log" "$out/mlxlm-bench-tuned.log"
      fi
      if [ -n "${WITH_TRAINJOB:-}" ]; then
        echo "== real jobs: mlxtune train on a random LFM2-1.2B directory (scripts/bench/train_job.sh)"
        for extra in ${TRAINJOB_EXTRAS:-'{}' '{"optimization":{"gradientCheckpointing":true}}' '{"fineTuneType":"full"}'}; do
          EXTRA="$extra" MLXTUNE_BIN="$rt/bin/mlxtune" timeout 200 bash "$root/scripts/bench/train_job.sh" 2>&1 | tail -1 | tee -a "$out/train-job.jsonl"
        done
      fi
      if [ -n "${WITH_WSLOAD:-}" ]; then
        echo "== 1,000 WebSocket clients on one training job (scripts/bench/ws_load.sh)"
        STEPS=1500 MLXTUNE_BIN="$rt/bin/mlxtune" WS_CLIENTS_BIN="$rt/bin/ws_clients" timeout 240 \
          bash "$root/scripts/bench/ws_load.sh" 2>&1 | tee "$out/ws-load.jsonl" | grep "^{" || true
      fi
      if [ -z "${NO_TORCH:-}" ] && [ -f "$root/.device/b/bench/torch_baseline.py" ]; then
        echo "== PyTorch + PEFT baseline, same card"
        timeout 240 python3 "$root/.device/b/bench/torch_baseline.py" 2>&1 | grep "^{" | tee "$out/torch-baseline.jsonl" || true
      fi
      exit 0
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    "$rt/bin/mlxtune" info --json | tee "$out/info.json"
    status=0
    # MLX's CUDA backend runs float32 matmuls on TF32 tensor cores (about 10 bits of
    # mantissa); NVIDIA_TF32_OVERRIDE=0 makes cuBLAS/cuDNN compute in full f32, which is
    # what the 1e-4 fidelity bound is about. bf16 runs are unaffected by it.
    for t in fidelity loading; do
      echo "== $t (CUDA, strict f32 + bf16)"
      NVIDIA_TF32_OVERRIDE=0 MLXTUNE_TEST_DTYPES=f32,bf16 "$rt/bin/$t" --test-threads 1 2>&1 | tee "$out/$t.log" | grep -E "^test |test result|panicked|diff" || status=1
    done
    echo "== fidelity with MLX's default TF32 float32 matmuls (expected to miss 1e-4; recorded)"
    MLXTUNE_TEST_DTYPES=f32 "$rt/bin/fidelity" --test-threads 1 2>&1 | tee "$out/fidelity-tf32.log" | grep -E "test result|diff|loss" || true
    for n in 1024 4096 8192; do
      for d in f32 bf16; do
        "$rt/bin/mlxtune" bench matmul --size $n --dtype $d --iters 20 --json | tee -a "$out/bench.jsonl"
      done
    done
    "$rt/bin/mlxtune" generate --model "$MLXTUNE_FIXTURES/lfm2" --prompt "The quick brown fox" --max-tokens 16 --json | tee "$out/generate.json"
    exit $status
    ;;
  *) echo "usage: on-device.sh stash|test" >&2; exit 2 ;;
esac
