#!/usr/bin/env bash
# Python packages the tests run (from PyPI), each in its own project-local folder under
# .native/pytools, installed once:
#   gguf-site/  llama.cpp's `gguf` package: reads and dequantizes the GGUF files we write.
#   tensorboard-site/  TensorBoard itself: its EventAccumulator reads our event files.
#   prometheus-site/  prometheus_client: its parser reads our /metrics exposition.
#   openai-site/  the OpenAI Python SDK, unchanged, against our OpenAI-compatible routes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools="$PWD/.native/pytools"
if [ ! -f "$tools/.gguf-ok" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$tools/gguf-site" 'gguf==0.19.0' >/dev/null
  touch "$tools/.gguf-ok"
fi
if [ ! -f "$tools/.tensorboard-ok" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$tools/tensorboard-site" 'tensorboard==2.20.0' >/dev/null
  touch "$tools/.tensorboard-ok"
fi
if [ ! -f "$tools/.prometheus-ok" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$tools/prometheus-site" 'prometheus_client==0.23.1' >/dev/null
  touch "$tools/.prometheus-ok"
fi
if [ ! -f "$tools/.openai-ok" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$tools/openai-site" 'openai==2.8.1' >/dev/null
  touch "$tools/.openai-ok"
fi
