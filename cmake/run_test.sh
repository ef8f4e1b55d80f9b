#!/bin/sh
# usage: run_test.sh TMPDIR COMMAND [ARGS...]
# Runs one ctest entry as `bazel test` would: with a fresh private TEST_TMPDIR (tests put
# their scratch files there) and TMPDIR, from the directory ctest gives it.
set -e
t="$1"
shift
rm -rf "$t"
mkdir -p "$t"
TEST_TMPDIR="$t" TMPDIR="$t"
export TEST_TMPDIR TMPDIR
exec "$@"
