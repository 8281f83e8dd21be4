#!/usr/bin/env bash
# The test command: installs the interop toolchain (Node 22, the official MCP TypeScript SDK,
# the conformance package, oidc-provider and playwright-core, pinned in
# tests/interop/package-lock.json) into .interop/ when it is missing or stale, then runs every
# test of the workspace with every feature (all test binaries run even when an earlier one
# fails). Needs npm once (apt-get install npm); later runs work offline. The real-browser test
# needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does).
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
exec cargo test --workspace --all-features --no-fail-fast "$@"
