#!/usr/bin/env bash
# The test command: installs the interop toolchain (Node 22, the official MCP TypeScript SDK,
# the conformance package, oidc-provider and playwright-core, pinned in
# tests/interop/package-lock.json) into .interop/ when it is missing or stale, then runs every
# test of the workspace with every feature (all test binaries run even when an earlier one
# fails). Needs npm once (apt-get install npm); later runs work offline. The real-browser test
# (tests/browser_chromium.rs: a local password user, and a user signing in at an upstream
# oidc-provider) needs Debian's Chromium at /usr/bin/chromium: installed here with apt-get when
# missing and this runs as root; otherwise that test says why it cannot run.
#
#   ./scripts/test.sh                     # everything
#   ./scripts/test.sh --test interop_ts_sdk -- --nocapture   # extra arguments go to cargo test
#
# Tests that need PostgreSQL or Redis read MCP_OAUTH_TEST_POSTGRES_URL / MCP_OAUTH_TEST_REDIS_URL
# (.ci/run starts both and sets them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/interop-setup.sh"
if ! [ -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing Debian's chromium for the real-browser test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "test.sh: could not install chromium; tests/browser_chromium.rs will say so" >&2
fi
exec cargo test --workspace --all-features --no-fail-fast "$@"
