#!/usr/bin/env bash
# The seed's AlexNet job (ds_config.json: 32 micro-batches of 8, Adam; 2 ranks) with and
# without batch-weight-grads, at image sizes 64 and 224: base mode D=2 and pipeline P=2
# (parameters and flops partitions). Prints a markdown table: median samples/s of steps
# 2..STEPS and, per rank, the measured activation bytes (what the step holds for
# backwards) and peak RSS. Each configuration runs unbatched then batched, back to back.
# Then the same model in a plain PyTorch loop (Debian's python3-torch), 32x8 and 1x256,
# one process on the same cores, when /usr/bin/python3 has torch and torchvision.
#   bash bench/batch_weight_grads_bench.sh [steps=4]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-4}"
bazel build -c opt //examples/alexnet_cifar10:train >/dev/null 2>&1
train=bazel-bin/examples/alexnet_cifar10/train
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1048576}'; }
echo "AlexNet, seed ds_config.json (32 x 8, Adam), synthetic data, $steps steps, 2 ranks"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%d)"
echo
echo "| image | mode | batch-weight-grads | samples/s | activations MiB (rank 0 / 1) | peak RSS MiB (rank 0 / 1) |"
echo "|---|---|---|---|---|---|"
for size in 64 224; do
  for mode in "0:parameters" "2:parameters" "2:flops"; do
    IFS=: read p part <<<"$mode"
    for bw in off all; do
      m="$tmp/metrics.txt"
      flag=(); [ "$bw" = all ] && flag=(--batch-weight-grads=all)
      "$train" -p "$p" --nproc 2 --steps "$steps" --image-size "$size" --partition "$part" \
        --deepspeed_config examples/alexnet_cifar10/ds_config.json --plan-out "$tmp/plan.pb" \
        --metrics-out "$m" --memory-report "${flag[@]}" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
      act=() rss=()
      for r in 0 1; do
        line=$(grep "^memory: rank $r " "$tmp/log")
        act+=("$(mib "$(sed 's/.* activations \([0-9]*\) bytes.*/\1/' <<<"$line")")")
        rss+=("$(mib "$(sed 's/.* peak_rss \([0-9]*\) bytes.*/\1/' <<<"$line")")")
      done
      label="base D=2"; [ "$p" = 2 ] && label="P=2, $part"
      echo "| $size | $label | $bw | $(tail -n +2 "$m" | awk '{print $3}' | median) | ${act[0]} / ${act[1]} | ${rss[0]} / ${rss[1]} |"
    done
  done
done
if /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
  echo
  echo "| image | plain PyTorch loop, 1 process, $(nproc) threads | samples/s |"
  echo "|---|---|---|"
  for size in 64 224; do
    for shape in "32 8" "1 256"; do
      read mbs mb <<<"$shape"
      s=$(/usr/bin/python3 bench/pytorch_loop.py --image-size "$size" --steps "$steps" --micro-batches "$mbs" \
            --micro-batch "$mb" 2>&1 | awk '/median/ {print $NF}')
      echo "| $size | $mbs x $mb | $s |"
    done
  done
fi
