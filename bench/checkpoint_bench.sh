#!/usr/bin/env bash
# AlexNet checkpoint save and load throughput (MB/s), as pprun/train report them:
# "ppc: saved DIR (X MB in S s, R MB/s)" after a training step and "ppc: loaded DIR
# (step N) in S s" before an evaluation. Each row: median of REPEATS runs, A B A B over
# the layouts. Adam: the checkpoint holds weights and exp_avg/exp_avg_sq (685 MB).
#   bash bench/checkpoint_bench.sh [repeats=3]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
bazel build //examples/alexnet_cifar10:train >/dev/null 2>&1
train=bazel-bin/examples/alexnet_cifar10/train
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/ds.json" <<'JSON'
{"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
 "optimizer": {"type": "Adam", "params": {"lr": 0.0001}}, "steps_per_print": 1}
JSON
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo "AlexNet (57.0M parameters, Adam), checkpoint after 1 step at 64x64; median of $repeats runs"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(df -h "$tmp" | awk 'NR==2{print $1}'); $(date -u +%Y-%m-%d)"
echo
declare -A save_s save_mb load_s
layouts="1:1 2:2 2:4"   # P:ranks
for r in $(seq "$repeats"); do
  for layout in $layouts; do
    IFS=: read p n <<<"$layout"
    rm -rf "$tmp/ck"
    "$train" -p "$p" --nproc "$n" --steps 1 --image-size 64 --deepspeed_config "$tmp/ds.json" \
      --plan-out "$tmp/plan.pb" --save-dir "$tmp/ck" > "$tmp/save.log" 2>&1 || { cat "$tmp/save.log"; exit 1; }
    line=$(grep '^ppc: saved' "$tmp/save.log")
    save_mb[$layout]=$(sed -E 's/.*\(([0-9.]+) MB in.*/\1/' <<<"$line")
    save_s[$layout]+="$(sed -E 's/.* MB in ([0-9.]+) s.*/\1/' <<<"$line") "
    "$train" -p "$p" --nproc "$n" --image-size 64 --deepspeed_config "$tmp/ds.json" --plan-out "$tmp/plan.pb" \
      --load "$tmp/ck" --eval > "$tmp/load.log" 2>&1 || { cat "$tmp/load.log"; exit 1; }
    load_s[$layout]+="$(grep '^ppc: loaded' "$tmp/load.log" | sed -E 's/.* in ([0-9.]+) s.*/\1/') "
  done
done
echo "| layout | writers | checkpoint MB | save s | save MB/s | load s (all ranks) | load MB/s |"
echo "|---|---|---|---|---|---|---|"
for layout in $layouts; do
  IFS=: read p n <<<"$layout"
  s=$(tr ' ' '\n' <<<"${save_s[$layout]}" | grep . | median)
  l=$(tr ' ' '\n' <<<"${load_s[$layout]}" | grep . | median)
  mb=${save_mb[$layout]}
  echo "| P=$p x D=$((n / p)) | $p | $mb | $s | $(awk -v a="$mb" -v b="$s" 'BEGIN{printf "%.0f", a/b}') | $l | $(awk -v a="$mb" -v b="$l" 'BEGIN{printf "%.0f", a/b}') |"
done
