#!/usr/bin/env bash
# The ppc command line, as a user runs it.
set -uo pipefail
PPC="$1"
MODEL="$2"
DSCONFIG="$3"
T="${TEST_TMPDIR:-$(mktemp -d)}"
fail() { echo "FAIL: $*"; exit 1; }

"$PPC" --list-passes > "$T/passes" || fail "--list-passes"
grep -q '^schedule-1f1b ' "$T/passes" || fail "schedule-1f1b not listed"
[ "$(cut -d' ' -f1 "$T/passes" | sort -c && echo sorted)" = sorted ] || fail "passes not alphabetical"

"$PPC" compile --model "$MODEL" --stages 2 --micro-batches 4 --micro-batch-size 8 --out "$T/p.txt" 2> "$T/err" \
  || fail "compile: $(cat "$T/err")"
head -1 "$T/p.txt" | grep -q '^ppc-plan v5 fingerprint=[0-9a-f]\{16\}$' || fail "text plan header"

"$PPC" inspect --unit-costs "$T/p.txt" > "$T/inspect" || fail "inspect"
grep -q 'verifier: ok' "$T/inspect" || fail "inspect: verifier line"
grep -q 'stage 0  |0F0|0F1|' "$T/inspect" || fail "inspect: timeline"
grep -q 'bubble fraction 0.2000' "$T/inspect" || fail "inspect: bubble fraction for P=2 M=4"

"$PPC" inspect --unit-costs --json "$T/p.txt" > "$T/json" || fail "inspect --json"
grep -q '"bubble_fraction": 0.200000' "$T/json" || fail "json bubble fraction"

# opt: placing receives again on a placed plan changes nothing; verify passes.
"$PPC" opt --passes=verify,place-comm "$T/p.txt" "$T/q.txt" || fail "opt"
diff <(tail -n +2 "$T/p.txt") <(tail -n +2 "$T/q.txt") > /dev/null || fail "opt changed a lowered plan"

# --print-ir-after-all and --dump-to
"$PPC" compile --model "$MODEL" --stages 2 --print-ir-after-all --dump-to "$T/dump" > "$T/all" 2>&1 || fail "print-ir"
[ "$(grep -c '^// IR after ' "$T/all")" = 7 ] || fail "expected 7 IR dumps, got $(grep -c '^// IR after ' "$T/all")"
[ -f "$T/dump/02-schedule-1f1b.txt" ] || fail "dump-to"

# Errors: clear, non-zero, naming what is wrong.
"$PPC" compile --model "$MODEL" --stages 20 > /dev/null 2> "$T/e1" && fail "20 stages accepted"
grep -q 'cannot give each of 20 virtual stages' "$T/e1" || fail "stage error: $(cat "$T/e1")"
"$PPC" compile --model /nonexistent.textproto > /dev/null 2> "$T/e2" && fail "missing model accepted"
grep -q "cannot open '/nonexistent.textproto'" "$T/e2" || fail "missing model error: $(cat "$T/e2")"
"$PPC" opt --passes='schedule-zigzag' "$T/p.txt" "$T/r.txt" 2> "$T/e3" && fail "unknown pass accepted"
grep -q "unknown pass 'schedule-zigzag'" "$T/e3" || fail "unknown pass error"
"$PPC" compile --model "$MODEL" --stages 2 --passes='infer-shapes,partition,schedule-1f1b,lower' \
  --dump-to "$T/fail" > /dev/null 2> "$T/e4" && fail "p2p without buffers accepted"
[ -f "$T/fail/reproducer.txt" ] || fail "no reproducer written on failure"
# DeepSpeed config: the seed's 256 = 8 x accumulation x 2 replicas -> 16 micro-batches of 8.
"$PPC" compile --model "$MODEL" --stages 2 --data-parallel 2 --deepspeed_config "$DSCONFIG" --out "$T/ds.txt" 2> "$T/e5" \
  || fail "deepspeed config: $(cat "$T/e5")"
grep -q 'micro_batches: 16' "$T/ds.txt" || fail "deepspeed micro-batches"
grep -q 'micro_batch_size: 8' "$T/ds.txt" || fail "deepspeed micro-batch size"
grep -q 'type: "adam"' "$T/ds.txt" || fail "deepspeed optimizer"
echo '{"train_batch_size": 100, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4}' > "$T/bad.json"
"$PPC" compile --model "$MODEL" --deepspeed_config "$T/bad.json" > /dev/null 2> "$T/e6" && fail "bad ds config accepted"
grep -q "'train_batch_size' is 100" "$T/e6" || fail "bad ds config error: $(cat "$T/e6")"
# A training plan carries forward-only eval programs.
grep -q '^== eval stage 1 num_slots=' "$T/p.txt" || fail "no eval programs in a training plan"
grep -q '== eval stage 0 (forward only)' "$T/inspect" || fail "inspect: eval programs"

# ZeRO stage 1: sharded step + gather, and inspect shows optimizer state per rank halved at D=2.
"$PPC" compile --model "$MODEL" --stages 2 --data-parallel 2 --optimizer adam --zero-stage 1 --out "$T/z.txt"   2> "$T/ez" || fail "zero-stage 1: $(cat "$T/ez")"
grep -q '^optimizer_step sharded=true$' "$T/z.txt" || fail "zero-1 step not sharded"
grep -q '^gather_params$' "$T/z.txt" || fail "zero-1 without gather_params"
"$PPC" inspect --json "$T/z.txt" > "$T/zj" || fail "inspect zero-1"
"$PPC" compile --model "$MODEL" --stages 2 --data-parallel 2 --optimizer adam --out "$T/z0.txt" 2> /dev/null
"$PPC" inspect --json "$T/z0.txt" > "$T/z0j" || fail "inspect zero-0"
# The MLP's stage 0 holds 32*64+64 + 64*64+64 = 6272 parameters; Adam keeps 2 floats (8 bytes) each.
grep -q '"stage": 0, "params": 6272,.*"optimizer_state_bytes_per_rank": 25088, "optimizer_state_bytes_per_rank_unsharded": 50176' "$T/zj"   || fail "zero-1 optimizer bytes: $(grep '"stage": 0' "$T/zj")"
grep -q '"stage": 0, "params": 6272,.*"optimizer_state_bytes_per_rank": 50176, "optimizer_state_bytes_per_rank_unsharded": 50176' "$T/z0j"   || fail "zero-0 optimizer bytes: $(grep '"stage": 0' "$T/z0j")"
"$PPC" inspect "$T/z.txt" | grep 'optimizer state per rank (adam, ZeRO stage 1)' >/dev/null || fail "inspect zero table"
"$PPC" compile --model "$MODEL" --data-parallel 2 --zero-stage 2 > /dev/null 2> "$T/e7" && fail "zero stage 2 accepted"
grep -q 'ZeRO stage 2 is not supported with pipeline parallelism' "$T/e7" || fail "zero 2 error: $(cat "$T/e7")"
echo '{"train_batch_size": 16, "train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 3}}' > "$T/z3.json"
"$PPC" compile --model "$MODEL" --data-parallel 2 --deepspeed_config "$T/z3.json" > /dev/null 2> "$T/e8" \
  && fail "ds zero stage 3 accepted"
grep -q "zero_optimization.stage" "$T/e8" || fail "ds zero 3 error: $(cat "$T/e8")"
# --passes names the schedule: the plan records it unless --schedule says otherwise (warned).
"$PPC" compile --model "$MODEL" --stages 2 --passes=infer-shapes,partition,schedule-gpipe,assign-buffers,lower \
  --out "$T/g.txt" 2> "$T/eg" || fail "compile --passes gpipe: $(cat "$T/eg")"
grep -q 'schedule: "gpipe"' "$T/g.txt" || fail "--passes with schedule-gpipe should record schedule gpipe"
"$PPC" compile --model "$MODEL" --stages 2 --schedule 1f1b --passes=infer-shapes,partition,schedule-gpipe,assign-buffers,lower \
  --out "$T/g2.txt" 2> "$T/eg2" || fail "compile --schedule 1f1b --passes gpipe: $(cat "$T/eg2")"
grep -q "warning: --passes runs schedule-gpipe but the plan will record schedule '1f1b'" "$T/eg2" \
  || fail "no warning for a schedule that --passes contradicts: $(cat "$T/eg2")"

# Pass plugins (compiler/pass_plugin.h; examples/custom_schedule tests a real one): a bad
# path is an error naming it, never a signal.
plugin_error() {  # plugin_error PATH TEXT
  "$PPC" --pass-plugin="$1" --list-passes > /dev/null 2> "$T/ep"
  local rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] || fail "--pass-plugin=$1: exit $rc"
  grep -qF "pass plugin '$1' $2" "$T/ep" || fail "--pass-plugin=$1: $(cat "$T/ep")"
}
plugin_error /nonexistent/libplugin.so "does not exist"
plugin_error "$T" "is a directory"
plugin_error "$MODEL" "is not a loadable shared library"
plugin_error "$PPC" "is not a loadable shared library"
"$PPC" --pass-plugin= --list-passes > /dev/null 2> "$T/ep" && fail "empty --pass-plugin accepted"
grep -q -- '--pass-plugin is empty' "$T/ep" || fail "empty --pass-plugin: $(cat "$T/ep")"
echo "all ppc CLI checks passed"
