#!/usr/bin/env bash
# End-to-end interop between ppc and PyTorch (Debian's python3-torch 1.13 and
# python3-torchvision 0.14, run with /usr/bin/python3):
#
#   1. a small fake CIFAR-10 directory;
#   2. ppc trains AlexNet 3 steps (2 stages x 2 replicas), saves a checkpoint and an export,
#      then evaluates the checkpoint with --predict;
#   3. PyTorch checks the manifest, job.json, the Adam state, and that the layer files and
#      the export, loaded into torchvision's AlexNet, reproduce ppc's logits;
#   4. PyTorch writes a DeepSpeed-layout checkpoint; ppc imports it and its eval loss and
#      logits match PyTorch's;
#   5. a DeepSpeed-layout checkpoint with a wrongly shaped layer is refused, naming the file.
#
# usage: interop_test.sh PATH/TO/examples/alexnet_cifar10/train
# (bazel test //tests:interop_test passes it; outside Bazel, scratch goes to a mktemp dir)
set -euo pipefail

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[[ $# -eq 1 ]] || fail "usage: $0 PATH/TO/train"
[[ -x "$1" ]] || fail "train binary '$1' is not executable"
TRAIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"

if [[ -n "${TEST_SRCDIR:-}" ]]; then
  HELPERS="${TEST_SRCDIR}/${TEST_WORKSPACE:-ppc}/tests/interop"
else
  HELPERS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/interop"
fi
[[ -f "$HELPERS/common.py" ]] || fail "python helpers not found in $HELPERS"

PY=/usr/bin/python3
[[ -x "$PY" ]] || fail "$PY is missing (want Debian's python3 with python3-torch and python3-torchvision)"
"$PY" -c 'import torch, torchvision' || fail "$PY cannot import torch and torchvision"
export PYTHONDONTWRITEBYTECODE=1

if [[ -n "${TEST_TMPDIR:-}" ]]; then
  T="$TEST_TMPDIR/interop"
  rm -rf "$T"
  mkdir -p "$T"
else
  T="$(mktemp -d)"
  trap 'rm -rf "$T"' EXIT
fi

export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
IMAGE=64
SAMPLES=16   # --eval-steps 2 x train_batch_size 8
DATA="$T/cifar"
CK="$T/ck"
CONFIG="$T/ds_config.json"
cat >"$CONFIG" <<'JSON'
{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.0001}}, "steps_per_print": 1}
JSON

py() {
  local script="$1"
  shift
  "$PY" "$HELPERS/$script" "$@"
}

# Runs ppc's train with the common flags; stdout and stderr go to $T/<name>.out/.err.
# Returns train's exit status.
ppc_train() {
  local name="$1"
  shift
  local rc=0
  timeout 300 "$TRAIN" -p 2 --image-size "$IMAGE" --deepspeed_config "$CONFIG" --data "$DATA" \
    --plan-out "$T/$name.plan.pb" --timeout-s 120 "$@" >"$T/$name.out" 2>"$T/$name.err" || rc=$?
  return $rc
}

show() {
  echo "--- $1: stdout ---" >&2
  tail -n 40 "$T/$1.out" >&2 || true
  echo "--- $1: stderr ---" >&2
  tail -n 40 "$T/$1.err" >&2 || true
}

SECONDS=0

echo "== 1. fake CIFAR-10 in $DATA"
py make_cifar.py "$DATA" --train-records 40 --test-records 32 || fail "make_cifar.py failed"

echo "== 2. ppc: train 3 steps (2 stages x 2 replicas), save, export; then eval with --predict"
ppc_train train --nproc 4 --steps 3 --save-dir "$CK" --export "$T/export.pt" \
  || { show train; fail "ppc training (train -p 2 --nproc 4 --steps 3 --save-dir --export) exited non-zero"; }
cat "$T/train.out"
[[ -f "$CK/global_step3/manifest.json" ]] || { show train; fail "no $CK/global_step3/manifest.json after training"; }
[[ -f "$T/export.pt" ]] || { show train; fail "no export at $T/export.pt"; }

ppc_train eval_ck --load "$CK" --eval --eval-steps 2 --predict "$T/pred_ck.pt" \
  || { show eval_ck; fail "ppc eval of its own checkpoint exited non-zero"; }
cat "$T/eval_ck.out"
[[ -f "$T/pred_ck.pt" ]] || { show eval_ck; fail "ppc wrote no --predict file"; }

echo "== 3. PyTorch: ppc's checkpoint and export in torchvision's AlexNet"
py check_ppc_checkpoint.py --data "$DATA" --ckpt "$CK" --export "$T/export.pt" --predict "$T/pred_ck.pt" \
  --step 3 --image-size "$IMAGE" --samples "$SAMPLES" --log "$T/eval_ck.out" || fail "ppc checkpoint/export check failed"

echo "== 4. PyTorch writes a DeepSpeed-layout checkpoint; ppc imports and evaluates it"
py write_deepspeed_checkpoint.py "$T/ds" --seed 1234 --data "$DATA" --image-size "$IMAGE" --samples "$SAMPLES" \
  --reference "$T/ds_reference.pt" || fail "write_deepspeed_checkpoint.py failed"
[[ "$(cat "$T/ds/latest")" == global_step7 ]] || fail "DeepSpeed dir's latest is not global_step7"
[[ ! -e "$T/ds/global_step7/layer_14-model_states.pt" ]] || fail "a file was written for the flatten lambda"
ppc_train eval_ds --load "$T/ds" --eval --eval-steps 2 --predict "$T/pred_ds.pt" --metrics-out "$T/eval_ds.metrics" \
  || { show eval_ds; fail "ppc could not import/evaluate the DeepSpeed-layout checkpoint"; }
cat "$T/eval_ds.out"
grep -q "imported" "$T/eval_ds.err" \
  || { show eval_ds; fail "ppc did not note on stderr that it imported the DeepSpeed checkpoint's weights"; }
grep "imported" "$T/eval_ds.err"
py check_deepspeed_eval.py --reference "$T/ds_reference.pt" --predict "$T/pred_ds.pt" \
  --metrics "$T/eval_ds.metrics" --log "$T/eval_ds.out" || fail "ppc's eval of the DeepSpeed checkpoint is wrong"

echo "== 5. a DeepSpeed-layout checkpoint with a wrongly shaped layer is refused"
py write_deepspeed_checkpoint.py "$T/ds_bad" --seed 1234 --bad-layer 21 || fail "writing the bad checkpoint failed"
if ppc_train eval_bad --load "$T/ds_bad" --eval --eval-steps 2; then
  show eval_bad
  fail "ppc accepted a DeepSpeed checkpoint whose classifier.6 has 7 outputs"
fi
cat "$T/eval_bad.out" "$T/eval_bad.err" >"$T/eval_bad.all"
grep "layer_21-model_states.pt" "$T/eval_bad.all" | grep -q "shape" \
  || { show eval_bad; fail "ppc's error for the wrongly shaped layer does not name layer_21-model_states.pt and 'shape'"; }
grep "layer_21-model_states.pt" "$T/eval_bad.all" | head -n 3

# The checkpoint and export are ~900 MB; do not leave them behind.
rm -rf "$CK" "$T/export.pt"
echo "all interop checks passed (${SECONDS}s)"
