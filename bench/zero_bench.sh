#!/usr/bin/env bash
# ZeRO stage 1 for AlexNet with Adam at D=2 (base mode: 1 stage x 2 replicas, and
# pipeline mode: 2 stages x 2 replicas): optimizer-state bytes and peak RSS per rank
# (--memory-report) and samples/s (median of steps 2..S), stage 0 vs 1, runs interleaved
# A B A B. The seed's ds_config (256 samples per step, micro-batch 8) plus
# "zero_optimization": {"stage": Z}.
#   bash bench/zero_bench.sh [steps=3] [pairs=2]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-3}"
pairs="${2:-2}"
bazel build //examples/alexnet_cifar10:train >/dev/null 2>&1
train=bazel-bin/examples/alexnet_cifar10/train
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for z in 0 1; do
  /usr/bin/python3 - "$z" > "$tmp/ds$z.json" <<'PY'
import json, sys
c = json.load(open("examples/alexnet_cifar10/ds_config.json"))
c["zero_optimization"] = {"stage": int(sys.argv[1])}
print(json.dumps(c))
PY
done
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
mib() { awk '{printf "%.1f", $1 / 1048576}'; }
echo "AlexNet, Adam, seed ds_config (256 samples/step) + zero_optimization.stage, 64x64, $steps steps, $pairs pairs"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%d)"
echo
echo "| mode | ZeRO | rank 0 optimizer state MiB | rank 0 parameters MiB | peak RSS MiB (max over ranks) | samples/s |"
echo "|---|---|---|---|---|---|"
for mode in "0:2" "2:4"; do
  IFS=: read p n <<<"$mode"
  declare -A sps=() state=() params=() rss=()
  for pair in $(seq "$pairs"); do
    for z in 0 1; do
      "$train" -p "$p" --nproc "$n" --steps "$steps" --image-size 64 --deepspeed_config "$tmp/ds$z.json" \
        --plan-out "$tmp/plan.pb" --metrics-out "$tmp/m" --memory-report > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
      sps[$z]+="$(tail -n +2 "$tmp/m" | awk '{print $3}' | median) "
      state[$z]=$(grep '^memory: rank 0 ' "$tmp/log" | sed -E 's/.*optimizer_state ([0-9]+) bytes.*/\1/')
      params[$z]=$(grep '^memory: rank 0 ' "$tmp/log" | sed -E 's/.*parameters ([0-9]+) bytes.*/\1/')
      rss[$z]+="$(grep '^memory: ' "$tmp/log" | sed -E 's/.*peak_rss ([0-9]+) bytes.*/\1/' | sort -g | tail -1) "
    done
  done
  label="base D=2"; [ "$p" = 2 ] && label="pipeline P=2 x D=2"
  for z in 0 1; do
    echo "| $label | $z | $(mib <<<"${state[$z]}") | $(mib <<<"${params[$z]}") | $(tr ' ' '\n' <<<"${rss[$z]}" | grep . | median | mib) | $(tr ' ' '\n' <<<"${sps[$z]}" | grep . | median) |"
  done
done
