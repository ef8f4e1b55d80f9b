// The per-rank interpreter. Load validates the plan for this rank once (stamp, world
// size, the structural rules of ir/plan_check.h, its stage's training and eval
// programs, the order of its channels against its peers' programs), builds the stage's
// model (runtime/stage_model.h), allocates slots (runtime/slot_table.h), resolves every
// instruction into a handler bound to the slot, virtual stage and transfer it names, and
// creates communication groups, reporting every problem at once. RunStep and RunEval are
// then short loops over the handlers. What Load cannot know (what a slot holds when an
// instruction runs) the handlers check, so that a plan the verifier would reject fails
// with an error naming the rank and the instruction, never a crash. Transfers go through
// runtime/comm_engine.h, the optimizer is runtime/optimizer.h.
#ifndef PPC_RUNTIME_INTERPRETER_H_
#define PPC_RUNTIME_INTERPRETER_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ir/program.pb.h"
#include "ir/topology.h"
#include "runtime/data.h"
#include "runtime/optimizer.h"
#include "runtime/stage_model.h"
#include "runtime/transport.h"

namespace ppc::runtime {

class CommEngine;
struct Slot;

struct RuntimeOptions {
  // Where the stage's layers, buffers, received tensors and optimizer state live
  // (cpu, or cuda:N); data is made on the CPU and copied there.
  torch::Device device = torch::kCPU;
  // Every blocking wait gives up after this long with DeadlineExceeded.
  absl::Duration timeout = absl::Seconds(120);
  // "synthetic" (or empty): deterministic synthetic data, and held-out synthetic samples
  // for evaluation; otherwise a directory with CIFAR-10's binary files (runtime/cifar10.h):
  // training reads data_batch_*.bin, evaluation test_batch.bin.
  std::string data = "synthetic";
  // Keep the last stage's outputs of evaluated micro-batches (GatherPredictions).
  bool keep_predictions = false;
  // Record a timeline of the training steps for WriteTrace.
  bool trace = false;
  // The run will evaluate: Load checks that it can and opens the held-out data, so that
  // a missing test set is reported before training, not after it.
  bool evaluates = false;
  // Testing (PPRUN_FAULT_INJECT, runtime/runner.cc): raise `fault_signal` before the
  // first instruction of kind `fault_op` of training step `fault_step` (0-based).
  int64_t fault_step = -1;
  int fault_op = 0;
  int fault_signal = 0;
};

struct StepResult {
  // Mean loss over micro-batches and replicas; the same on every rank.
  double loss = 0;
  int64_t samples = 0;  // global batch
};

struct EvalResult {
  // Mean loss over micro-batches and replicas; the same on every rank.
  double loss = 0;
  // CROSS_ENTROPY: the fraction of predictions (samples of a classifier, positions of a
  // sequence model) whose largest output is the label; MSE: -1.
  double accuracy = -1;
  int64_t samples = 0;
};

// The last stage's outputs on evaluated samples, in sample order (eval batch, then
// global micro-batch = replica * micro_batches + micro-batch, then sample).
struct Predictions {
  torch::Tensor outputs;  // [samples, ...]
  torch::Tensor labels;   // [samples, ...]
};

class StageRuntime {
 public:
  static absl::StatusOr<std::unique_ptr<StageRuntime>> Load(const ir::Plan& plan, Transport* transport,
                                                            const RuntimeOptions& options);
  ~StageRuntime();

  // One training step (the plan's programs). Collective over the world.
  absl::StatusOr<StepResult> RunStep(int64_t step);

  // Evaluates held-out batch `index` with the forward-only program (the plan's eval
  // programs, or its programs when those are forward-only): dropout off, no autograd
  // graph. Collective over the world.
  absl::StatusOr<EvalResult> RunEval(int64_t index);
  bool can_eval() const;
  // The kept predictions of every RunEval so far, gathered on the last stage's replica
  // 0 (collective among the last stage's replicas; nullopt on every other rank).
  absl::StatusOr<std::optional<Predictions>> GatherPredictions();

  int rank() const { return rank_; }
  int stage() const { return stage_; }
  int replica() const { return replica_; }
  Transport* transport() const { return transport_; }
  // Global indices of the layers this stage holds (all its virtual stages), ascending.
  std::vector<int> HeldLayers() const;
  // This stage's parameters, by global layer index (a tied weight appears per layer).
  std::vector<NamedParameter> Parameters() const;
  // Each distinct parameter once, with the first layer of this stage that holds it, in
  // the order the optimizer state is flattened in.
  std::vector<NamedParameter> DistinctParameters() const;
  // Overwrites a parameter's values (shape checked); a tied weight changes in every
  // layer that shares it.
  absl::Status SetParameter(int layer, const std::string& name, const torch::Tensor& value);
  // The optimizer (null when this stage does not train).
  const StageOptimizer* optimizer() const { return optimizer_.get(); }
  // The whole optimizer state of this stage: for each of DistinctParameters(), its
  // state tensors by name. Sharded (ZeRO-1): gathers the replicas' slices to replica 0,
  // so this is collective among the stage's replicas, and the others get nothing.
  absl::StatusOr<std::vector<std::map<std::string, torch::Tensor>>> OptimizerStatePerParameter();
  // Completes a checkpoint load, after every SetParameter: sets the optimizer state
  // (flattened as above; empty keeps it fresh) and step count, each replica keeping its
  // own slice when sharded.
  absl::Status SetOptimizerState(const std::map<std::string, torch::Tensor>& full, int64_t steps);
  // Where the training data stands before `step`; and continuing from a saved position.
  DataPosition DataPositionAt(int64_t step) const;
  absl::Status ResumeData(int64_t step, const DataPosition& position);
  // Bytes held in parameters and in optimizer state by this rank.
  int64_t ParameterBytes() const;
  int64_t OptimizerStateBytes() const;
  // With a MemoryMeter on the calling thread, over the training steps run so far, up to
  // each step's first gradient reduction or optimizer instruction, above the CPU tensor
  // bytes live when the step began: the most held between two instructions (the
  // activations: what forwards keep for backwards, what I keeps for W, loaded,
  // received and sent tensors), and the most at any moment (with the kernels'
  // temporaries, e.g. a weight gradient before it is accumulated). 0 without a meter.
  int64_t measured_activation_bytes() const { return measured_activation_bytes_; }
  int64_t measured_peak_bytes() const { return measured_peak_bytes_; }
  // With options.trace: the training steps so far as a Chrome trace (chrome://tracing,
  // Perfetto), process = this rank: every instruction on the host as a slice on thread
  // "program" (its start and end on the host: on a GPU, when its work was enqueued), and
  // every transfer from its post to the end of its wait as an async slice on "in flight".
  absl::Status WriteTrace(const std::string& path) const;
  // Instructions executed so far (for benchmarks).
  int64_t instructions_executed() const { return executed_; }
  // Global gradient norm before clipping, from the last ClipGradNorm (0 if none ran).
  double last_grad_norm() const { return last_grad_norm_.defined() ? last_grad_norm_.item<double>() : 0.0; }
  const torch::Device& device() const { return device_; }

 private:
  StageRuntime();
  // One program of this stage, resolved by Load: its code, its slots, and one handler
  // per instruction bound to what the instruction names (defined in interpreter.cc).
  struct Program;
  using Handler = std::function<absl::Status(int64_t step)>;

  absl::Status Validate(const ir::Plan& plan);
  // ResourceExhausted when this rank's estimated memory exceeds what the machine has.
  absl::Status CheckMemory(const ir::Plan& plan, const std::string& who) const;
  // Checks one program's instructions and resolves each into a handler; what is wrong
  // goes to `problems`, the tie groups it reduces over to `tie_groups`.
  void Compile(Program& program, std::vector<std::string>& problems, std::vector<std::vector<int>>& tie_groups);
  Handler Resolve(Program& program, const ir::Instruction& in);
  absl::StatusOr<std::unique_ptr<DataSource>> OpenData(bool eval) const;
  // Runs `program` once; the loss and accuracy sums it collected stay in the members.
  absl::Status Execute(Program& program, int64_t step);
  std::string Where(int index, const ir::Instruction& in, int64_t step) const;
  // The compute handlers: check what the slot holds, then run the stage's model.
  absl::Status Forward(const Program& program, Slot& slot, int vs, int mb, int64_t step);
  absl::Status Backward(Slot& slot, ir::ComputeKind kind, int vs, int mb, size_t output_grads, bool deferred);

  ir::Plan plan_;
  std::unique_ptr<Program> train_, eval_;
  Program* running_ = nullptr;
  Transport* transport_ = nullptr;
  RuntimeOptions options_;
  int rank_ = 0, stage_ = 0, replica_ = 0, num_stages_ = 1, dp_ = 1, m_ = 1;
  ir::Grid grid_{1, 1, 1};
  // This stage runs the first / last virtual stage (loads inputs / labels, computes the loss).
  bool first_ = false, last_ = false;
  std::unique_ptr<StageModel> model_;
  // Per virtual stage: what the deferred W's (batch-weight-grads) handed over, for the
  // next W of that virtual stage to compute as one batch (Load checks that one follows).
  std::map<int, std::vector<WeightWork>> deferred_w_;
  std::unique_ptr<CommEngine> comm_;
  std::unique_ptr<StageOptimizer> optimizer_;
  std::unique_ptr<DataSource> data_, eval_data_;
  std::vector<int> pipeline_group_, dp_group_, world_group_;
  torch::Device device_ = torch::kCPU;
  // Sums over the running program's micro-batches (float64 [1] on the device).
  torch::Tensor loss_sum_, correct_;
  int64_t predictions_ = 0;
  std::vector<torch::Tensor> predicted_, predicted_labels_;
  torch::Tensor last_grad_norm_;
  int64_t executed_ = 0;
  int64_t measured_activation_bytes_ = 0, measured_peak_bytes_ = 0;
  // The trace: Chrome trace events (JSON objects), microseconds since trace_origin_.
  std::vector<std::string> trace_;
  std::chrono::steady_clock::time_point trace_origin_ = std::chrono::steady_clock::now();
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_INTERPRETER_H_
