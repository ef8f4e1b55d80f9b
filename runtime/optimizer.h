// The optimizer of one stage replica: LibTorch's SGD, Adam or AdamW over the stage's
// distinct parameters, or, with ZeRO stage 1, over this replica's 1/D slice of those
// parameters flattened in order (the optimizer state then exists for that slice only).
// The parameters and their gradients are views of two flat buffers (the runtime's), so
// the slice and its gradient are views too: a sharded step updates the parameters in
// place, and the runtime's gather (GatherParams) fills in the other replicas' slices.
//
// State is exchanged in the same flattened order for checkpoints: per state name
// ("exp_avg", "exp_avg_sq" for Adam/AdamW; "momentum_buffer" for SGD with momentum),
// one float32 vector of total_numel() values, so a checkpoint written with any number
// of shards loads into any other.
#ifndef PPC_RUNTIME_OPTIMIZER_H_
#define PPC_RUNTIME_OPTIMIZER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::runtime {

class StageOptimizer {
 public:
  // `params` are views of `flat_params` and their .grads of `flat_grads`, in order; the
  // buffers hold num_shards equal slices (padded with zeros at the end). This replica is
  // `shard` of `num_shards` (1: unsharded). Unknown types and bad hyper-parameters are
  // InvalidArgument.
  static absl::StatusOr<std::unique_ptr<StageOptimizer>> Create(const ir::OptimizerConfig& config,
                                                                std::vector<torch::Tensor> params,
                                                                torch::Tensor flat_params, torch::Tensor flat_grads,
                                                                int shard, int num_shards);

  // One step from the gradients (sharded: this replica's slice of them, updating its
  // slice of the parameters), then zeroes every gradient.
  void Step();

  bool sharded() const { return num_shards_ > 1; }
  // Values per slice of the flat buffers.
  int64_t shard_size() const { return shard_size_; }

  int64_t total_numel() const { return numel_; }
  const std::string& type() const { return type_; }
  // Optimizer steps taken (Adam's bias-correction count).
  int64_t steps() const { return steps_; }
  // Names of the per-parameter state this optimizer keeps.
  std::vector<std::string> StateNames() const;
  // One state vector over this replica's values: all total_numel() when unsharded,
  // the padded shard_size() slice when sharded (the caller gathers the slices).
  // Zeros for parameters that have no state yet.
  torch::Tensor LocalState(const std::string& name) const;
  // Unsharded: the state of parameter `i` (in construction order) by name, the
  // optimizer's own tensors (zeros where it has none yet).
  std::map<std::string, torch::Tensor> ParameterState(size_t i) const;
  // Sets the state from full vectors (total_numel() values per name; a missing name
  // leaves that state fresh) and the step count.
  absl::Status SetState(const std::map<std::string, torch::Tensor>& full, int64_t steps);
  // Bytes of optimizer state held by this replica (float32 values of every state tensor).
  int64_t StateBytes() const;

 private:
  StageOptimizer() = default;
  std::vector<torch::Tensor> TargetsOf() const;  // tensors the torch optimizer updates
  // The torch optimizer's state `name` of one of its targets; undefined if none yet.
  torch::Tensor StateOf(const torch::Tensor& target, const std::string& name) const;
  std::string type_;
  double momentum_ = 0;
  std::vector<torch::Tensor> params_;
  torch::Tensor flat_grads_;
  int64_t numel_ = 0;
  int num_shards_ = 1;
  int64_t shard_size_ = 0, begin_ = 0, end_ = 0;  // this replica's slice [begin_, end_)
  torch::Tensor shard_;                           // sharded: this replica's slice (a leaf view)
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t steps_ = 0;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_OPTIMIZER_H_
