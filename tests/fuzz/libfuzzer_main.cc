// libFuzzer entry for one target, chosen at compile time (PPC_FUZZ_TARGET = PlanTarget,
// SpecTarget or DsConfigTarget); built by tools/fuzz.sh when clang has libFuzzer.
// At exit it prints how many inputs were refused with a clean error.
#include <cstdio>

#include "tests/fuzz/targets.h"

namespace {
long g_inputs = 0, g_clean_errors = 0;
struct Report {
  ~Report() { std::printf("inputs %ld, clean errors %ld\n", g_inputs, g_clean_errors); }
} g_report;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ++g_inputs;
  g_clean_errors += ppc::fuzz::PPC_FUZZ_TARGET(data, size);
  return 0;
}
