#!/usr/bin/env bash
# The main job: set up, build, and train AlexNet on CIFAR-10-shaped synthetic data on 2
# pipeline stages with the seed's ds_config.json (global batch 256 = 32 micro-batches
# of 8, Adam), printing the loss every step. Extra flags go to the example, e.g.
#   bash examples/alexnet_cifar10/run.sh --steps 20 --image-size 64
#   bash examples/alexnet_cifar10/run.sh -p 0 --nproc 2        # the seed's base mode
#   bash examples/alexnet_cifar10/run.sh --data /path/to/cifar-10-batches-bin
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/setup.sh
bazel build //examples/alexnet_cifar10:train //tools/ppc 2>&1 | grep -vE 'linux-sandbox|^INFO|^Loading|^Analyzing' || true
# Defaults for what the caller did not give (a flag given twice is an error).
args=()
given() {
  local f alt="--$(echo "${1#--}" | tr - _)"
  for f in "${@:2}"; do
    [[ "$f" == "$1" || "$f" == "$1="* || "$f" == "$alt" || "$f" == "$alt="* ]] && return 0
  done
  return 1
}
given --pipeline-parallel-size "$@" || given -p "$@" || args+=(--pipeline-parallel-size 2)
given --steps "$@" || args+=(--steps 3)
given --print-every "$@" || args+=(--print-every 1)
given --deepspeed-config "$@" || args+=(--deepspeed_config examples/alexnet_cifar10/ds_config.json)
bazel-bin/examples/alexnet_cifar10/train "${args[@]}" "$@"
