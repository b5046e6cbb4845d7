#!/usr/bin/env bash
# Builds mlxtune for MLX's CUDA backend here (no GPU needed) and packs everything the
# GPU machine needs into .device/ (git-ignored), in pieces that fit the device tool's
# 64 MiB per call:
#   .device/a/libmlx.part-a      first ~40 MB of xz(libmlx.so)     -> call 1
#   .device/b/libmlx.part-b      the rest                           -> call 2
#   .device/b/runtime.tar.xz     mlx/include, mlx/share, mlx_cuda_13.libs
#   .device/b/bin.tar.xz         mlxtune + the engine's test binaries
# Then see docs/cuda.md for the two device calls (scripts/cuda/on-device.sh runs there).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
MLXTUNE_BACKEND=cuda ./scripts/setup.sh
export MLXTUNE_BACKEND=cuda CARGO_TARGET_DIR="$root/target/cuda"
cargo test --release --no-run -q -p mlxtune-engine -p mlxtune-cli 2>/dev/null
cargo build --release -q -p mlxtune-cli
cargo build --release -q -p mlxtune-server --example ws_clients
prefix="$root/.native/mlx-cuda"
rm -rf .device && mkdir -p .device/a .device/b
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
xz -T2 -9 -c "$prefix/mlx/lib/libmlx.so" > "$stage/libmlx.so.xz"
split -b 40000000 -a 1 "$stage/libmlx.so.xz" "$stage/part-"
mv "$stage/part-a" .device/a/libmlx.part-a
mv "$stage/part-b" .device/b/libmlx.part-b
tar -C "$prefix" -cJf .device/b/runtime.tar.xz mlx/include mlx/share mlx_cuda_13.libs
mkdir -p "$stage/bin"
cp target/cuda/release/mlxtune target/cuda/release/examples/ws_clients "$stage/bin/"
for t in fidelity loading training; do
  exe=$(ls -t target/cuda/release/deps/$t-* | grep -v '\.d$' | head -1)
  cp "$exe" "$stage/bin/$t"
done
strip "$stage/bin/"*
tar -C "$stage" -cJf .device/b/bin.tar.xz bin
# The baselines measured in the same run (../shared/bench of the developers' checkout).
if [ -d "$root/../shared/bench" ]; then
  mkdir -p .device/b/bench && cp "$root"/../shared/bench/*.py .device/b/bench/
fi
du -sh .device/a .device/b
