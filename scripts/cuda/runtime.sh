# Sourced on the GPU machine by the call-2 scripts (profile.sh, kernels.sh, peers.sh):
# joins libmlx from /tmp/libmlx.part-a (call 1, `on-device.sh stash`) and .device/b, unpacks
# the runtime and binaries into $rt once, and sets LD_LIBRARY_PATH (as on-device.sh does).
# Sourced from a command line (`source scripts/cuda/runtime.sh`), it finds the checkout itself.
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
rt=/tmp/mlx-cuda
if [ ! -f "$rt/.ready" ]; then
  mkdir -p "$rt/mlx/lib"
  cat /tmp/libmlx.part-a "$root/.device/b/libmlx.part-b" | xz -d > "$rt/mlx/lib/libmlx.so" &&
    tar -C "$rt" -xJf "$root/.device/b/runtime.tar.xz" && touch "$rt/.ready"
fi
# Once per bin.tar.xz: scripts sourcing this at once (matrix.sh) must not rewrite a running binary.
if [ ! "$rt/.bin" -nt "$root/.device/b/bin.tar.xz" ]; then
  tar -C "$rt" -xJf "$root/.device/b/bin.tar.xz" && touch "$rt/.bin"
fi
nv=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$rt/mlx/lib:$rt/mlx_cuda_13.libs:$nv${LD_LIBRARY_PATH:-}"
export MLXTUNE_FIXTURES="$root/tests/fixtures/models"

# For the LoRA-step scripts (remat.sh, memory.sh): $out with the GPU's name in gpu.txt, and
# the benchmark's common arguments.
lora_step_setup() {
  out=${OUT:-/tmp/out}; mkdir -p "$out"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
  bench="bench train --shape lfm2-1.2b --precision bf16 --type lora --compile --peak-tflops 989 --json"
}

# The training-step and kernel tests on CUDA in strict f32 (logs in $out), unless SKIP_TESTS=1.
step_tests() {
  [ -n "${SKIP_TESTS:-}" ] && return 0
  for t in train_step kernels; do
    [ -x "$rt/bin/$t" ] || continue
    NVIDIA_TF32_OVERRIDE=0 "$rt/bin/$t" --test-threads 1 2>&1 | tee "$out/$t.log" | grep -E "test result|panicked" || true
  done
}
