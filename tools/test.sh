#!/usr/bin/env bash
# Set-up plus the whole test suite: installs what is missing, runs every Bazel test, then
# the parsers, the verifier and the fuzz targets again under ASan + UBSan, and ends with
# one line "N passed, N failed" counting test targets (both runs). Two build checks run
# after the tests and fail the run when they fail: the CUDA/NCCL sources compile
# (bazel --config=cuda), and the CMake build builds and passes tools/cmake_build.sh.
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
# Build checks (not test targets, but any failure fails the run): the CUDA/NCCL sources
# compile against /usr/local/cuda (they cannot link without a CUDA LibTorch), and the
# CMake build beside Bazel builds and passes its smoke check.
checks_failed=0
check_log=$(mktemp)
if [ -f /usr/local/cuda/include/nccl.h ]; then
  if bazel build --config=cuda //runtime:nccl_transport_cuda //tests/gpu:all --noshow_progress >"$check_log" 2>&1; then
    echo "check: CUDA sources compile (bazel build --config=cuda): ok"
  else
    grep -v 'linux-sandbox' "$check_log" | tail -30
    echo "check: CUDA sources compile (bazel build --config=cuda): FAILED"
    checks_failed=1
  fi
else
  echo "check: CUDA sources not compiled: /usr/local/cuda/include/nccl.h is missing"
fi
if bash tools/cmake_build.sh build-cmake >"$check_log" 2>&1; then
  echo "check: CMake build and smoke (tools/cmake_build.sh): ok"
else
  tail -30 "$check_log"
  echo "check: CMake build and smoke (tools/cmake_build.sh): FAILED"
  checks_failed=1
fi
passed=$(grep -cE '^//[^ ]+( \(asan\))? +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+( \(asan\))? +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE|FLAKY)' "$log")
if [ "$checks_failed" -ne 0 ] && [ "$rc" -eq 0 ] && [ "$asan_rc" -eq 0 ]; then
  rc=1
  failed=$((failed + 1))
fi
if [ "$rc" -ne 0 ] || [ "$asan_rc" -ne 0 ]; then
  [ "$failed" -eq 0 ] && failed=1  # a build failure before any test ran
  [ "$rc" -eq 0 ] && rc=$asan_rc
fi
echo "$passed passed, $failed failed"
exit "$rc"
