#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite: formatting, lints, tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./scripts/setup.sh
# Python packages the tests run (the GGUF reader): scripts/pytools.sh.
./scripts/pytools.sh
# The PostgreSQL tests start scratch servers (scripts/pg-scratch.sh) from Debian's package.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
# The S3 tests talk to a real S3-compatible server: moto, from PyPI, in a project-local folder.
tools="$PWD/.native/pytools"
if [ ! -f "$tools/.moto-ok" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$tools/site" 'moto[server]' >/dev/null
  mkdir -p "$tools/bin"
  printf '#!/bin/sh\nPYTHONPATH="%s/site${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m moto.server "$@"\n' "$tools" > "$tools/bin/moto_server"
  chmod +x "$tools/bin/moto_server"
  touch "$tools/.moto-ok"
fi
export PATH="$tools/bin:$PATH"
cargo fmt --all --check
cargo clippy -q --workspace --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
# The dashboard in headless Chromium and the TypeScript client, against the built binary.
# The binary `cargo test` just built (a `cargo build -p mlxtune-cli` would resolve other
# features and rebuild much of the tree).
MLXTUNE_BIN="$PWD/target/debug/mlxtune" ./scripts/test-js.sh || status=$?
exit $status
