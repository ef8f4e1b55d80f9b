#!/usr/bin/env bash
# Pipeline schedules side by side on this machine: for an MLP sized so that compute
# dominates (8 x Linear(W, W) + ReLU, then a Linear(W, 10) head; W=1024, 32 samples per
# micro-batch), P = 2 and P = 4, M = 2P micro-batches and 4P, each schedule's
#   - measured samples/s: pprun --nproc P, Gloo, median of steps 2..N (one intra-op
#     thread per rank when the ranks share the cores);
#   - simulated bubble at unit costs (F=1, B=2, I=W=1) and simulated step time from
#     costs profiled on this machine (bench/schedule_costs: F, B, I, W per virtual
#     stage, on one thread, communication free);
#   - peak activation memory, the largest stage: modeled (ppc inspect's peak,
#     passes/analysis/activations.h) and measured by pprun --memory-report's counting
#     allocator: held between instructions ("activations", which also holds the receive
#     buffers posted ahead and sent tensors until their wait) and at any moment
#     ("step_peak", with the kernels' temporaries: here a 4 MiB weight gradient before
#     it is accumulated); and the peak RSS of the largest rank (which also holds
#     parameters, gradients, optimizer state and LibTorch itself).
# Prints a markdown table.
#   bash bench/zero_bubble_bench.sh [steps=8] [width=1024] [micro-batch size=32] [model=mlp|blocks]
# (blocks: bench/blocks_spec.sh, 8 x (LayerNorm, Linear, GELU, Dropout), whose forwards
# keep more than the weight gradients need, as a transformer layer's do.)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-8}"
width="${2:-1024}"
mbs="${3:-32}"
model="${4:-mlp}"
bazel build -c opt //tools/ppc:ppc //tools/pprun:pprun //bench:schedule_costs >/dev/null 2>&1 || {
  echo "build failed: bazel build -c opt //tools/ppc:ppc //tools/pprun:pprun //bench:schedule_costs" >&2
  exit 1
}
bin=$(bazel info -c opt bazel-bin 2>/dev/null)
ppc=$bin/tools/ppc/ppc
pprun=$bin/tools/pprun/pprun
costs=$bin/bench/schedule_costs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
spec="$tmp/mlp.textproto"
case "$model" in
  mlp) bash bench/mlp_spec.sh 8 "$width" bench_mlp >"$spec" ;;
  blocks) bash bench/blocks_spec.sh 8 "$width" bench_blocks >"$spec" ;;
  *) echo "model must be mlp or blocks, got '$model'" >&2; exit 2 ;;
esac
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
mib() { awk '{printf "%.1f", $1 / 1048576}'; }
mib2() { awk '{printf "%.2f", $1 / 1048576}'; }

if [[ "$model" == mlp ]]; then
  echo "MLP 8 x Linear($width, $width) + ReLU + Linear($width, 10), micro-batch $mbs, SGD; $steps steps, median of steps 2..$steps"
else
  echo "Blocks 8 x (LayerNorm($width), Linear($width, $width), GELU, Dropout(0.1)) + Linear($width, 10), micro-batch $mbs, SGD; $steps steps, median of steps 2..$steps"
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%d)"
echo
echo "| P | M | schedule | samples/s (measured) | bubble (unit costs) | simulated step (profiled costs) | measured step | peak activations, modeled (MiB) | held, measured (MiB) | step peak, measured (MiB) | peak RSS, largest rank (MiB) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for p in 2 4; do
  for m in $((2 * p)) $((4 * p)); do
    # "NAME:CAP": the schedule with max_activations=CAP (none: torch's order unchanged).
    for row in 1f1b zb-h1 zb-h1:none zb-v zb-v:1f1b dualpipev; do
      schedule=${row%%:*}
      passes=()
      if [[ "$row" == *:* ]]; then
        passes=(--passes "infer-shapes,partition,schedule-$schedule{max_activations=${row#*:}},assign-buffers,lower,lower-eval,place-comm")
      fi
      plan="$tmp/$schedule-$p-$m.pb"
      "$ppc" compile --model "$spec" --stages "$p" --micro_batches "$m" --micro_batch_size "$mbs" \
        --schedule "$schedule" --steps "$steps" --out "$plan" "${passes[@]}" >"$tmp/compile.log" 2>&1 || {
        why=$(tail -1 "$tmp/compile.log" | sed 's/.*failed: schedule-[a-z0-9-]*: //; s/ (each stage.*//')
        echo "| $p | $m | $row | (refused: $why) | | | | | | | |"
        continue
      }
      bubble=$("$ppc" inspect --unit-costs "$plan" | sed -n 's/.*bubble fraction \([0-9.]*\).*/\1/p' | head -1)
      sim=$("$costs" --plan "$plan")
      sim_ms=$(echo "$sim" | field simulated_step_ms)
      peak_act=$(echo "$sim" | field peak_activation_bytes | mib2)
      metrics="$tmp/metrics-$row-$p-$m.txt"
      # Timed without the counting allocator; memory from a second, 2-step run with it.
      "$pprun" --nproc "$p" --quiet --metrics_out "$metrics" "$plan" >"$tmp/run.log" 2>&1 || {
        echo "pprun failed for $row P=$p M=$m:" >&2
        tail -5 "$tmp/run.log" >&2
        exit 1
      }
      "$pprun" --nproc "$p" --quiet --memory_report --steps 2 "$plan" >"$tmp/run.log" 2>&1 || {
        echo "pprun --memory_report failed for $row P=$p M=$m:" >&2
        tail -5 "$tmp/run.log" >&2
        exit 1
      }
      sps=$(tail -n +2 "$metrics" | awk '{print $3}' | median)
      step_ms=$(awk -v s="$sps" -v n="$((m * mbs))" 'BEGIN {printf "%.1f", 1000 * n / s}')
      rss=$(grep -o 'peak_rss [0-9]*' "$tmp/run.log" | awk '{print $2}' | sort -g | tail -1 | mib)
      held=$(grep -o 'activations [0-9]*' "$tmp/run.log" | awk '{print $2}' | sort -g | tail -1 | mib2)
      speak=$(grep -o 'step_peak [0-9]*' "$tmp/run.log" | awk '{print $2}' | sort -g | tail -1 | mib2)
      echo "| $p | $m | $row | $sps | $bubble | $sim_ms ms | $step_ms ms | $peak_act | $held | $speak | $rss |"
    done
  done
done
