#!/usr/bin/env bash
# Set-up plus the whole test suite: installs what is missing, runs every Bazel test, then
# the parsers, the verifier and the fuzz targets again under ASan + UBSan, and ends with
# one line "N passed, N failed" counting test targets (both runs).
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
log=$(mktemp)
bazel test //... --test_summary=short --noshow_progress "$@" 2>&1 | grep -v 'linux-sandbox' | tee "$log"
rc=${PIPESTATUS[0]}
asan_log=$(mktemp)
bazel test --config=asan //ir/... //compiler/... //passes/... //tests/fuzz/... --test_summary=short --noshow_progress \
  2>&1 | grep -v 'linux-sandbox' | sed 's/^\(\/\/[^ ]*\)/\1 (asan)/' | tee "$asan_log"
asan_rc=${PIPESTATUS[0]}
cat "$asan_log" >> "$log"
passed=$(grep -cE '^//[^ ]+( \(asan\))? +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+( \(asan\))? +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE|FLAKY)' "$log")
if [ "$rc" -ne 0 ] || [ "$asan_rc" -ne 0 ]; then
  [ "$failed" -eq 0 ] && failed=1  # a build failure before any test ran
  [ "$rc" -eq 0 ] && rc=$asan_rc
fi
echo "$passed passed, $failed failed"
exit "$rc"
