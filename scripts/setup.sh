#!/usr/bin/env bash
# Installs what mlxtune needs to build, idempotently; seconds when already done.
#   MLXTUNE_BACKEND=cpu (default on Linux) | cuda | metal (default on macOS)
# Nothing comes from GitHub: Debian packages, the MLX wheel from PyPI, and the
# mlx-c sources from the published mlx-sys crate on crates.io.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
native="$root/.native"
MLX_VERSION=0.32.2
MLX_SYS_CRATE=0.7.0   # ships mlx-c 0.7.0, which pins MLX 0.32.2

case "$(uname -s)" in
  Darwin) default_backend=metal ;;
  *) default_backend=cpu ;;
esac
backend=${MLXTUNE_BACKEND:-$default_backend}
case "$backend" in
  cpu) wheel=mlx-cpu ;;
  cuda) wheel=mlx-cuda-13 ;;
  metal) wheel=mlx-metal ;;
  *) echo "setup: MLXTUNE_BACKEND=$backend: expected cpu, cuda or metal" >&2; exit 2 ;;
esac

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. System packages (Debian / Ubuntu).
if [ "$(uname -s)" = Linux ] && command -v dpkg >/dev/null; then
  need=()
  dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
  dpkg -s g++ >/dev/null 2>&1 || need+=(g++)
  [ "$backend" = cpu ] && { dpkg -s libopenblas0-pthread >/dev/null 2>&1 || need+=(libopenblas0-pthread); }
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  command -v curl >/dev/null || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing Debian packages: ${need[*]}"
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install the Rust toolchain (rustup)" >&2; exit 2; }

# 2. Prebuilt MLX from PyPI, unpacked into .native/mlx-<backend>.
prefix="$native/mlx-$backend"
stamp="$prefix/.mlxtune-$wheel-$MLX_VERSION"
if [ ! -f "$stamp" ]; then
  say "fetching $wheel==$MLX_VERSION from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$wheel==$MLX_VERSION"
  rm -rf "$prefix.part"
  python3 - "$tmp" "$prefix.part" <<'PY'
import glob, os, stat, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
(whl,) = glob.glob(os.path.join(src, "*.whl"))
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        path = z.extract(info, dst)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode | stat.S_IRUSR)
PY
  rm -rf "$prefix"
  mv "$prefix.part" "$prefix"
  touch "$stamp"
fi

# 3. mlx-c sources, extracted from the published mlx-sys crate (not built from there).
if [ ! -f "$native/mlx-c/.mlxtune-$MLX_SYS_CRATE" ]; then
  say "extracting mlx-c from the mlx-sys $MLX_SYS_CRATE crate"
  tmp2=$(mktemp -d)
  mkdir -p "$tmp2/src"
  printf '[package]\nname = "mlxc-extract"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nmlx-sys = { version = "=%s", default-features = false }\n[workspace]\n' \
    "$MLX_SYS_CRATE" > "$tmp2/Cargo.toml"
  : > "$tmp2/src/lib.rs"
  (cd "$tmp2" && cargo vendor -q --respect-source-config vendor >/dev/null)
  rm -rf "$native/mlx-c"
  mkdir -p "$native"
  cp -r "$tmp2/vendor/mlx-sys/src/mlx-c" "$native/mlx-c"
  rm -rf "$tmp2"
  touch "$native/mlx-c/.mlxtune-$MLX_SYS_CRATE"
fi
