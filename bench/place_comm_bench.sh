#!/usr/bin/env bash
# A/B benchmark of early receive posting (the place-comm pass) on the seed's job:
# AlexNet, P=2 pipeline stages, 1F1B, the seed's ds_config.json (256 samples per step as
# 32 micro-batches of 8, Adam), synthetic data, a small image size.
#   A: the default pipeline (..., lower, lower-eval, place-comm)
#   B: the same with place-comm disabled (`ppc compile --disable-passes=place-comm`): every
#      receive is posted right before its wait, where `lower` put it
# Both plans are compiled once and verified (B is a correct plan, not an unverified one),
# then run with `pprun PLAN --nproc 2` alternately, A B A B ..., `rounds` times in one run,
# so that drift in the machine's speed falls on both. Each run's figure is the median
# samples/s of its steps 2..S (step 1 includes warm-up). Prints one line per round and
# the median ratio B/A (below 1: place-comm helps).
#   bash bench/place_comm_bench.sh [rounds=5] [steps=4] [image-size=64]
# BAZEL_JOBS=N limits the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
steps="${2:-4}"
size="${3:-64}"
[ "$steps" -ge 2 ] || { echo "steps must be >= 2 (step 1 is dropped)" >&2; exit 2; }
bazel build ${BAZEL_JOBS:+--jobs=$BAZEL_JOBS} //tools/ppc:ppc //tools/pprun:pprun >/dev/null 2>&1 || {
  echo "build failed: bazel build //tools/ppc:ppc //tools/pprun:pprun" >&2
  exit 1
}
ppc=bazel-bin/tools/ppc/ppc
pprun=bazel-bin/tools/pprun/pprun
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The example's AlexNet spec at size x size (examples/alexnet_cifar10/train's --image-size).
spec="$tmp/alexnet.textproto"
sed -E "s/^input \{ shape: 3 shape: [0-9]+ shape: [0-9]+ /input { shape: 3 shape: $size shape: $size /" \
  examples/alexnet_cifar10/alexnet.textproto >"$spec"
grep -q "^input { shape: 3 shape: $size shape: $size " "$spec" || {
  echo "could not set the image size in examples/alexnet_cifar10/alexnet.textproto's input line" >&2
  exit 1
}
compile() {  # compile OUT [extra flags]
  local out="$1"
  shift
  "$ppc" compile --model "$spec" --stages 2 --deepspeed_config examples/alexnet_cifar10/ds_config.json \
    --steps "$steps" --out "$out" "$@" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
  "$ppc" verify "$out" >/dev/null || exit 1
}
compile "$tmp/a.pb"
compile "$tmp/b.pb" --disable-passes=place-comm

median() {  # median [printf format] < numbers
  sort -g | awk -v f="${1:-%.1f}" '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf f "\n", m}'
}
run() {  # run PLAN -> median samples/s of steps 2..steps
  "$pprun" "$1" --nproc 2 --steps "$steps" --quiet --metrics-out "$tmp/m" >"$tmp/log" 2>&1 ||
    { cat "$tmp/log" >&2; exit 1; }
  tail -n +2 "$tmp/m" | awk '{print $3}' | median
}

echo "AlexNet P=2 1F1B, seed ds_config.json (256 samples/step, micro-batch 8, Adam), synthetic data, ${size}x${size}, $steps steps per run"
echo "A: default pipeline; B: --disable-passes=place-comm; $rounds rounds A B"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%d)"
echo
echo "| round | A samples/s | B samples/s | B/A |"
echo "|---|---|---|---|"
: >"$tmp/a"
: >"$tmp/b"
: >"$tmp/ratio"
for ((r = 1; r <= rounds; r++)); do
  a=$(run "$tmp/a.pb")
  b=$(run "$tmp/b.pb")
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')
  echo "$a" >>"$tmp/a"
  echo "$b" >>"$tmp/b"
  echo "$ratio" >>"$tmp/ratio"
  echo "| $r | $a | $b | $ratio |"
done
echo "| median | $(median <"$tmp/a") | $(median <"$tmp/b") | $(median %.3f <"$tmp/ratio") |"
echo
echo "median B/A (without place-comm / with it): $(median %.3f <"$tmp/ratio")"
