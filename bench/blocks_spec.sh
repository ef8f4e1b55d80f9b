#!/usr/bin/env bash
# Writes a model spec of transformer-like MLP blocks to stdout: BLOCKS x (LayerNorm(WIDTH),
# Linear(WIDTH, WIDTH), GELU, Dropout(0.1)), then a Linear(WIDTH, 10) head, cross-entropy
# over 10 classes. Its forwards keep more than its weight gradients need (the GELU's
# input, the dropout mask), as a transformer layer's do.
#   bash bench/blocks_spec.sh BLOCKS WIDTH NAME > spec.textproto
set -euo pipefail
blocks="$1" width="$2" name="${3:-blocks}"
echo "name: \"$name\""
for ((i = 0; i < blocks; i++)); do
  echo "layers { name: \"ln$i\" kind: \"LayerNorm\" attrs { key: \"normalized_shape\" value { i: $width } } }"
  echo "layers { name: \"fc$i\" kind: \"Linear\" attrs { key: \"in_features\" value { i: $width } } attrs { key: \"out_features\" value { i: $width } } }"
  echo "layers { name: \"gelu$i\" kind: \"GELU\" }"
  echo "layers { name: \"drop$i\" kind: \"Dropout\" attrs { key: \"p\" value { f: 0.1 } } }"
done
echo "layers { name: \"head\" kind: \"Linear\" attrs { key: \"in_features\" value { i: $width } } attrs { key: \"out_features\" value { i: 10 } } }"
echo "input { shape: $width dtype: FLOAT32 }"
echo 'label { dtype: INT64 }'
echo 'loss: CROSS_ENTROPY'
echo 'num_classes: 10'
