#!/usr/bin/env bash
# The whole GPU proof in one call on a GPU machine (PyTorch with CUDA, CMake, ninja,
# nvcc; no Bazel, no network), run from the repository root:
#   1. unpack the Debian packages tools/gpu_deps.sh fetched (third_party/gpu_deps/,
#      carried along) into a private prefix, find LibTorch in the Python torch package;
#   2. configure and build with CMake (PPC_WITH_CUDA=ON);
#   3. the GPU tests (tests/gpu: the NCCL self-test, Gloo with CUDA tensors);
#   4. equivalence on the GPU: P=1 over NCCL, and P=2 on one GPU over Gloo (staged through
#      pinned host memory), against the CPU reference run of the same plan: the same
#      losses and final weights within float32 tolerance;
#   5. a dead peer on the GPU: the run ends with an error naming the rank, never a hang;
#   6. bench/device_bench.sh: AlexNet 224x224, pprun P=1 against plain LibTorch and
#      PyTorch loops on the same GPU.
# Logs and results go to $OUT (default ./gpu_check_out); SUMMARY lists each step's verdict.
#   bash tools/gpu_check.sh [build dir=build-gpu]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
build="${1:-build-gpu}"
summary="$OUT/SUMMARY"
: >"$summary"
failed=0
say() { echo "$*" | tee -a "$summary"; }
step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, records the verdict
  local name="$1"; shift
  local start=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then say "PASS $name ($((SECONDS - start)) s)"
  else say "FAIL $name ($((SECONDS - start)) s): see $name.log"; failed=$((failed + 1)); fi
}

PY="${PYTHON:-$(command -v python3)}"
{ nvidia-smi; nvcc --version; cmake --version; "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'; } \
  >"$OUT/machine.txt" 2>&1
torch_prefix=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)') || { say "FAIL no torch in $PY"; exit 1; }

# 1. Dependencies: Debian's protobuf, Abseil and GoogleTest, unpacked without root.
prefix="$PWD/.gpu_prefix"
if compgen -G "third_party/gpu_deps/*.deb" >/dev/null; then
  mkdir -p "$prefix"
  for d in third_party/gpu_deps/*.deb; do dpkg-deb -x "$d" "$prefix"; done
  export PATH="$prefix/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  deps_prefix="$prefix/usr"
else
  deps_prefix=""  # the machine has them installed
fi
# NCCL: the one in the nvidia-nccl wheel PyTorch uses, when there is one.
nccl_root=$("$PY" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
[ -n "$nccl_root" ] && export LD_LIBRARY_PATH="$nccl_root/lib:${LD_LIBRARY_PATH:-}"

# 2. Build.
step configure cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPPC_WITH_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$torch_prefix${deps_prefix:+;$deps_prefix}" ${nccl_root:+-DNCCL_ROOT=$nccl_root} \
  ${deps_prefix:+-DProtobuf_PROTOC_EXECUTABLE=$deps_prefix/bin/protoc}
step build cmake --build "$build" -j "$(nproc)"
if grep -q "^FAIL build" "$summary"; then tail -50 "$OUT/build.log"; cat "$summary"; exit 1; fi
PPC="$build/tools/ppc/ppc" PPRUN="$build/tools/pprun/pprun" LOOP="$build/bench/libtorch_loop"

# 3. GPU tests.
# Too few GPUs fails a test; on a one-GPU machine the two-GPU test is left out, and said so.
gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
filter=""
if [ "$gpus" -lt 2 ]; then
  filter="--gtest_filter=-NcclTwoGpus.*"
  say "NOT RUN NcclTwoGpus.* (needs 2 GPUs, this machine has $gpus)"
fi
for t in "$build"/tests/gpu/*_test; do
  [ -x "$t" ] && step "gpu_test_$(basename "$t")" "$t" $filter
done

# 4. Equivalence: the CPU run is the reference.
work="$OUT/work"
mkdir -p "$work"
compile() {  # compile OUT STAGES
  "$PPC" compile --model examples/mlp/mlp.textproto --stages "$2" --micro-batches 4 --micro-batch-size 4 \
    --optimizer adam --lr 0.01 --steps 5 --seed 7 --out "$1"
}
run() {  # run NAME PLAN NPROC FLAGS...
  local name="$1" plan="$2" n="$3"; shift 3
  rm -rf "$work/$name.w"; mkdir -p "$work/$name.w"
  "$PPRUN" "$plan" --nproc "$n" --quiet --metrics-out "$work/$name.m" --dump-weights "$work/$name.w" "$@"
}
equivalent() {  # equivalent REF RUN
  "$PY" tools/compare_runs.py "$work/$1.m" "$work/$1.w" "$work/$2.m" "$work/$2.w" --tol 1e-4  # cuBLAS rounds differently from the CPU
}
step compile_p1 compile "$work/p1.pb" 1
step compile_p2 compile "$work/p2.pb" 2
step ref_cpu_p1 run cpu_p1 "$work/p1.pb" 1 --device cpu
step nccl_p1 run nccl_p1 "$work/p1.pb" 1 --device cuda --backend nccl
step equivalence_nccl_p1 equivalent cpu_p1 nccl_p1
step gloo_staged_p2 run gloo_p2 "$work/p2.pb" 2 --device cuda --backend gloo
step equivalence_gloo_staged_p2 equivalent cpu_p1 gloo_p2

# 5. A dead peer on the GPU: rank 1 killed in its first forward of step 2.
dead_peer() {
  local start=$SECONDS
  PPRUN_FAULT_INJECT=1:forward:2:KILL "$PPRUN" "$work/p2.pb" --nproc 2 --device cuda --backend gloo --timeout-s 20 \
    >"$work/dead.log" 2>&1
  local code=$?
  cat "$work/dead.log"
  echo "exit $code after $((SECONDS - start)) s"
  [ "$code" -ne 0 ] && [ $((SECONDS - start)) -lt 60 ] && grep -q "rank 1 " "$work/dead.log"
}
step dead_peer dead_peer

# 6. The benchmark.
step device_bench env PPC="$PPC" PPRUN="$PPRUN" LOOP="$LOOP" PYTHON="$PY" bash bench/device_bench.sh cuda 224 3 6
cp "$OUT/device_bench.log" "$OUT/device_bench.md" 2>/dev/null

say "$failed step(s) failed"
cat "$summary"
[ "$failed" -eq 0 ]
