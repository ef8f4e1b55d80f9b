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
bazel-bin/examples/alexnet_cifar10/train --pipeline-parallel-size 2 --steps 3 --print-every 1 \
  --deepspeed_config examples/alexnet_cifar10/ds_config.json "$@"
