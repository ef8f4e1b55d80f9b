// One rank's whole job: rendezvous, load the plan, run the steps, report. Shared by
// pprun, the examples and the benchmarks.
#ifndef PPC_RUNTIME_RUNNER_H_
#define PPC_RUNTIME_RUNNER_H_

#include <functional>
#include <memory>
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
  // Checkpoints (runtime/checkpoint.h): saved to save_dir after every `save_every` steps
  // (0: none in between) and after the last step; loaded from load_dir (tag load_tag,
  // default: DIR/latest) before the first step, training then continuing at the step
  // after the checkpoint's. load_module_only: the weights alone.
  std::string save_dir;
  int save_every = 0;
  std::string load_dir, load_tag;
  bool load_module_only = false;
  // After the run, the whole model as one PyTorch state dict with the model's names.
  std::string export_path;
  // Evaluation: `eval_only` evaluates `eval_steps` held-out batches instead of training
  // (and writes the last stage's outputs to predict_path when set); eval_every > 0
  // evaluates `eval_steps` batches after every that many training steps.
  bool eval_only = false;
  int eval_steps = 1;
  int eval_every = 0;
  std::string predict_path;
  // Every rank prints its parameter and optimizer-state bytes, peak RSS and measured
  // activation bytes (StageRuntime::measured_activation_bytes, counted by a MemoryMeter
  // on the rank's thread) at the end.
  bool memory_report = false;
  // runtime.device is where the rank runs; backend the transport RunRank(plan,
  // rendezvous, ...) joins with: "gloo" or "nccl" (runtime/device.h chooses both).
  std::string backend = "gloo";
  // Each rank writes a Chrome trace of its training steps to <trace_dir>/rank<R>.json
  // (StageRuntime::WriteTrace).
  std::string trace_dir;
  RuntimeOptions runtime;
};

struct StepRecord {
  int64_t step;
  double loss;
  double samples_per_s;
};

struct EvalRecord {
  int64_t step;  // training steps done before this evaluation
  EvalResult result;
};

struct RunRecords {
  std::vector<StepRecord> steps;
  std::vector<EvalRecord> evals;
  // With memory_report: StageRuntime::measured_activation_bytes after the run.
  int64_t activation_bytes = 0, step_peak_bytes = 0;
};

// Joins the world `rendezvous` describes over options.backend (Gloo, or NCCL on
// options.runtime.device; the ranks compare plan fingerprints there) and runs this rank.
absl::StatusOr<RunRecords> RunRank(const ir::Plan& plan, const RendezvousOptions& rendezvous,
                                   const RunOptions& options);

// Creates this rank's transport: the rendezvous.
using TransportFactory = std::function<absl::StatusOr<std::unique_ptr<Transport>>()>;

// The same over the transport `connect` creates, e.g. a rank of an in-process loopback
// world (runtime/loopback_transport.h) whose ranks are threads. `rank` names the rank in
// errors before the transport exists.
absl::StatusOr<RunRecords> RunRank(const ir::Plan& plan, int rank, const TransportFactory& connect,
                                   const RunOptions& options);

// Writes `params` as <dir>/layer<index>.<name>.f32.
absl::Status DumpWeights(const std::vector<NamedParameter>& params, const std::string& dir);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_RUNNER_H_
