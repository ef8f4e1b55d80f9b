#!/usr/bin/env bash
# Writes an MLP model spec to stdout: LAYERS x (Linear(WIDTH, WIDTH) + ReLU), then a
# Linear(WIDTH, 10) head, cross-entropy over 10 classes. The benchmark scripts share it.
#   bash bench/mlp_spec.sh LAYERS WIDTH NAME > spec.textproto
set -euo pipefail
layers="$1" width="$2" name="${3:-mlp}"
linear() {
  echo "layers { name: \"$1\" kind: \"Linear\" attrs { key: \"in_features\" value { i: $width } } attrs { key: \"out_features\" value { i: $2 } } }"
}
echo "name: \"$name\""
for ((i = 0; i < layers; i++)); do
  linear "fc$i" "$width"
  echo "layers { name: \"act$i\" kind: \"ReLU\" }"
done
linear head 10
echo "input { shape: $width dtype: FLOAT32 }"
echo 'label { dtype: INT64 }'
echo 'loss: CROSS_ENTROPY'
echo 'num_classes: 10'
