// The per-rank interpreter. Load validates the plan for this rank once (stamp, world
// size, the structural rules of ir/plan_check.h, its stage's training and eval
// programs), builds the layers of the stage's virtual stages with deterministic
// weights, allocates slots and creates communication groups, reporting every problem at
// once. RunStep and RunEval are then flat loops over a program that trust what Load
// checked. Transfers between two ranks are matched by order: each direction of each
// pair numbers its messages from 0 in every run of a program, and the number is the tag.
#ifndef PPC_RUNTIME_INTERPRETER_H_
#define PPC_RUNTIME_INTERPRETER_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ir/program.pb.h"
#include "ir/topology.h"
#include "runtime/data.h"
#include "runtime/layers.h"
#include "runtime/optimizer.h"
#include "runtime/transport.h"

namespace ppc::runtime {

struct RuntimeOptions {
  // Every blocking wait gives up after this long with DeadlineExceeded.
  absl::Duration timeout = absl::Seconds(120);
  // "synthetic" (or empty): deterministic synthetic data, and held-out synthetic samples
  // for evaluation; otherwise a directory with CIFAR-10's binary files (runtime/cifar10.h):
  // training reads data_batch_*.bin, evaluation test_batch.bin.
  std::string data = "synthetic";
  // Keep the last stage's outputs of evaluated micro-batches (GatherPredictions).
  bool keep_predictions = false;
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

struct NamedParameter {
  int layer;  // global layer index
  std::string name;
  torch::Tensor value;
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
  // Instructions executed so far (for benchmarks).
  int64_t instructions_executed() const { return executed_; }
  // Global gradient norm before clipping, from the last ClipGradNorm (0 if none ran).
  double last_grad_norm() const { return last_grad_norm_; }

 private:
  StageRuntime() = default;
  struct Slot;
  // One compiled program of this stage with its buffers.
  struct Program {
    ir::StageProgram code;
    std::vector<std::unique_ptr<Slot>> slots;
    bool training = false;  // has backwards: forwards keep the autograd graph
    bool eval = false;      // evaluation: dropout off, accuracy and predictions kept
  };
  // This stage's virtual stages, in chunk order: layers_[first_layer, end_layer) are
  // global layers [begin, end); params: their distinct parameters.
  struct Chunk {
    int virtual_stage, begin, end;
    int first_layer, end_layer;
    std::vector<torch::Tensor> params;
  };
  // A posted transfer, by (send, direction, boundary, micro-batch).
  using CommKey = std::tuple<bool, int, int, int>;
  struct PendingOp {
    std::vector<Transport::Handle> handles;  // one per tensor of the boundary
    std::vector<torch::Tensor> tensors;      // kept alive until the Wait
    int slot = 0;
    int peer_stage = 0;
  };
  absl::Status Execute(const ir::Instruction& in, int64_t step);
  absl::Status Forward(const ir::Compute& c, Slot& slot, int64_t step);
  absl::Status Backward(const ir::Compute& c, Slot& slot);
  absl::Status Post(bool send, ir::Direction direction, int boundary, int micro_batch, int slot);
  const Chunk& ChunkOf(int virtual_stage) const;
  absl::Status Validate(const ir::Plan& plan);
  // ResourceExhausted when this rank's estimated memory exceeds what the machine has.
  absl::Status CheckMemory(const ir::Plan& plan, const std::string& who) const;
  // Checks one program's instructions and allocates its buffers.
  void ValidateProgram(Program& program, std::vector<std::string>& problems,
                       std::vector<std::vector<int>>& tie_groups);
  absl::StatusOr<std::unique_ptr<DataSource>> OpenData(bool eval) const;
  // Runs `program` once; the loss and accuracy sums it collected stay in the members.
  absl::Status Run(Program& program, int64_t step);
  std::string Where(int index, const ir::Instruction& in, int64_t step) const;

  ir::Plan plan_;
  Program train_, eval_;
  Program* running_ = nullptr;
  Transport* transport_ = nullptr;
  RuntimeOptions options_;
  int rank_ = 0, stage_ = 0, replica_ = 0, num_stages_ = 1, dp_ = 1, m_ = 1;
  ir::Grid grid_{1, 1, 1};
  // This stage runs the first / last virtual stage (loads inputs / labels, computes the loss).
  bool first_ = false, last_ = false;
  std::vector<Chunk> chunks_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<torch::Tensor> unique_params_;
  std::map<std::string, torch::Tensor> tied_;  // tie key -> shared weight on this stage
  // Tied weights whose first holder is an earlier stage: left out of this stage's
  // share of the global gradient norm, so each tied weight is counted once.
  std::set<const void*> not_owned_;
  std::vector<int> pipeline_group_;  // ranks of this replica's stages
  // Layers per activation checkpoint (0: keep all activations).
  int checkpoint_interval_ = 0;
  std::vector<torch::Tensor> RunLayers(int begin, int end, std::vector<torch::Tensor> x, const ForwardContext& ctx);
  torch::Tensor Loss(const torch::Tensor& out, const torch::Tensor& labels);
  std::unique_ptr<StageOptimizer> optimizer_;
  // The stage's distinct parameters and their gradients, flattened in unique_params_
  // order (padded to a multiple of the replicas when sharded): every parameter and every
  // .grad is a view of these, so reductions, clipping, sharded steps and gathers work on
  // one contiguous tensor each.
  torch::Tensor flat_params_, flat_grads_;
  // Moves unique_params_ into the flat buffers (`size` values) and rebinds every layer.
  void Flatten(int64_t size);
  std::unique_ptr<DataSource> data_, eval_data_;
  std::map<CommKey, PendingOp> pending_;
  // Messages posted so far in this run of a program, per peer rank (the tags).
  std::map<int, uint32_t> send_seq_, recv_seq_;
  std::vector<int> dp_group_, world_group_;
  double loss_sum_ = 0;
  int64_t correct_ = 0, predictions_ = 0;
  std::vector<torch::Tensor> predicted_, predicted_labels_;
  double last_grad_norm_ = 0;
  int64_t executed_ = 0;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_INTERPRETER_H_
