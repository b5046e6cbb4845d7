# Sourced on the GPU machine by the call-2 scripts (profile.sh, kernels.sh, peers.sh):
# joins libmlx from /tmp/libmlx.part-a (call 1, `on-device.sh stash`) and .device/b, unpacks
# the runtime and binaries into $rt once, and sets LD_LIBRARY_PATH (as on-device.sh does).
rt=/tmp/mlx-cuda
if [ ! -f "$rt/.ready" ]; then
  mkdir -p "$rt/mlx/lib"
  cat /tmp/libmlx.part-a "$root/.device/b/libmlx.part-b" | xz -d > "$rt/mlx/lib/libmlx.so"
  tar -C "$rt" -xJf "$root/.device/b/runtime.tar.xz"
  touch "$rt/.ready"
fi
# Once per bin.tar.xz: scripts sourcing this at once (matrix.sh) must not rewrite a running binary.
if [ ! "$rt/.bin" -nt "$root/.device/b/bin.tar.xz" ]; then
  tar -C "$rt" -xJf "$root/.device/b/bin.tar.xz" && touch "$rt/.bin"
fi
nv=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$rt/mlx/lib:$rt/mlx_cuda_13.libs:$nv${LD_LIBRARY_PATH:-}"
export MLXTUNE_FIXTURES="$root/tests/fixtures/models"
