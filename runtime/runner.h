// One rank's whole job: rendezvous, load the plan, run the steps, report. Shared by
// pprun, the examples and the benchmarks.
#ifndef PPC_RUNTIME_RUNNER_H_
#define PPC_RUNTIME_RUNNER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"
#include "runtime/gloo_transport.h"
#include "runtime/interpreter.h"

namespace ppc::runtime {

struct RunOptions {
  int steps = 0;  // 0: the plan's config.steps
  // Rank 0 appends "step loss samples_per_s" lines here when set.
  std::string metrics_out;
  // Replica 0 of every stage writes each parameter as raw float32 to
  // <dir>/layer<index>.<name>.f32 after the last step.
  std::string dump_weights;
  // Rank 0 prints "step: N / S loss: L samples/s: X" every `print_every` steps (0: the
  // plan's steps_per_print, else every step) and the last step, plus a progress bar
  // when stderr is a terminal.
  bool print = true;
  int print_every = 0;
  RuntimeOptions runtime;
};

struct StepRecord {
  int64_t step;
  double loss;
  double samples_per_s;
};

absl::StatusOr<std::vector<StepRecord>> RunRank(const ir::Plan& plan, const RendezvousOptions& rendezvous,
                                                const RunOptions& options);

// Writes `params` as <dir>/layer<index>.<name>.f32.
absl::Status DumpWeights(const std::vector<NamedParameter>& params, const std::string& dir);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_RUNNER_H_
