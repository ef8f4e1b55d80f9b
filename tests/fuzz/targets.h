// Fuzz targets over what ppc reads from users: plans (text and binary) through load,
// the structural rules and the verifier (and, when verified, the analyses ppc inspect
// runs); model specs through the whole default compile pipeline; DeepSpeed JSON
// configs. Each returns 0 when the input was accepted and 1 when it was refused with an
// error; anything else it does (a signal, an uncaught exception, a hang) is a bug.
// Property checks abort (a crash, counted as one): a compiled plan must pass the
// runtime's structural checks, a verified plan must print and parse back to itself.
#ifndef PPC_TESTS_FUZZ_TARGETS_H_
#define PPC_TESTS_FUZZ_TARGETS_H_

#include <cstddef>
#include <cstdint>

namespace ppc::fuzz {

int PlanTarget(const uint8_t* data, size_t size);
int SpecTarget(const uint8_t* data, size_t size);
int DsConfigTarget(const uint8_t* data, size_t size);

}  // namespace ppc::fuzz

#endif  // PPC_TESTS_FUZZ_TARGETS_H_
