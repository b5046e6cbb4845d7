#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite: formatting, lints, tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
./scripts/setup.sh
cargo fmt --all --check
cargo clippy -q --workspace --all-targets -- -D warnings
cargo test -q --workspace 2>&1
