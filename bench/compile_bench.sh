#!/usr/bin/env bash
# How long `ppc compile` takes on large pipelines, and how much memory it needs.
#   bash bench/compile_bench.sh [repeats=5] [repeats for P=256 M=4096, default 3]
# Builds ppc and bench/compile_profile, writes a 513-layer MLP spec (256 x Linear(16, 16) +
# ReLU, then a Linear(16, 10) head) to a temporary directory, and runs the whole
# `ppc compile ... --out PLAN` (default pipeline, verifier after every pass, final check,
# binary save) `repeats` times per case under /usr/bin/time. Prints a markdown table of
# the median wall time and the largest peak RSS, then the `--time-passes` lines and
# compile_profile's step-by-step breakdown (passes, the pipeline's change-detection
# hashes, the verifier) for P=64 M=512 and for the largest case.
# Goals: under 0.1 s at P=64 M=512, under 2 s at P=256 M=4096.
# BAZEL_JOBS=N limits the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-5}"
large_repeats="${2:-3}"
bazel build ${BAZEL_JOBS:+--jobs=$BAZEL_JOBS} //tools/ppc:ppc //bench:compile_profile >/dev/null 2>&1 || {
  echo "build failed: bazel build //tools/ppc:ppc //bench:compile_profile" >&2
  exit 1
}
ppc=bazel-bin/tools/ppc/ppc
profile=bazel-bin/bench/compile_profile
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

spec="$tmp/deep_mlp.textproto"
bash bench/mlp_spec.sh 256 16 deep_mlp >"$spec"

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# case: label P M V schedule goal_s repeats
cases=(
  "P=64 M=512 1f1b|64|512|1|1f1b|0.1|$repeats"
  "P=64 M=512 V=2 interleaved-1f1b|64|512|2|interleaved-1f1b|0.1|$repeats"
  "P=256 M=4096 1f1b|256|4096|1|1f1b|2|$large_repeats"
)

echo "ppc compile, 513-layer MLP (micro-batch size 1, sgd), default pipeline; $repeats runs per case ($large_repeats at P=256)"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%d)"
echo
echo "| case | plan MB | wall s (median) | min .. max s | peak RSS MiB | goal | meets |"
echo "|---|---|---|---|---|---|---|"
for c in "${cases[@]}"; do
  IFS='|' read -r label p m v schedule goal n <<<"$c"
  : >"$tmp/times"
  : >"$tmp/rss"
  for ((r = 0; r < n; r++)); do
    /usr/bin/time -o "$tmp/t" -f "%e %M" "$ppc" compile --model "$spec" --stages "$p" --micro-batches "$m" \
      --virtual-stages "$v" --schedule "$schedule" --out "$tmp/plan.pb" >"$tmp/log" 2>&1 ||
      { cat "$tmp/log"; exit 1; }
    tail -1 "$tmp/t" | awk '{print $1}' >>"$tmp/times"
    tail -1 "$tmp/t" | awk '{print $2}' >>"$tmp/rss"
  done
  wall=$(median <"$tmp/times")
  range="$(sort -g "$tmp/times" | head -1) .. $(sort -g "$tmp/times" | tail -1)"
  rss=$(sort -g "$tmp/rss" | tail -1 | awk '{printf "%.0f", $1 / 1024}')
  mb=$(stat -c %s "$tmp/plan.pb" | awk '{printf "%.1f", $1 / 1048576}')
  meets=$(awk -v w="$wall" -v g="$goal" 'BEGIN {print (w < g) ? "yes" : sprintf("no (%.1fx)", w / g)}')
  echo "| $label | $mb | $wall | $range | $rss | < $goal s | $meets |"
done

for c in "64 512" "256 4096"; do
  read -r p m <<<"$c"
  echo
  echo "### P=$p M=$m 1f1b: \`ppc compile --time-passes\` (each pass's own Run)"
  echo
  echo '```'
  "$ppc" compile --model "$spec" --stages "$p" --micro-batches "$m" --out "$tmp/plan.pb" --time-passes 2>/dev/null
  echo '```'
  echo
  echo "### P=$p M=$m 1f1b: step by step (bench/compile_profile)"
  echo
  "$profile" --model="$spec" --stages="$p" --micro_batches="$m" --repeats="$([ "$p" = 64 ] && echo 3 || echo 1)" \
    --out="$tmp/profile.pb"
done
