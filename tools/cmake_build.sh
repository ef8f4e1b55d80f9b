#!/usr/bin/env bash
# Builds ppc with CMake (beside Bazel) and checks that the result works:
#   1. configure (Ninja when installed, else Makefiles; Release: -O2, no debug info),
#   2. build everything (ppc, pprun, the examples, bench, the tests) with -j$(nproc),
#   3. smoke: `ppc compile` the MLP example for 2 stages, `ppc inspect` it, `pprun` it for
#      2 steps with --nproc 2, `ppc export` the checkpoint it saved, and a few fast ctest
#      tests (IR, passes, golden plans, layers, the ppc command line).
# Exits non-zero, saying which step failed, on any failure.
#   bash tools/cmake_build.sh [BUILD_DIR=build-cmake] [extra cmake args...]
# e.g. with a pip wheel's LibTorch:
#   bash tools/cmake_build.sh build-cmake \
#     -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
# The rest of the tests: (cd BUILD_DIR && ctest -j$(nproc) -LE gpu --output-on-failure).
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-cmake}"
[ $# -gt 0 ] && shift
jobs="$(nproc 2>/dev/null || echo 2)"
start=$SECONDS

fail() {
  echo "cmake_build: FAILED: $*" >&2
  exit 1
}
phase() { echo "== cmake_build: $* ($((SECONDS - start)) s)"; }

command -v cmake >/dev/null || fail "cmake is not installed"
generator=()
if [ ! -f "$build/CMakeCache.txt" ]; then  # an existing build dir keeps its generator
  if command -v ninja >/dev/null; then generator=(-G Ninja); else generator=(-G "Unix Makefiles"); fi
fi

phase "configure $build"
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@" || fail "configure (cmake -S . -B $build $*)"

phase "build -j$jobs"
cmake --build "$build" -j "$jobs" || fail "build (cmake --build $build)"

phase "smoke"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
ppc="$build/tools/ppc/ppc"
pprun="$build/tools/pprun/pprun"
for exe in "$ppc" "$build/tools/ppc/ppc-export" "$pprun" "$build/examples/alexnet_cifar10/train"; do
  [ -x "$exe" ] || fail "$exe was not built"
done

step() {  # step NAME COMMAND...: output to $tmp/NAME.log, shown on failure
  local name="$1"
  shift
  if ! "$@" >"$tmp/$name.log" 2>&1; then
    cat "$tmp/$name.log" >&2
    fail "$name: $*"
  fi
}
step compile "$ppc" compile --model examples/mlp/mlp.textproto --stages 2 --micro-batches 4 --micro-batch-size 8 \
  --optimizer sgd --lr 0.1 --steps 2 --out "$tmp/mlp_p2.pb"
step inspect "$ppc" inspect --unit-costs "$tmp/mlp_p2.pb"
grep -q 'verifier: ok' "$tmp/inspect.log" || { cat "$tmp/inspect.log" >&2; fail "ppc inspect: no 'verifier: ok'"; }
step pprun "$pprun" "$tmp/mlp_p2.pb" --nproc 2 --steps 2 --timeout-s 60 \
  --metrics-out "$tmp/metrics" --save-dir "$tmp/ckpt"
cat "$tmp/pprun.log"
losses=$(awk 'NF == 3' "$tmp/metrics" | wc -l)
[ "$losses" -eq 2 ] || { cat "$tmp/metrics" >&2; fail "pprun: expected 2 steps in --metrics-out, got $losses"; }
step export "$ppc" export "$tmp/ckpt" --out "$tmp/mlp.pt"
[ -s "$tmp/mlp.pt" ] || fail "ppc export wrote nothing"
echo "ppc compile, inspect, pprun --nproc 2 (2 steps), export: ok"

(cd "$build" && ctest --output-on-failure -j "$jobs" \
  -R '^(plan_io_test|passes_test|golden_test|layers_test|ppc_cli_test)$') || fail "ctest (in $build)"

phase "done: $build; all tests: (cd $build && ctest -j$jobs -LE gpu --output-on-failure)"
