#!/usr/bin/env python3
"""Checks the minimum supported Rust version (MSRV) without a second toolchain.

The MSRV is stated once, as `rust-version` in the workspace's Cargo.toml. Features whose
dependencies need a newer Rust say so in `[package.metadata.msrv]` (feature = "1.NN"); the
crate docs and the feature list repeat that table. For each feature, this script resolves the
crate's normal and build dependency graph with `cargo metadata` (dev-dependencies excluded:
they are not part of what users compile) and fails when a dependency declares a
`rust-version` newer than the one promised for that feature. Clippy's `incompatible_msrv`
lint (denied in CI) covers the crate's own use of newer standard-library APIs.

    python3 scripts/msrv-check.py
"""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parent.parent
manifest = tomllib.loads((root / "Cargo.toml").read_text())
msrv = manifest["workspace"]["package"]["rust-version"]
feature_msrv = manifest["package"].get("metadata", {}).get("msrv", {})
features = [f for f in manifest["features"] if f != "default"]


def version(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def rust_versions():
    """Every package's declared rust-version, by (name, version), over every feature (an
    optional dependency no workspace member enables by default is in the graph only then)."""
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    return {(p["name"], p["version"]): p for p in json.loads(out)["packages"]}


PACKAGES = rust_versions()


def check(label, cargo_features, promised):
    # `cargo tree -p mcp-oauth` resolves the crate's features alone (cargo metadata would unify
    # them with the other workspace members', such as the proxy's `sqlite`).
    out = subprocess.run(
        ["cargo", "tree", "-p", "mcp-oauth", "--no-default-features", "--features",
         ",".join(cargo_features), "-e", "normal,build", "--prefix", "none", "--format", "{p}"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    seen = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("v"):
            seen.add((parts[0], parts[1][1:]))
    bad = []
    for key in seen:
        p = PACKAGES[key]
        rv = p.get("rust_version")
        if rv and version(rv) > version(promised):
            bad.append(f"{p['name']} {p['version']} needs Rust {rv}")
    status = "ok" if not bad else "FAILED"
    print(f"msrv: {label:<28} promised {promised:<6} {len(seen):>4} crates  {status}")
    for b in sorted(bad):
        print(f"    {b}")
    return not bad


ok = True
# aws-lc-rs is the one crypto backend: every build has it.
ok &= check("aws-lc-rs (minimal)", ["aws-lc-rs"], msrv)
for f in features:
    if f == "aws-lc-rs":
        continue
    ok &= check(f, ["aws-lc-rs", f], feature_msrv.get(f, msrv))
everything_but = [f for f in features if f not in feature_msrv]
ok &= check("all features without a note", everything_but, msrv)
if not ok:
    print(f"msrv: a dependency needs a newer Rust than promised (rust-version = {msrv}, "
          "[package.metadata.msrv] for features)", file=sys.stderr)
    sys.exit(1)
