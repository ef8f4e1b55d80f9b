#!/usr/bin/env bash
# AlexNet samples/s on this machine: base mode (data-parallel) and pipeline mode P=2,
# at image sizes 64 and 224, with the seed's ds_config.json (global batch 256).
# Prints a markdown table; each cell is the median samples/s of the timed steps
# (step 1, which includes warm-up, is dropped).
#   bash bench/alexnet_bench.sh [steps=4]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-4}"
bazel build //examples/alexnet_cifar10:train >/dev/null 2>&1
train=bazel-bin/examples/alexnet_cifar10/train
tmp=$(mktemp -d)
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
echo "AlexNet, seed ds_config.json (train_batch_size 256, micro-batch 8, Adam), synthetic data, $steps steps"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%d)"
echo
echo "| mode | ranks | image | samples/s (median of steps 2..$steps) |"
echo "|---|---|---|---|"
for size in 64 224; do
  for mode in "base:0:1:parameters" "base:0:2:parameters" "pipeline:2:2:parameters" "pipeline:2:2:flops"; do
    IFS=: read name p n part <<<"$mode"
    m="$tmp/$name-$p-$n-$size-${part//:/_}.txt"
    "$train" -p "$p" --nproc "$n" --steps "$steps" --image-size "$size" --partition "$part" \
      --deepspeed_config examples/alexnet_cifar10/ds_config.json --plan-out "$tmp/plan.pb" \
      --metrics-out "$m" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
    label="base (data-parallel) D=$n"; [ "$p" = 2 ] && label="pipeline P=2, partition $part"
    echo "| $label | $n | $size | $(tail -n +2 "$m" | awk '{print $3}' | median) |"
  done
done
rm -rf "$tmp"
