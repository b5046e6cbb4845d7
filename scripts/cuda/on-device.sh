#!/usr/bin/env bash
# Runs on the GPU machine (see docs/cuda.md).
#   on-device.sh stash   call 1: keep part a of libmlx in /tmp
#   on-device.sh test    call 2: assemble the runtime, run the model tests (f32 and bf16)
#                        on CUDA, the matmul bench, and write logs to $OUT
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rt=/tmp/mlx-cuda
case "${1:-}" in
  stash)
    cp "$root/.device/a/libmlx.part-a" /tmp/libmlx.part-a
    echo "stashed $(du -h /tmp/libmlx.part-a | cut -f1)"
    ;;
  test)
    mkdir -p "$rt/mlx/lib"
    cat /tmp/libmlx.part-a "$root/.device/b/libmlx.part-b" | xz -d > "$rt/mlx/lib/libmlx.so"
    tar -C "$rt" -xJf "$root/.device/b/runtime.tar.xz"
    tar -C "$rt" -xJf "$root/.device/b/bin.tar.xz"
    nv=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' ':')
    export LD_LIBRARY_PATH="$rt/mlx/lib:$rt/mlx_cuda_13.libs:$nv${LD_LIBRARY_PATH:-}"
    export MLXTUNE_FIXTURES="$root/tests/fixtures/models"
    out=${OUT:-/tmp/out}
    mkdir -p "$out"
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
