#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and prints the executions each
# reached. Exits non-zero when a target crashes (its input lands in fuzz/artifacts/<target>/).
#
#   ./scripts/fuzz.sh              # every target for 20 s (about 4 min plus the first build)
#   ./scripts/fuzz.sh 120          # every target for 120 s
#   ./scripts/fuzz.sh 30 jwt token_form    # only these targets
#   FUZZ_BUILD_ONLY=1 ./scripts/fuzz.sh    # build the targets, run nothing (CI sanity)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, from crates.io). Works on a stable toolchain:
# the targets are built without a sanitizer (`-s none`, forbid(unsafe_code) crate) and with
# RUSTC_BOOTSTRAP=1 for the few unstable flags cargo-fuzz passes; on nightly the same command
# works unchanged. Seeds come from fuzz/seeds/<target>/ (committed); the growing corpus lives
# in fuzz/corpus/<target>/ (ignored by git).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

seconds=${1:-20}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 [seconds-per-target] [target...]" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
flags=(-s none -O)

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "==> building ${#targets[@]} fuzz targets" >&2
cargo fuzz build "${flags[@]}" >&2
if [ -n "${FUZZ_BUILD_ONLY:-}" ]; then
  echo "built: ${targets[*]}"
  exit 0
fi

declare -a rows=()
failed=0
total_execs=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ -d "seeds/$t" ]; then
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  fi
  log=$(mktemp)
  echo "==> $t for ${seconds}s" >&2
  rc=0
  cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 \
    -max_len=8192 -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
  execs=${execs:-0}
  total_execs=$((total_execs + execs))
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    rows+=("$(printf '%-22s %12s execs  CRASH (exit %d), see fuzz/artifacts/%s/' "$t" "$execs" "$rc" "$t")")
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 >&2 || true
  else
    rows+=("$(printf '%-22s %12s execs  %ss  ok' "$t" "$execs" "$seconds")")
  fi
  rm -f "$log"
done

echo
echo "fuzz results (${seconds}s per target):"
for r in "${rows[@]}"; do echo "  $r"; done
echo "total: $total_execs executions, $failed crashed target(s)"
[ "$failed" -eq 0 ]
