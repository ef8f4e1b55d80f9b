#!/usr/bin/env bash
# The interpreter's overhead on one device: AlexNet with the seed's ds_config.json
# (32 micro-batches of 8 per step, Adam) trained by
#   A  pprun, P=1, one rank (the compiled plan, interpreted)
#   B  bench/libtorch_loop: the same work as a plain LibTorch loop
#   C  bench/pytorch_loop.py: the same work as a plain PyTorch loop (torchvision's AlexNet)
# run in rounds A B C A B C ... on the same machine. Prints a markdown table: the median
# samples/s of each (steps 2.. of every run), and A/B, A/C; the interpreter's share of
# step time is 1 - A/B.
#   bash bench/device_bench.sh [device=cuda] [image size=224] [rounds=3] [steps=6]
# Binaries: $PPC, $PPRUN, $LOOP (default: Bazel's bazel-bin, built here; the GPU check
# passes the CMake build's); $PYTHON (default /usr/bin/python3 when it exists, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda}"
size="${2:-224}"
rounds="${3:-3}"
steps="${4:-6}"
if [ -z "${PPC:-}" ]; then
  bazel build //tools/ppc:ppc //tools/pprun:pprun //bench:libtorch_loop >/dev/null 2>&1 || {
    echo "build failed: bazel build //tools/ppc:ppc //tools/pprun:pprun //bench:libtorch_loop" >&2
    exit 1
  }
  PPC=bazel-bin/tools/ppc/ppc PPRUN=bazel-bin/tools/pprun/pprun LOOP=bazel-bin/bench/libtorch_loop
fi
PYTHON="${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

sed "s/^input { shape: 3 shape: 224 shape: 224/input { shape: 3 shape: $size shape: $size/" \
  examples/alexnet_cifar10/alexnet.textproto >"$tmp/alexnet.textproto"
grep -q "shape: $size shape: $size" "$tmp/alexnet.textproto" || { echo "could not set the image size" >&2; exit 1; }
"$PPC" compile --model "$tmp/alexnet.textproto" --deepspeed-config examples/alexnet_cifar10/ds_config.json \
  --stages 1 --steps "$steps" --out "$tmp/plan.pb" >"$tmp/compile.log" 2>&1 || { cat "$tmp/compile.log"; exit 1; }

: >"$tmp/A"; : >"$tmp/B"; : >"$tmp/C"
for ((r = 0; r < rounds; r++)); do
  "$PPRUN" "$tmp/plan.pb" --nproc 1 --device "$device" --quiet --metrics-out "$tmp/m" >"$tmp/log" 2>&1 ||
    { cat "$tmp/log"; exit 1; }
  tail -n +2 "$tmp/m" | awk '{print $3}' >>"$tmp/A"
  "$LOOP" --device "$device" --image_size "$size" --steps "$steps" >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
  grep '^step' "$tmp/log" | tail -n +2 | awk '{print $6}' >>"$tmp/B"
  "$PYTHON" bench/pytorch_loop.py --device "$device" --image-size "$size" --steps "$steps" >"$tmp/log" 2>&1 ||
    { cat "$tmp/log"; exit 1; }
  grep '^step' "$tmp/log" | tail -n +2 | awk '{print $6}' >>"$tmp/C"
done
a=$(median <"$tmp/A"); b=$(median <"$tmp/B"); c=$(median <"$tmp/C")
echo "AlexNet ${size}x${size}, seed ds_config.json (32 x 8 per step, Adam), synthetic data, device $device;"
echo "$rounds rounds of A B C, $steps steps each (step 1 dropped); $(date -u +%Y-%m-%d)"
echo
echo "| run | samples/s (median) | vs plain LibTorch |"
echo "|---|---|---|"
echo "| A pprun P=1 | $a | $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}') |"
echo "| B plain LibTorch loop | $b | 1.000 |"
echo "| C plain PyTorch loop | $c | $(awk -v c="$c" -v b="$b" 'BEGIN {printf "%.3f", c / b}') |"
echo
echo "interpreter's share of step time (1 - A/B): $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.1f%%", 100 * (1 - a / b)}') (goal: within 2%)"
