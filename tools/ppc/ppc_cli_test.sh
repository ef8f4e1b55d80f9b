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
head -1 "$T/p.txt" | grep -q '^ppc-plan v1 fingerprint=[0-9a-f]\{16\}$' || fail "text plan header"

"$PPC" inspect "$T/p.txt" > "$T/inspect" || fail "inspect"
grep -q 'verifier: ok' "$T/inspect" || fail "inspect: verifier line"
grep -q 'stage 0  |F0|F1|' "$T/inspect" || fail "inspect: timeline"
grep -q 'bubble fraction 0.2000' "$T/inspect" || fail "inspect: bubble fraction for P=2 M=4"

"$PPC" inspect --json "$T/p.txt" > "$T/json" || fail "inspect --json"
grep -q '"bubble_fraction": 0.200000' "$T/json" || fail "json bubble fraction"

# opt: re-running lowering on a lowered plan changes nothing; verify passes.
"$PPC" opt --passes=verify,insert-p2p "$T/p.txt" "$T/q.txt" || fail "opt"
diff <(tail -n +2 "$T/p.txt") <(tail -n +2 "$T/q.txt") > /dev/null || fail "opt changed a lowered plan"

# --print-ir-after-all and --dump-to
"$PPC" compile --model "$MODEL" --stages 2 --print-ir-after-all --dump-to "$T/dump" > "$T/all" 2>&1 || fail "print-ir"
[ "$(grep -c '^// IR after ' "$T/all")" = 7 ] || fail "expected 7 IR dumps, got $(grep -c '^// IR after ' "$T/all")"
[ -f "$T/dump/02-schedule-1f1b.txt" ] || fail "dump-to"

# Errors: clear, non-zero, naming what is wrong.
"$PPC" compile --model "$MODEL" --stages 20 > /dev/null 2> "$T/e1" && fail "20 stages accepted"
grep -q 'cannot give each of 20 stages a layer' "$T/e1" || fail "stage error: $(cat "$T/e1")"
"$PPC" compile --model /nonexistent.textproto > /dev/null 2> "$T/e2" && fail "missing model accepted"
grep -q "cannot open '/nonexistent.textproto'" "$T/e2" || fail "missing model error: $(cat "$T/e2")"
"$PPC" opt --passes='schedule-zigzag' "$T/p.txt" "$T/r.txt" 2> "$T/e3" && fail "unknown pass accepted"
grep -q "unknown pass 'schedule-zigzag'" "$T/e3" || fail "unknown pass error"
"$PPC" compile --model "$MODEL" --stages 2 --passes='infer-shapes,partition,schedule-1f1b,insert-p2p' \
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
echo "all ppc CLI checks passed"
