#!/usr/bin/env bash
# The JavaScript tests, each against a real `mlxtune serve` (target/debug/mlxtune):
#   clients/typescript  the TypeScript client: tsc, generated types current, node --test
#   tests/browser       the dashboard in Debian's Chromium, headless, via playwright-core
# Installs what is missing: Debian's chromium (and nodejs/npm if there is no node), npm
# packages with `npm ci` into each folder's node_modules (git-ignored). Screenshots land in
# target/browser-artifacts/. MLXTUNE_BIN=<binary> skips the build and tests that binary.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
say() { printf 'test-js: %s\n' "$*" >&2; }

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# npm ci only when package-lock.json changed since the last install.
install() {
  local dir=$1 stamp sum
  stamp="$dir/node_modules/.mlxtune-lock-sha256"
  sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    say "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$sum" > "$stamp"
  fi
}
install clients/typescript
install tests/browser

# MLXTUNE_BIN=/path/to/mlxtune tests that binary instead of building one.
if [ -z "${MLXTUNE_BIN:-}" ]; then
  cargo build -q -p mlxtune-cli
  export MLXTUNE_BIN="$root/target/debug/mlxtune"
fi
export ARTIFACTS="$root/target/browser-artifacts"
mkdir -p "$ARTIFACTS"

# Each step runs even if an earlier one failed; any failure fails the script. (`set -e` does
# not apply inside a command whose status is tested, hence the explicit checks.)
status=0
step() { "$@" || { say "FAILED: $*"; status=1; }; }
say "TypeScript client"
cd "$root/clients/typescript"
rm -rf dist
step node_modules/.bin/tsc -p .
step node_modules/.bin/tsc -p tsconfig.examples.json   # docs/clients.md's usage, type-checked
step node scripts/openapi.mjs --check
step node --test --test-concurrency=1 test/
say "dashboard in Chromium (screenshots: $ARTIFACTS)"
cd "$root/tests/browser"
step node --test --test-concurrency=1 .
exit $status
