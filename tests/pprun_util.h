// Helpers for end-to-end tests that run real pprun processes: compile a plan, run a
// command, read back the metrics and raw weights a run wrote.
#ifndef PPC_TESTS_PPRUN_UTIL_H_
#define PPC_TESTS_PPRUN_UTIL_H_

#include <map>
#include <string>
#include <vector>

#include "ir/program.pb.h"

namespace ppc::e2e {

inline constexpr char kPprun[] = "tools/pprun/pprun";

struct RunResult {
  int exit_code = -1;   // -1: killed by a signal
  std::string output;   // stdout + stderr
  std::vector<double> losses;                         // per step, from --metrics-out
  std::vector<std::vector<double>> evals;             // "eval STEP LOSS ACC SAMPLES" lines
  std::map<std::string, std::vector<float>> weights;  // --dump-weights file name -> values
};

// A path in the test's temporary directory.
std::string Tmp(const std::string& name);

// Runs `args` (quoted) with `env` and one BLAS/OpenMP thread; captures the output.
RunResult Exec(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {});

// Compiles `plan` with the default pipeline, stamps it and saves it as Tmp(name).pb.
std::string CompileTo(ir::Plan plan, const std::string& name);

// `pprun PLAN --nproc N --quiet --timeout-s 60 --metrics-out ... --dump-weights ...
// <extra>`, with the losses, evaluations and final weights read back.
RunResult Pprun(const std::string& plan_path, int nproc, const std::string& name,
                const std::vector<std::string>& extra = {}, const std::map<std::string, std::string>& env = {});

}  // namespace ppc::e2e

#endif  // PPC_TESTS_PPRUN_UTIL_H_
