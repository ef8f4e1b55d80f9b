#!/usr/bin/env bash
# The custom_schedule example end to end, as a user runs it: ppc loads the pass plugin
# (schedule-memcap-1f1b{k=K}) with --pass-plugin, the compiled plans keep at most K
# micro-batches in flight per stage (ppc inspect), pprun trains them at P = 2 and 4 to
# the same losses and final weights as one process (within 1e-5), and bad plugins and
# bad options are clear errors, never a crash.
#   custom_schedule_test.sh PPC PPRUN PLUGIN WRONG_ABI_PLUGIN DUPLICATE_PLUGIN GPIPE_PLUGIN MODEL GOLDEN
# GOLDEN (testdata/mlp_p4_m4_k2.expected.txt) holds the stage programs of the MLP at P=4,
# M=4, K=2 after schedule-memcap-1f1b{k=2},assign-buffers. Regenerate it, then review
# the diff, from the repository root:
#   bazel-bin/tools/ppc/ppc --pass-plugin=bazel-bin/examples/custom_schedule/libmemcap_1f1b.so compile \
#     --model examples/mlp/mlp.textproto --stages 4 --micro-batches 4 --micro-batch-size 4 \
#     --passes='infer-shapes,partition,schedule-memcap-1f1b{k=2},assign-buffers' |
#     sed -n '/^== stage 0/,$p' > examples/custom_schedule/testdata/mlp_p4_m4_k2.expected.txt
set -uo pipefail
PPC="$1"
PPRUN="$2"
PLUGIN="$3"
WRONG_ABI="$4"
DUPLICATE="$5"
GPIPE="$6"
MODEL="$7"
GOLDEN="$8"
T="${TEST_TMPDIR:-$(mktemp -d)}"
fail() { echo "FAIL: $*"; exit 1; }
# One BLAS thread per rank, as tests/pprun_util.cc runs pprun: the reference and the
# pipeline then use the same kernels and differ only by the order of gradient sums.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

M=4           # micro-batches per step
STEPS=5
TRAIN=(--micro-batches "$M" --micro-batch-size 4 --optimizer sgd --lr 0.2 --seed 1138 --steps "$STEPS")
pipeline() { echo "infer-shapes,partition,schedule-memcap-1f1b{k=$1},assign-buffers,lower,lower-eval,place-comm"; }

# expect_error NAME 'TEXT'... -- COMMAND...: COMMAND exits non-zero, by exit() and not by
# a signal, and its stderr contains every TEXT (fixed strings).
expect_error() {
  local name="$1"
  shift
  local texts=()
  while [ "$1" != "--" ]; do texts+=("$1"); shift; done
  shift
  "$@" > "$T/$name.out" 2> "$T/$name.err"
  local rc=$?
  [ "$rc" -ne 0 ] || fail "$name: accepted (exit 0): $*"
  [ "$rc" -lt 128 ] || fail "$name: killed by a signal (exit $rc): $(cat "$T/$name.err")"
  for text in "${texts[@]}"; do
    grep -qF -- "$text" "$T/$name.err" || fail "$name: stderr lacks '$text': $(cat "$T/$name.err")"
  done
}

# --- Loading: listed, sorted, repeatable and comma-separated --------------------------
"$PPC" --pass-plugin="$PLUGIN" --list-passes > "$T/passes" 2> "$T/passes.err" || fail "--list-passes: $(cat "$T/passes.err")"
grep -q "^schedule-memcap-1f1b .*{k=K} \[plugin $PLUGIN\]$" "$T/passes" || fail "plugin pass not listed: $(cat "$T/passes")"
grep -q '^schedule-1f1b ' "$T/passes" || fail "built-in passes gone"
[ "$(cut -d' ' -f1 "$T/passes" | sort -c && echo sorted)" = sorted ] || fail "passes not alphabetical"
for form in "--pass-plugin=$PLUGIN,$GPIPE" "--pass-plugin $PLUGIN --pass-plugin=$GPIPE" "--pass_plugin=$GPIPE --pass-plugin $PLUGIN"; do
  # shellcheck disable=SC2086  # the form is split into words on purpose
  "$PPC" $form --list-passes > "$T/both" 2> "$T/both.err" || fail "$form: $(cat "$T/both.err")"
  grep -q '^schedule-memcap-1f1b ' "$T/both" && grep -q '^schedule-plugin-gpipe ' "$T/both" \
    || fail "$form: both plugins' passes should be listed: $(cat "$T/both")"
done
# Without the plugin the schedule is unknown.
expect_error no_plugin "unknown schedule 'memcap-1f1b'" -- \
  "$PPC" compile --model "$MODEL" --stages 2 --schedule memcap-1f1b "${TRAIN[@]}" --out "$T/none.pb"

# --- The order, golden: what the pass decided (and the slots assign-buffers gave) --------
"$PPC" --pass-plugin="$PLUGIN" compile --model "$MODEL" --stages 4 --micro-batches 4 --micro-batch-size 4 \
  --passes='infer-shapes,partition,schedule-memcap-1f1b{k=2},assign-buffers' > "$T/golden.txt" 2> "$T/golden.err" \
  || fail "golden compile: $(cat "$T/golden.err")"
diff "$GOLDEN" <(sed -n '/^== stage 0/,$p' "$T/golden.txt") > "$T/golden.diff" \
  || fail "the programs differ from $GOLDEN (regenerate it as this script's header says, and review):
$(cat "$T/golden.diff")"

# --- Compile with K = 1 and 2 at P = 2 and 4; the cap holds ---------------------------
# peak_in_flight PLAN: "stage peak" per stage, counted from the programs ppc inspect lists
# (forwards minus backwards so far; eval programs are forward-only and not counted).
peak_in_flight() {
  "$PPC" inspect --unit-costs "$1" | awk '
    /^== stage / { stage = $3; n = 0; on = 1; peak[stage] = 0; next }
    /^== eval stage / || /^timeline/ { on = 0 }
    on && /compute kind=FORWARD / { if (++n > peak[stage]) peak[stage] = n }
    on && /compute kind=BACKWARD / { n-- }
    END { for (s in peak) print s, peak[s] }' | sort -n
}
min() { local m="$1"; shift; for x in "$@"; do [ "$x" -lt "$m" ] && m="$x"; done; echo "$m"; }

for P in 2 4; do
  for K in 1 2; do
    plan="$T/memcap_p${P}_k${K}.pb"
    "$PPC" --pass-plugin="$PLUGIN" compile --model "$MODEL" --stages "$P" "${TRAIN[@]}" --schedule memcap-1f1b \
      --passes="$(pipeline "$K")" --out "$plan" 2> "$T/compile.err" || fail "compile P=$P K=$K: $(cat "$T/compile.err")"
    # The plan is self-contained: inspecting it needs no plugin.
    "$PPC" inspect --unit-costs "$plan" > "$T/inspect" || fail "inspect P=$P K=$K: $(cat "$T/inspect")"
    grep -q 'verifier: ok' "$T/inspect" || fail "P=$P K=$K: verifier"
    grep -q '^schedule memcap-1f1b, 4 micro-batches' "$T/inspect" || fail "P=$P K=$K: schedule not recorded"
    # In flight per stage: exactly min(K, P - s, M), so at most K.
    peak_in_flight "$plan" > "$T/peak"
    [ "$(wc -l < "$T/peak")" -eq "$P" ] || fail "P=$P K=$K: expected $P stage programs: $(cat "$T/peak")"
    while read -r s n; do
      want=$(min "$K" $((P - s)) "$M")
      [ "$n" -le "$K" ] || fail "P=$P K=$K stage $s: $n micro-batches in flight, more than K"
      [ "$n" -eq "$want" ] || fail "P=$P K=$K stage $s: $n in flight, expected min(K, P-s, M) = $want"
    done < "$T/peak"
    # The slots assign-buffers gave each stage (one per micro-batch in flight): at most K.
    # (inspect's "peak live" also counts buffers place-comm receives into ahead of time.)
    "$PPC" inspect --unit-costs --json "$plan" > "$T/json" || fail "inspect --json P=$P K=$K"
    slots=$(grep '^ *{"stage": ' "$T/json" | grep -o '"num_slots": [0-9]*' | awk '{print $2}')
    [ "$(echo "$slots" | wc -l)" -eq "$P" ] || fail "P=$P K=$K: num_slots per stage: $slots"
    for n in $slots; do [ "$n" -le "$K" ] || fail "P=$P K=$K: a stage has $n slots, more than K"; done
    echo "P=$P K=$K: in flight per stage $(awk '{printf "%s ", $2}' "$T/peak")| slots $(echo $slots) | $(grep -o 'bubble fraction [0-9.]*' "$T/inspect")"
  done
done
# K = 1 is fully sequential: at unit costs (F=1, B=2) each stage is busy 3 of every 6 units.
"$PPC" inspect --unit-costs "$T/memcap_p2_k1.pb" | grep 'bubble fraction 0.5000' >/dev/null || fail "K=1 is not sequential"
# The cap costs bubble: P=4, K=2 is busier-idle than 1F1B, K=1 more so.
bubble() { "$PPC" inspect --unit-costs "$1" | grep -o 'bubble fraction [0-9.]*' | awk '{print $3}'; }
"$PPC" compile --model "$MODEL" --stages 4 "${TRAIN[@]}" --schedule 1f1b --out "$T/1f1b_p4.pb" 2> /dev/null || fail "1f1b P=4"
awk -v a="$(bubble "$T/1f1b_p4.pb")" -v b="$(bubble "$T/memcap_p4_k2.pb")" -v c="$(bubble "$T/memcap_p4_k1.pb")" \
  'BEGIN { exit !(a < b && b < c) }' || fail "bubbles should grow as K shrinks (1f1b, K=2, K=1)"

# A large K is 1F1B: the same programs, instruction for instruction. Without --schedule,
# the plan records the one schedule pass --passes runs.
"$PPC" --pass-plugin="$PLUGIN" compile --model "$MODEL" --stages 4 "${TRAIN[@]}" --passes="$(pipeline 100)" \
  --out "$T/k100.txt" 2> "$T/k100.err" || fail "K=100: $(cat "$T/k100.err")"
grep -q 'schedule: "memcap-1f1b"' "$T/k100.txt" || fail "K=100: config.schedule should be memcap-1f1b"
"$PPC" compile --model "$MODEL" --stages 4 "${TRAIN[@]}" --schedule 1f1b --out "$T/1f1b.txt" 2> /dev/null || fail "1f1b"
diff <(sed -n '/^== stage 0/,$p' "$T/1f1b.txt") <(sed -n '/^== stage 0/,$p' "$T/k100.txt") > "$T/k100.diff" \
  || fail "K=100 should be 1F1B: $(head -20 "$T/k100.diff")"

# --- Train: the same losses and final weights as one process --------------------------
# train PLAN NPROC NAME: pprun with the metrics and the final weights written.
train() {
  rm -rf "$T/$3.weights" "$T/$3.metrics"
  "$PPRUN" "$1" --nproc "$2" --quiet --timeout-s 120 --metrics-out "$T/$3.metrics" --dump-weights "$T/$3.weights" \
    > "$T/$3.log" 2>&1 || fail "pprun $3 (exit $?): $(tail -20 "$T/$3.log")"
  [ "$(awk 'NF == 3' "$T/$3.metrics" | wc -l)" -eq "$STEPS" ] || fail "pprun $3: expected $STEPS losses"
}
# same_training REF RUN: every step's loss and every weight within 1e-5 (relative to
# magnitudes above 1); NaN, inf or a missing value is a difference. The awk programs read
# "reference value" pairs and print the largest difference.
CLOSE='
  { if ($1 !~ /^-?[0-9]/ || $2 !~ /^-?[0-9]/) { print what "[" NR "]: " $2 " vs reference " $1 > "/dev/stderr"; bad = 1; exit }
    d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; if (m < 1) m = 1
    if (d > 1e-5 * m) { print what "[" NR "]: " $2 " vs reference " $1 > "/dev/stderr"; bad = 1; exit }
    if (d > worst) worst = d }
  END { print worst + 0; exit bad }'
same_training() {
  local ref="$1" run="$2" worst
  diff <(awk 'NF == 3 { print $1 }' "$T/$ref.metrics") <(awk 'NF == 3 { print $1 }' "$T/$run.metrics") > /dev/null \
    || fail "$run: other steps than the reference"
  [ "$(awk 'NF == 3' "$T/$ref.metrics" | wc -l)" -eq "$STEPS" ] || fail "$ref: expected $STEPS losses"
  worst=$(paste <(awk 'NF == 3 { print $2 }' "$T/$ref.metrics") <(awk 'NF == 3 { print $2 }' "$T/$run.metrics") |
    awk -v what="$run loss of step" "$CLOSE") || fail "$run: losses differ from one process"
  echo "$run: $STEPS losses, max |diff| $worst"
  local files=0 w
  worst=0
  for f in "$T/$ref.weights"/*.f32; do
    [ -f "$f" ] || fail "$ref: no weights dumped"
    local g="$T/$run.weights/$(basename "$f")"
    [ -f "$g" ] || fail "$run: no $(basename "$f")"
    [ "$(stat -c %s "$f")" = "$(stat -c %s "$g")" ] || fail "$run: $(basename "$f") has another size"
    w=$(paste <(od -An -v -tf4 -w4 "$f") <(od -An -v -tf4 -w4 "$g") | awk -v what="$run $(basename "$f")" "$CLOSE") \
      || fail "$run: weights differ from one process"
    worst=$(awk -v a="$worst" -v b="$w" 'BEGIN { print (b > a ? b : a) }')
    files=$((files + 1))
  done
  [ "$files" -eq "$(find "$T/$run.weights" -name '*.f32' | wc -l)" ] || fail "$run: other weight files than the reference"
  echo "$run: $files weight tensors, max |diff| $worst"
}

"$PPC" compile --model "$MODEL" --stages 1 "${TRAIN[@]}" --out "$T/ref.pb" 2> "$T/ref.err" || fail "ref: $(cat "$T/ref.err")"
train "$T/ref.pb" 1 ref
for P in 2 4; do
  for K in 1 2; do
    train "$T/memcap_p${P}_k${K}.pb" "$P" "memcap_p${P}_k${K}"
    same_training ref "memcap_p${P}_k${K}"
  done
done

# --- A plugin schedule without options: --schedule NAME, the default pipeline -----------
"$PPC" --pass-plugin="$GPIPE" compile --model "$MODEL" --stages 2 "${TRAIN[@]}" --schedule plugin-gpipe \
  --out "$T/plugin_gpipe.pb" 2> "$T/pg.err" || fail "--schedule plugin-gpipe: $(cat "$T/pg.err")"
grep -q 'plugin-gpipe' "$T/pg.err" || fail "plugin-gpipe: $(cat "$T/pg.err")"
"$PPC" inspect "$T/plugin_gpipe.pb" > "$T/pg.inspect" && grep -q '^schedule plugin-gpipe,' "$T/pg.inspect" || fail "plugin-gpipe: schedule not recorded"
train "$T/plugin_gpipe.pb" 2 plugin_gpipe
same_training ref plugin_gpipe

# --- Bad plugins: clear errors naming the plugin, never a signal ------------------------
expect_error wrong_abi "pass plugin '$WRONG_ABI' was built for pass plugin ABI 7; this ppc has ABI 2: rebuild it against this ppc's headers" -- \
  "$PPC" --pass-plugin="$WRONG_ABI" --list-passes
expect_error duplicate "pass plugin '$DUPLICATE' cannot register pass 'schedule-1f1b'" "ALREADY_EXISTS" "already registered" -- \
  "$PPC" --pass-plugin="$DUPLICATE" compile --model "$MODEL" --stages 2 --out "$T/dup.pb"
[ ! -e "$T/dup.pb" ] || fail "a failed plugin load still compiled"
expect_error nonexistent "pass plugin '/nonexistent/libnothing.so' does not exist" -- \
  "$PPC" --pass-plugin=/nonexistent/libnothing.so --list-passes
mkdir -p "$T/a_directory.so"
expect_error directory "pass plugin '$T/a_directory.so' is a directory, not a shared library" -- \
  "$PPC" --pass-plugin="$T/a_directory.so" --list-passes
for _ in $(seq 40); do echo 'schedule-memcap-1f1b: not a library, just text'; done > "$T/text.so"
expect_error text_file "pass plugin '$T/text.so' is not a loadable shared library" -- \
  "$PPC" --pass-plugin="$T/text.so" --list-passes
expect_error the_model_is_no_plugin "pass plugin '$MODEL' is not a loadable shared library" -- \
  "$PPC" --pass-plugin="$MODEL" --list-passes
expect_error empty_path "--pass-plugin=$PLUGIN,,x.so has an empty path" -- "$PPC" --pass-plugin="$PLUGIN,,x.so" --list-passes
expect_error no_value "--pass-plugin needs a value" -- "$PPC" --list-passes --pass-plugin
expect_error twice "pass plugin '$PLUGIN' cannot register pass 'schedule-memcap-1f1b'" -- \
  "$PPC" --pass-plugin="$PLUGIN" --pass-plugin="$PLUGIN" --list-passes

# --- Bad options: clear errors ----------------------------------------------------------
memcap() { "$PPC" --pass-plugin="$PLUGIN" compile --model "$MODEL" --stages 2 "${TRAIN[@]}" --schedule memcap-1f1b "$@" --out "$T/bad.pb"; }
expect_error k_missing "schedule-memcap-1f1b needs option k" "--passes=" -- memcap
expect_error k_zero "schedule-memcap-1f1b{k=0}: k must be >= 1" -- memcap --passes="$(pipeline 0)"
expect_error k_negative "schedule-memcap-1f1b{k=-3}: k must be >= 1" -- memcap --passes="$(pipeline -3)"
expect_error k_text "schedule-memcap-1f1b{k=two}: k is not a whole number" -- memcap --passes="$(pipeline two)"
expect_error k_fraction "schedule-memcap-1f1b{k=1.5}: k is not a whole number" -- memcap --passes="$(pipeline 1.5)"
expect_error k_empty "schedule-memcap-1f1b{k=}: k is not a whole number" -- memcap --passes="$(pipeline '')"
expect_error k_huge "schedule-memcap-1f1b{k=99999999999999999999}: k is too large" "65536" -- \
  memcap --passes="$(pipeline 99999999999999999999)"
expect_error k_over_limit "schedule-memcap-1f1b{k=65537}: k is too large" -- memcap --passes="$(pipeline 65537)"
expect_error unknown_option "pass 'schedule-memcap-1f1b' has no option 'j'; it accepts: k" -- \
  memcap --passes="infer-shapes,partition,schedule-memcap-1f1b{j=2},assign-buffers,lower"
expect_error virtual_stages "schedule-memcap-1f1b: runs one virtual stage per stage, got 2" -- \
  memcap --virtual-stages 2 --passes="$(pipeline 2)"
echo "all custom_schedule checks passed"
