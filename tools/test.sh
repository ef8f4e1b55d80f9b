#!/usr/bin/env bash
# Set-up plus the whole test suite: installs what is missing, runs every Bazel test,
# and ends with one line "N passed, N failed" counting test targets.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
log=$(mktemp)
bazel test //... --test_summary=short --noshow_progress "$@" 2>&1 | grep -v 'linux-sandbox' | tee "$log"
rc=${PIPESTATUS[0]}
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE|FLAKY)' "$log")
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # build failure before any test ran
echo "$passed passed, $failed failed"
exit "$rc"
