#!/usr/bin/env bash
# Python packages the tests run (from PyPI), each in its own project-local folder under
# .native/pytools, installed once:
#   gguf-site/  llama.cpp's `gguf` package: reads and dequantizes the GGUF files we write.
#   tensorboard-site/  TensorBoard itself: its EventAccumulator reads our event files.
#   prometheus-site/  prometheus_client: its parser reads our /metrics exposition.
#   openai-site/  the OpenAI Python SDK, unchanged, against our OpenAI-compatible routes.
#   mlxlm-site/  mlx-lm with MLX's CPU wheels: it loads our LoRA and DoRA adapters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools="$PWD/.native/pytools"
# install NAME SPEC...: the SPECs into $tools/NAME-site, once (a stamp file marks it done).
install() {
  if [ ! -f "$tools/.$1-ok" ]; then
    python3 -m pip install -q --disable-pip-version-check --target "$tools/$1-site" "${@:2}" >/dev/null
    touch "$tools/.$1-ok"
  fi
}
install gguf 'gguf==0.19.0'
install tensorboard 'tensorboard==2.20.0'
install prometheus 'prometheus_client==0.23.1'
install openai 'openai==2.8.1'
install mlxlm 'mlx-lm==0.32.2' 'mlx==0.32.2' 'mlx-cpu==0.32.2'
