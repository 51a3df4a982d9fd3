#!/usr/bin/env bash
# Runs strait's fuzz targets with cargo-fuzz (nightly toolchain):
#
#   fuzz/run.sh [-runs=N | -max_total_time=S] [TARGET...]
#
# Every target, or those named, one after another, each for the libFuzzer
# limit given (default: 5 seconds each, what CI runs so the targets keep
# building and the seeds keep passing). For the long runs recorded in
# docs/bad-input.md: fuzz/run.sh -runs=10000000
#
# Each target starts from its seeds (fuzz/seeds/TARGET: golden frames, the
# overlays' and README's configurations, a token, a certificate chain) and
# keeps what it finds in fuzz/corpus/TARGET (not committed). A crash
# leaves its input in fuzz/artifacts/TARGET and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
limit="-max_total_time=5"
if [[ "${1:-}" == -* ]]; then
  limit="$1"
  shift
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  if [ -z "$(ls -A "fuzz/seeds/$t" 2>/dev/null)" ]; then
    echo "== $t: no seeds in fuzz/seeds/$t (every target starts from committed seeds)"
    failed=1
    continue
  fi
  echo "== $t ($limit)"
  if cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- "$limit" >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1
  else
    failed=1
    grep -E '^==[0-9]+==|panicked|SUMMARY|Test unit written|^error' "$log" || tail -20 "$log"
  fi
done
exit $failed
