#!/usr/bin/env bash
# Set up, build, compile the MLP example for 2 pipeline stages (1F1B), inspect the
# plan, and train it for 20 steps on synthetic data, printing the losses.
#   bash examples/mlp/run.sh [extra pprun flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/setup.sh
bazel build //tools/ppc //tools/pprun 2>&1 | grep -vE 'linux-sandbox|^INFO|^Loading|^Analyzing' || true
out=$(mktemp -d)
bazel-bin/tools/ppc/ppc compile --model examples/mlp/mlp.textproto --stages 2 --micro-batches 4 \
  --micro-batch-size 16 --schedule 1f1b --optimizer sgd --lr 0.1 --steps 20 --out "$out/mlp_p2.pb"
bazel-bin/tools/ppc/ppc inspect "$out/mlp_p2.pb" | sed -n '/^timeline/,$p'
echo
bazel-bin/tools/pprun/pprun "$out/mlp_p2.pb" --nproc 2 "$@"
echo "plan left at $out/mlp_p2.pb (ppc inspect $out/mlp_p2.pb)"
