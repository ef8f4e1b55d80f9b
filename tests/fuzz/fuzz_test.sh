#!/usr/bin/env bash
# Runs the deterministic fuzz driver over each target for a bounded number of inputs.
set -uo pipefail
DRIVER="$1"
INPUTS="${PPC_FUZZ_INPUTS:-1500}"
CORPUS="${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-ppc}/tests/fuzz/corpus"
[[ -d "$CORPUS" ]] || CORPUS="$(dirname "$0")/corpus"
ARTIFACTS="${TEST_UNDECLARED_OUTPUTS_DIR:-${TEST_TMPDIR:-/tmp}}/fuzz-artifacts"
status=0
for target in plan spec ds_config; do
  "$DRIVER" --target "$target" --corpus "$CORPUS/$target" --inputs "$INPUTS" --seed 20261125 \
    --artifacts "$ARTIFACTS" || status=1
done
[[ $status -eq 0 ]] && echo "no crashes, no hangs" || echo "FAIL: see $ARTIFACTS"
exit $status
