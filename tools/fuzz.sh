#!/usr/bin/env bash
# Fuzzes what ppc reads (plans, model specs, DeepSpeed configs) for N inputs per target
# and prints one line per target and a total:
#   inputs N, clean errors N, crashes 0, hangs 0
# With clang's libFuzzer (Debian's clang + libclang-rt-14-dev) the targets are built as
# coverage-guided fuzzers under ASan + UBSan; otherwise the deterministic mutation driver
# runs (tests/fuzz/driver.cc, also what CI runs). Crashing or hanging inputs are kept
# in $PPC_FUZZ_ARTIFACTS (default /tmp/ppc-fuzz-artifacts).
#   bash tools/fuzz.sh [N=10000]
set -uo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
ART="${PPC_FUZZ_ARTIFACTS:-/tmp/ppc-fuzz-artifacts}"
mkdir -p "$ART"
total_inputs=0; total_clean=0; total_crashes=0; total_hangs=0

libfuzzer_ok() {
  command -v clang++ >/dev/null || return 1
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$ART/probe.cc"
  clang++ -fsanitize=fuzzer "$ART/probe.cc" -o "$ART/probe" >/dev/null 2>&1
}

if libfuzzer_ok && [[ "${PPC_FUZZ_DRIVER:-}" != 1 ]]; then
  echo "fuzz: libFuzzer (clang, ASan + UBSan)" >&2
  bazel build //ir:program_proto_gen >/dev/null 2>&1 || { echo "fuzz: cannot generate the protobuf code" >&2; exit 1; }
  GEN=$(bazel info bazel-genfiles 2>/dev/null)
  SRCS=$(ls ir/*.cc compiler/*.cc passes/*.cc passes/*/*.cc | grep -v '_test.cc' | grep -v 'test_util.cc')
  for target in plan spec ds_config; do
    case $target in plan) fn=PlanTarget ;; spec) fn=SpecTarget ;; ds_config) fn=DsConfigTarget ;; esac
    bin="$ART/fuzz_$target"
    if [[ ! -x "$bin" || tests/fuzz/targets.cc -nt "$bin" ]]; then
      clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Wno-deprecated-declarations -I. -I"$GEN" -DPPC_FUZZ_TARGET="$fn" \
        tests/fuzz/libfuzzer_main.cc tests/fuzz/targets.cc $SRCS "$GEN/ir/program.pb.cc" \
        -o "$bin" -lprotobuf -labsl_statusor -labsl_status -labsl_strings -labsl_str_format_internal \
        -labsl_cord -labsl_cord_internal -labsl_cordz_info -labsl_cordz_functions -labsl_cordz_handle \
        -labsl_strings_internal -labsl_int128 -labsl_throw_delegate -labsl_raw_logging_internal -labsl_base \
        -labsl_spinlock_wait -labsl_synchronization -labsl_time -labsl_time_zone -labsl_stacktrace \
        -labsl_symbolize -labsl_debugging_internal -labsl_demangle_internal -labsl_hash -labsl_city \
        -labsl_low_level_hash -labsl_raw_hash_set -labsl_bad_optional_access -labsl_bad_variant_access \
        -lpthread 2> "$ART/build_$target.log" || { echo "fuzz: building $target failed (see $ART/build_$target.log)" >&2; exit 1; }
    fi
    work="$ART/corpus_$target"
    mkdir -p "$work"
    cp -n tests/fuzz/corpus/$target/* "$work/" 2>/dev/null
    out=$(cd "$ART" && ASAN_OPTIONS=detect_leaks=0 "$bin" -runs="$N" -timeout=10 -rss_limit_mb=4096 \
          -artifact_prefix="$ART/" "$work" 2>&1)
    code=$?
    line=$(grep -E '^inputs [0-9]+, clean errors' <<<"$out" | tail -1)
    inputs=$(sed -E 's/inputs ([0-9]+).*/\1/' <<<"${line:-inputs 0}")
    clean=$(sed -E 's/.*clean errors ([0-9]+).*/\1/' <<<"${line:-clean errors 0}")
    crashes=0; hangs=0
    if [[ $code -ne 0 ]]; then
      if grep -q 'ALARM: working on the last Unit for' <<<"$out"; then hangs=1; else crashes=1; fi
      echo "$out" | tail -30 >&2
    fi
    echo "target $target: inputs $inputs, clean errors $clean, crashes $crashes, hangs $hangs"
    total_inputs=$((total_inputs + inputs)); total_clean=$((total_clean + clean))
    total_crashes=$((total_crashes + crashes)); total_hangs=$((total_hangs + hangs))
  done
else
  echo "fuzz: deterministic mutation driver (ASan + UBSan)" >&2
  bazel build --config=asan //tests/fuzz:fuzz_driver >/dev/null 2>&1 || { echo "fuzz: build failed" >&2; exit 1; }
  DRIVER="$(bazel info --config=asan bazel-bin 2>/dev/null)/tests/fuzz/fuzz_driver"
  for target in plan spec ds_config; do
    line=$(ASAN_OPTIONS=detect_leaks=0 "$DRIVER" --target "$target" --corpus "tests/fuzz/corpus/$target" \
           --inputs "$N" --seed "${PPC_FUZZ_SEED:-1}" --artifacts "$ART" | tail -1)
    echo "$line"
    read -r inputs clean crashes hangs < <(sed -E 's/.*inputs ([0-9]+), clean errors ([0-9]+), crashes ([0-9]+), hangs ([0-9]+)/\1 \2 \3 \4/' <<<"$line")
    total_inputs=$((total_inputs + inputs)); total_clean=$((total_clean + clean))
    total_crashes=$((total_crashes + crashes)); total_hangs=$((total_hangs + hangs))
  done
fi
echo "inputs $total_inputs, clean errors $total_clean, crashes $total_crashes, hangs $total_hangs"
[[ $total_crashes -eq 0 && $total_hangs -eq 0 ]]
